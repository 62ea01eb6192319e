"""`distill evaluate`'s output files: grid.png, per_image.csv and report.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from editing.images import make_grid, save_image
from training.evaluate.photos import PhotosReport, photos_markdown
from training.evaluate.strength import strength_markdown


def write_grid(
    out: Path,
    seeds: list[int],
    originals: list[np.ndarray],
    edits: list[np.ndarray],
    students: dict[str, list[np.ndarray]],
    legacy: list[np.ndarray],
) -> dict[str, Any]:
    """grid.png: one row per seed, original | teacher edit | student (each variant) | legacy (where projected)."""
    columns = ["original", "teacher edit", *[f"student {v}" for v in students]]
    if legacy:
        columns.append("legacy")
    blank = np.full_like(originals[0], 255)
    rows = []
    for i in range(len(seeds)):
        row = [originals[i], edits[i], *[images[i] for images in students.values()]]
        if legacy:
            row.append(legacy[i] if i < len(legacy) else blank)
        rows.append(row)
    save_image(out / "grid.png", make_grid(rows))
    return {"file": "grid.png", "columns": columns, "seeds": seeds}


def per_image_csv(rows: list[dict[str, Any]]) -> str:
    """One line per seed: every per-image figure (PSNR, SSIM, scores of each path)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)]
    for r in rows:
        lines.append(
            ",".join(
                "" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]))
                for k in keys
            )
        )
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _label(path: str, report: dict[str, Any]) -> str:
    legacy = report.get("legacy") or {}
    labels = {
        "teacher": "teacher (reference)",
        "legacy": f"legacy projection ({legacy.get('steps')} steps)",
        "teacher_on_legacy_seeds": f"teacher (reference), first {legacy.get('n')} seeds",
        "student_fp32_on_legacy_seeds": f"student fp32, first {legacy.get('n')} seeds",
        "identity": "identity (input unchanged: the do-nothing baseline)",
        "identity_on_legacy_seeds": f"identity, first {legacy.get('n')} seeds",
    }
    return labels.get(path, path.replace("student_", "student "))


def headline(report: dict[str, Any]) -> list[str]:
    """A few sentences with the figures a reader looks for first (all from the tables below)."""
    fid, lat, ed = report["fidelity"], report["latency"], report["edit"]
    f32 = fid["student_fp32"]
    ident = fid["identity"]
    out = [
        f"- Student (fp32) vs the teacher's edit on {f32['psnr']['n']} held-out seeds: PSNR {_f(f32['psnr']['mean'])} dB, "
        f"SSIM {_f(f32['ssim']['mean'], 4)} (do-nothing baseline, the input unchanged: {_f(ident['psnr']['mean'])} dB, "
        f"SSIM {_f(ident['ssim']['mean'], 4)})."
    ]
    if "legacy" in fid:
        lg, same = fid["legacy"], fid["student_fp32_on_legacy_seeds"]
        verdict = "closer to" if same["psnr"]["mean"] >= lg["psnr"]["mean"] else "further from"
        out.append(
            f"- On the first {lg['psnr']['n']} seeds the student is {verdict} the teacher's edit than the legacy "
            f"projection: PSNR {_f(same['psnr']['mean'])} vs {_f(lg['psnr']['mean'])} dB, SSIM "
            f"{_f(same['ssim']['mean'], 4)} vs {_f(lg['ssim']['mean'], 4)}."
        )
    if ed["available"]:
        paths = ed["paths"]
        parts = [
            f"{_label(k, report)} {_f(paths[k]['edit_success'] * 100, 1)}%"
            for k in ("teacher", "student_fp32", "student_int8", "legacy")
            if k in paths
        ]
        out.append(f"- Edit success ({ed['attribute']}): {', '.join(parts)}.")
    c = report.get("clean_renders")
    if c:
        st, ident = c["paths"]["student_fp32"], c["paths"]["identity"]
        judge = c["age_judge"].get("student_fp32")
        out.append(
            f"- On {c['n']} clean renders of ageable adults (pictures no teacher drew) against the renderer's true edit: student "
            f"fp32 {_f(st['psnr']['mean'])} dB vs the identity's {_f(ident['psnr']['mean'])} dB (gain "
            f"{_f(st['gain_over_identity_db']['mean'])} dB, better than the identity on "
            f"{_f(st['beats_identity'] * 100, 1)}% of them)"
            + (
                f"; the age judge sees the age rise on {_f(judge['edit_success'] * 100, 1)}%."
                if judge
                else "."
            )
        )
    art = report.get("artifacts")
    if art:
        f, t = art["paths"]["student_fp32"], art["paths"]["teacher"]
        r = art["ratio_to_reference"]["student_fp32"]
        out.append(
            f"- Artifacts of the student (fp32) against the teacher's edit: HF energy in the edit region "
            f"{_f(f['hf_energy_region'], 1)} (the teacher's own {_f(t['hf_energy_region'], 1)}: "
            f"{_f(r['hf_energy_region'])}x), fixed-pixel blemish peak {_f(f['blemish_peak'], 1)} (the teacher's own "
            f"{_f(t['blemish_peak'], 1)}: {_f(r['blemish_peak'])}x)."
        )
    if c and c.get("artifacts"):
        f, t = c["artifacts"]["paths"]["student_fp32"], c["artifacts"]["paths"]["true_edit"]
        out.append(
            f"- In the hair of the clean renders: student fp32 HF energy {_f(f['hf_energy_region'], 1)}, blemish peak "
            f"{_f(f['blemish_peak'], 1)} (the true edit's {_f(t['hf_energy_region'], 1)} and {_f(t['blemish_peak'], 1)}"
            + (
                f"; the teacher's own samples' {_f(c['artifacts']['teacher_samples']['hf_energy_region'], 1)} and "
                f"{_f(c['artifacts']['teacher_samples']['blemish_peak'], 1)}"
                if c["artifacts"].get("teacher_samples")
                else ""
            )
            + ")."
        )
    parts = [f"{_label(k, report)} {_f(v['mean_ms'])} ms" for k, v in lat.items()]
    out.append(f"- Mean latency per image on this machine: {', '.join(parts)}.")
    if "legacy_vs_student_fp32" in report["speedup"]:
        out.append(
            f"- Speedup of the student (fp32) over the legacy path: {_f(report['speedup']['legacy_vs_student_fp32']['mean'], 1)}x"
            + (
                f"; INT8: {_f(report['speedup']['legacy_vs_student_int8']['mean'], 1)}x"
                if "legacy_vs_student_int8" in report["speedup"]
                else ""
            )
            + "."
        )
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the tables of report.json (same figures, rounded), the machine, the command, the grid."""
    e, t, d, s = report["entry"], report["teacher"], report["direction"], report["seeds"]
    lines = [
        f"# Evaluation of `{e['name']}`",
        "",
        f"{e.get('description') or ''}",
        "",
        f"Generated by `distill evaluate` on {report['created']}:",
        "",
        "```",
        report["command"],
        "```",
        "",
        "## Setup",
        "",
        f"- Machine: {report['machine']['cpu']}; ONNX Runtime {report['machine']['onnxruntime']} "
        f"({report['machine']['provider']}, intra-op threads: {report['machine']['ort_threads']}); "
        f"torch {report['machine']['torch']} on {report['machine']['torch_device']} ({report['machine']['torch_threads']} "
        "CPU threads) for the teacher and the legacy path.",
        f"- Teacher: `{t['file']}` ({t['resolution']} px, truncation {t['truncation']}, sha256 {t['sha256'][:12]}).",
        f"- Edit: `{d['file']}` ({d['attribute'] or 'unnamed'}), alpha {d['alpha']}, W+ layers {d['layers'][0]}:{d['layers'][1]}"
        f"{', normalized' if d['normalize'] else ''}.",
        f"- Student: input {e['input_size'][0]}x{e['input_size'][1]}, variants {', '.join(e['variants_evaluated'])}"
        + (f" (not in the entry: {', '.join(e['variants_missing'])})" if e["variants_missing"] else "")
        + (
            f"; the teacher's {t['resolution']} px images are resized (bicubic) to its input size, and its outputs "
            "compared with the resized edit"
            if e["input_size"] != [t["resolution"], t["resolution"]]
            else ""
        )
        + ".",
        f"- Seeds: {s['count']} held-out teacher seeds {s['start']}..{s['stop'] - 1} (`{s['seed_to_z']}`). "
        + (
            f"Training pairs used seeds {s['training_seeds']['min']}..{s['training_seeds']['max']} "
            f"({s['training_seeds']['count']} seeds, from {s['training_seeds_source']}): no overlap."
            if s["held_out_verified"]
            else f"Held-out status not verified: training seeds {s['training_seeds_source']}."
        ),
    ]
    if report["legacy"]:
        lg = report["legacy"]
        lines.append(
            f"- Legacy path: the first {lg['n']} seeds, {lg['steps']} projection steps, distance: {lg['distance']}"
            + (
                f"; {lg['reused']} projections (and their times) reused from an earlier run's cache in legacy/ "
                "(delete it to re-time)."
                if lg["reused"]
                else "."
            )
        )
    lines += ["", "## Headline", "", *headline(report)]
    lines += [
        "",
        "## Fidelity to the teacher's edit",
        "",
        "PSNR (dB) and SSIM of each output against the teacher's edited image.",
        "",
        "| path | n | PSNR mean | p10 | p50 | p90 | SSIM mean | p10 | p50 | p90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, fig in report["fidelity"].items():
        p, q = fig["psnr"], fig["ssim"]
        lines.append(
            f"| {_label(path, report)} | {p['n']} | "
            + " | ".join(_f(p[k]) for k in ("mean", "p10", "p50", "p90"))
            + " | "
            + " | ".join(_f(q[k], 4) for k in ("mean", "p10", "p50", "p90"))
            + " |"
        )

    ed = report["edit"]
    lines += ["", "## Edit success and preservation", ""]
    if not ed["available"]:
        lines.append(f"Not measured: {ed['note']}.")
    else:
        sc = ed["scorer"]
        lines += [
            f"Scorer `{sc['file']}` (input {sc['input_size'][0]}x{sc['input_size'][1]}, outputs {sc['outputs']}). "
            f"Edit success: share of images where `{ed['attribute']}` {'rises' if ed['direction'] == 'rise' else 'falls'} "
            f"by at least {ed['success_fraction']:g} of the teacher's own change on that image (the teacher's mean change: "
            f"{ed['teacher_mean_change']:+.4f}). Preservation: mean absolute change of "
            f"{', '.join(f'`{o}`' for o in ed['others']) or 'no other attribute (pass --other NAME=INDEX)'} "
            "between the original and the output (lower is better).",
            "",
            "| path | n | edit success | mean change | preservation |",
            "|---|---:|---:|---:|---:|",
        ]
        for path, fig in ed["paths"].items():
            lines.append(
                f"| {_label(path, report)} | {fig['n']} | {_f(fig['edit_success'] * 100, 1)}% | "
                f"{_f(fig['mean_change'], 4)} | {_f(fig['preservation'], 4)} |"
            )

    lines += [
        "",
        "## Latency per image",
        "",
        "Measured in this run on this machine, batch 1: ONNX Runtime `session.run` for the student, "
        "projection + edit + synthesis for the legacy path.",
        "",
        "| path | n | mean (ms) | p50 (ms) | p95 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for path, fig in report["latency"].items():
        lines.append(
            f"| {_label(path, report)} | {fig['n']} | {_f(fig['mean_ms'])} | {_f(fig['p50_ms'])} | {_f(fig['p95_ms'])} |"
        )
    if report["speedup"]:
        lines += ["", "| speedup | mean latency ratio | p50 latency ratio |", "|---|---:|---:|"]
        for name, value in report["speedup"].items():
            slow, fast = name.split("_vs_")
            lines.append(
                f"| {_label(fast, report)} over {_label(slow, report)} | {_f(value['mean'], 1)}x | {_f(value['p50'], 1)}x |"
            )

    if report.get("engines"):
        from engines.measure import format_table

        lines += [
            "",
            "## Latency per engine",
            "",
            f"Each variant in each inference engine on this machine, batch 1 at {report['entry']['input_size'][0]}x"
            f"{report['entry']['input_size'][1]}: median ms, and PSNR against ONNX Runtime fp32 on the timing inputs "
            f"(the service serves the fastest within 35 dB). Measured on {report['engines'][0]['measured_on']}.",
            "",
            *format_table(report["engines"]),
        ]
    lines += [
        "",
        "## Artifacts against the teacher's edit",
        "",
        f"On the first {report['artifacts']['n']} held-out seeds; the region is {report['artifacts']['region']}.",
        "",
        *artifact_markdown(report["artifacts"], report),
    ]
    if report.get("clean_renders"):
        lines += clean_markdown(report["clean_renders"], report)
    if report.get("strengths"):
        lines += strength_markdown(report["strengths"])
    if report.get("photos"):
        lines += photos_markdown(PhotosReport.model_validate(report["photos"]))
    g = report["grid"]
    lines += [
        "",
        "## Images",
        "",
        f"Seeds {', '.join(map(str, g['seeds']))}, one per row; columns: {' | '.join(g['columns'])}.",
        "",
        f"![{' | '.join(g['columns'])}]({g['file']})",
        "",
        "Per-image figures: [per_image.csv](per_image.csv); every figure: [report.json](report.json).",
        "",
    ]
    return "\n".join(lines)


def artifact_markdown(a: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """An artifact block of report.json as a table (the reference's own figures first), what each figure means, and
    its pictures."""
    labels = {"teacher": "teacher edit (reference)", "true_edit": "true edit (renderer, reference)"}
    region = "hair" if a["reference"] == "true_edit" else "edit region"
    lines = [
        f"| path | HF energy | HF energy, {region} | blemish peak (y, x) | error peak (y, x) | HF, {region} / reference "
        "| blemish / reference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = dict(a["paths"])
    if a.get("teacher_samples"):
        rows = {a["reference"]: rows.pop(a["reference"]), "teacher_samples": a["teacher_samples"], **rows}
        labels["teacher_samples"] = (
            f"teacher's own edit (its samples, {a['teacher_samples']['n']} held-out seeds)"
        )
    for name, f in rows.items():
        r = a["ratio_to_reference"].get(name, {})
        hf, blemish = (
            "-" if r.get(k) is None else f"{r[k]:.2f}x" for k in ("hf_energy_region", "blemish_peak")
        )
        lines.append(
            f"| {labels.get(name) or _label(name, report)} | {_f(f['hf_energy'], 1)} | {_f(f['hf_energy_region'], 1)} | "
            f"{_f(f['blemish_peak'], 1)} ({f['blemish_at'][0]}, {f['blemish_at'][1]}) | {_f(f['error_peak'], 1)} "
            f"({f['error_at'][0]}, {f['error_at'][1]}) | {hf} | {blemish} |"
        )
    m, z = a["maps"], a["zoom"]
    lines += [
        "",
        "- HF energy: the mean squared 4-neighbour Laplacian in 8-bit levels, over the whole picture and over the "
        f"{region}: flat areas score ~0, edges and speckle a lot; the reference's own figure is the level to match.",
        f"- Blemish peak: per pixel the median over the faces of the output's |Laplacian|, at its worst pixel where the "
        f"{region} holds on at least half the faces: a blemish drawn at the same place on every face survives the median, "
        "content that moves does not.",
        "- Error peak: per pixel the median over the faces of |output - reference|, at its worst pixel: a fixed-place "
        "error of the path (the reference's own is 0).",
        "",
        f"Fixed-pattern maps ({', '.join(m['columns'])}; one row per {', '.join(m['rows'])}), heat scale "
        f"{m['scale_levels'][0]:g} (black) .. {m['scale_levels'][1]:g} levels (white):",
        "",
        f"![fixed-pattern maps]({m['file']})",
        "",
        f"The first {z['faces']} faces cropped to y {z['crop']['y']}..{z['crop']['y'] + z['crop']['h'] - 1}, x "
        f"{z['crop']['x']}..{z['crop']['x'] + z['crop']['w'] - 1} (where the {region} holds most often), {z['factor']}x "
        f"nearest neighbour; columns: {' | '.join(z['columns'])}:",
        "",
        f"![{' | '.join(z['columns'])}]({z['file']})",
        "",
    ]
    return lines


def clean_markdown(c: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """The clean-render section of report.md."""
    lines = [
        "",
        "## Clean renders against the renderer's true edit",
        "",
        f"{c['n']} held-out clean renders of ageable adults (age {_f(c['ages']['min'], 2)}..{_f(c['ages']['max'], 3)}, "
        f"seeds {c['seeds']['start']}..{c['seeds']['stop'] - 1}, "
        f"{'aligned' if c['aligned'] else 'unaligned'} domain): the toy domain's photographs, which no teacher drew. "
        f"The truth is the renderer's picture of the same face with age raised by {c['age_change']:+.3f} "
        f"({c['age_change_source']}). Gain: mean of the per-image PSNR difference to the identity.",
        "",
        "| path | n | PSNR vs true edit | gain over identity (dB) | beats identity | SSIM |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path, fig in c["paths"].items():
        gain = fig.get("gain_over_identity_db")
        label = (
            f"{_label(path.replace('_on_legacy_seeds', ''), report).split(' (')[0]}, first {fig['psnr']['n']} clean renders"
            if path.endswith("_on_legacy_seeds")
            else _label(path, report)
        )
        lines.append(
            f"| {label} | {fig['psnr']['n']} | {_f(fig['psnr']['mean'])} | "
            f"{_f(gain['mean']) if gain else '-'} | {_f(fig['beats_identity'] * 100, 1) + '%' if gain else '-'} | "
            f"{_f(fig['ssim']['mean'], 4)} |"
        )
    if c["age_judge"]:
        lines += [
            "",
            f"Age judge (the scorer): share of images whose age rises by at least {c['success_fraction']:g} of the "
            "rise it reads between the input and the true edit; preservation: mean absolute change of the other "
            "attributes.",
            "",
            "| path | n | age rise seen | mean rise | preservation |",
            "|---|---:|---:|---:|---:|",
        ]
        for path, fig in c["age_judge"].items():
            lines.append(
                f"| {_label(path, report)} | {fig['n']} | {_f(fig['edit_success'] * 100, 1)}% | "
                f"{_f(fig['mean_change'], 4)} | {_f(fig['preservation'], 4)} |"
            )
    g = c["grid"]
    lines += [
        "",
        f"![{' | '.join(g['columns'])}]({g['file']})",
        "",
        "Per-image figures: [clean_per_image.csv](clean_per_image.csv).",
        "",
        "### Artifacts in the hair against the true edit",
        "",
        f"On the first {c['artifacts']['n']} clean renders; the region is the {c['artifacts']['region']}"
        + (
            ", and for the teacher's own edit the hair of the faces its held-out samples draw (`params_from_z`)"
            if c["artifacts"].get("teacher_samples")
            else ""
        )
        + ".",
        "",
        *artifact_markdown(c["artifacts"], report),
    ]
    if c.get("capped"):
        t = c["capped"]
        lines += [
            "### The top of the age scale, measured apart",
            "",
            f"The renderer's age scale ends at 1, so a face older than {_f(t['ages']['min'], 3)} cannot be drawn aged "
            f'by {c["age_change"]:+.3f}: its "true edit" is capped, near the top the input itself. The headline set '
            f"above holds the ageable adults (age {_f(c['ages']['min'], 2)}..{_f(c['ages']['max'], 3)}); these "
            f"{t['n']} older ones (seeds {t['seeds']['start']}..{t['seeds']['stop'] - 1}, as many as the age scale "
            "gives them) are scored against the capped truth. Where that truth is the input itself any real edit "
            "loses many dB: the student ages these faces further, as the teacher does.",
            "",
            "| path | n | PSNR vs capped truth | gain over identity (dB) | beats identity |",
            "|---|---:|---:|---:|---:|",
        ]
        for path, fig in t["paths"].items():
            gain = fig.get("gain_over_identity_db")
            lines.append(
                f"| {_label(path, report)} | {fig['psnr']['n']} | {_f(fig['psnr']['mean'])} | "
                f"{_f(gain['mean']) if gain else '-'} | {_f(fig['beats_identity'] * 100, 1) + '%' if gain else '-'} |"
            )
        lines.append("")
    return lines
