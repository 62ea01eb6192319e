"""`distill evaluate` on a student of several edits: each edit alone over its range, and pairs of edits together.

A K-edit student (strength [N, K]) is measured per *condition*, a strength vector: all zeros, each edit alone at
its range's ends and half-ends (``lo, lo/2, hi/2, hi``), and every pair of edits at their ``hi`` together. For each
condition the attribute model reads every attribute it is given (``--attribute`` and ``--other``, which must name
each edit) on the input and on each path's output; the figures are the mean change of each attribute, its own and
every other one (the *leak*), and PSNR against the reference:

- on held-out teacher seeds the reference is the teacher's edit (``w + sum_k s_k alpha_k d_k``, as `distill pairs`
  makes it), beside each student variant and the identity (the input unchanged);
- on the toy domain's clean renders (adults, the student's domain; ``--clean-renders N``) it is the renderer's true
  edit: the same face drawn with each active attribute's parameter moved by its strength times the teacher's mean
  change of that attribute at strength 1 (read by the attribute model on the seeds above), clipped to [0, 1].

The targets (:data:`TARGETS`) are read on the clean renders (on the teacher seeds without them), per student
variant: each edit raises its own attribute over its range by at least ``rise``, monotonically (the mean over the
faces, strengths ascending; the share of single faces that never fall by more than the dial's tolerance is
reported beside), no other attribute moves by more than ``leak`` on average at any evaluated strength, two edits
together move each of their attributes at least ``together`` as far as alone, and all zeros gives back the input
(PSNR of every image >= ``zeros_db``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.errors import FieldError
from editing.directions import DEFAULT_LAYERS, LatentEdit, apply_edits
from editing.images import from_uint8, make_grid, save_image, to_uint8
from model_zoo.registry import ModelEntry
from model_zoo.schema import EditSpec
from training.artifacts import ARTIFACT_FACES
from training.directions import z_from_seeds
from training.evaluate.clean import clean_artifacts
from training.evaluate.inputs import BATCH, EvaluateOptions, Scoring
from training.evaluate.paths import Student, resize
from training.evaluate.strength import monotonic_fraction
from training.metrics import psnr

TARGETS = {"rise": 0.15, "leak": 0.10, "together": 0.70, "zeros_db": 40.0}
GRID_FACES = 4  # rows of edits_grid.png


@dataclass(frozen=True)
class Condition:
    """One strength vector: its label (``age=+1,smile=+1``), the vector [K], its kind and the edits it sets."""

    label: str
    vector: np.ndarray
    kind: str  # "zeros", "single" or "pair"
    active: tuple[int, ...]


def edit_conditions(edits: list[EditSpec]) -> list[Condition]:
    """All zeros, each edit alone at ``lo, lo/2, hi/2, hi`` of its range (0 left out), each pair at their ``hi``."""
    ranges = [e.range or (e.default, e.default) for e in edits]

    def make(values: dict[int, float], kind: str) -> Condition:
        v = np.zeros(len(edits), np.float32)
        for i, s in values.items():
            v[i] = s
        label = ",".join(f"{edits[i].attribute}={s:+g}" for i, s in values.items()) or "zeros"
        return Condition(label, v, kind, tuple(values))

    out = [make({}, "zeros")]
    for i, (lo, hi) in enumerate(ranges):
        out += [make({i: s}, "single") for s in sorted({lo, lo / 2, hi / 2, hi} - {0.0})]
    out += [make({i: ranges[i][1], j: ranges[j][1]}, "pair") for i, j in combinations(range(len(edits)), 2)]
    return out


def check_scoring(scoring: Scoring | None, edits: list[EditSpec]) -> Scoring:
    """The scoring, which must read every edit's attribute; FieldError naming the missing ones."""
    read = [] if scoring is None else [scoring.attribute, *scoring.others]
    missing = [str(e.attribute) for e in edits if e.attribute not in read]
    if scoring is None or missing:
        raise FieldError(
            ("scorer", "attribute", "other"),
            "a student of several edits is judged by an attribute model that reads each of them: pass {scorer} "
            f"MODEL.onnx and {{attribute}}/{{other}} NAME=INDEX for {', '.join(missing)}",
        )
    return scoring


@torch.no_grad()
def teacher_edits(
    G: torch.nn.Module,
    directions: list[torch.Tensor],
    edits: list[EditSpec],
    truncation: float,
    seeds: list[int],
    vectors: list[np.ndarray],
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """uint8 originals of ``seeds`` and, per vector, the teacher's edit ``w + sum_k s_k alpha_k d_k``."""
    originals: list[np.ndarray] = []
    edited: list[list[np.ndarray]] = [[] for _ in vectors]
    for i in tqdm(range(0, len(seeds), BATCH), desc="teacher edits", unit="batch"):
        z = z_from_seeds(seeds[i : i + BATCH], G.z_dim).to(G.w_avg.device)
        ws = G.mapping(z, truncation_psi=truncation)
        originals += list(to_uint8(G.synthesis(ws, noise_mode="const")))
        for n, v in enumerate(vectors):
            moved = [
                LatentEdit(d, s * float(e.alpha or 0.0), e.layers or DEFAULT_LAYERS)
                for d, e, s in zip(directions, edits, v.tolist(), strict=True)
                if s != 0
            ]
            edited[n] += list(to_uint8(G.synthesis(apply_edits(ws, moved), noise_mode="const")))
    return originals, edited


def true_edits(
    params: list[Any], edits: list[EditSpec], unit_change: dict[str, float], vector: np.ndarray, size: int
) -> list[np.ndarray]:
    """The renderer's true edit of each face for ``vector``: each active attribute's parameter moved by its strength
    times ``unit_change[attribute]`` (the teacher's mean judged change at strength 1), clipped to [0, 1]."""
    from training.toyfaces.renderer import render

    out = []
    for p in params:
        moved = {
            str(e.attribute): float(
                np.clip(getattr(p, str(e.attribute)) + s * unit_change[str(e.attribute)], 0, 1)
            )
            for e, s in zip(edits, vector.tolist(), strict=True)
            if s != 0
        }
        out.append(render(replace(p, **moved), size))
    return out


def _psnr(outputs: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    a = torch.cat([from_uint8(o) for o in outputs])
    b = torch.cat([from_uint8(t) for t in targets])
    return psnr(a, b).numpy()


def _scores(scoring: Scoring, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    read = scoring.score(images)
    return {n: np.asarray([r[n] for r in read]) for n in read[0]}


def measure(
    scoring: Scoring,
    conditions: list[Condition],
    inputs: list[np.ndarray],
    reference: str,
    references: list[list[np.ndarray]],
    students: list[Student],
    desc: str,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]], dict[str, list[list[np.ndarray]]]]:
    """Per condition: every attribute's mean change for the reference (``teacher`` or ``truth``), each student
    variant and the identity, and the students' and the identity's PSNR against the reference (mean and minimum).
    Returns those rows, the per-image scores (``"LABEL/PATH"`` -> name -> [n]; ``"input"`` too) and the outputs."""
    judged = {"input": _scores(scoring, inputs)}
    base = judged["input"]
    rows: list[dict[str, Any]] = []
    outputs: dict[str, list[list[np.ndarray]]] = {s.variant: [] for s in students}
    for cond, ref in tqdm(list(zip(conditions, references, strict=True)), desc=desc, unit="condition"):
        paths = {reference: ref}
        for s in students:
            paths[f"student_{s.variant}"] = [s(x, cond.vector) for x in inputs]
            outputs[s.variant].append(paths[f"student_{s.variant}"])
        change, quality = {}, {}
        for name, images in paths.items():
            judged[f"{cond.label}/{name}"] = _scores(scoring, images)
            change[name] = {n: float((v - base[n]).mean()) for n, v in judged[f"{cond.label}/{name}"].items()}
            if name != reference:
                p = _psnr(images, ref)
                quality[name] = {"mean": float(p.mean()), "min": float(p.min())}
        change["identity"] = {n: 0.0 for n in base}
        p = _psnr(inputs, ref)
        quality["identity"] = {"mean": float(p.mean()), "min": float(p.min())}
        rows.append(
            {
                "condition": cond.label,
                "kind": cond.kind,
                "vector": cond.vector.tolist(),
                "change": change,
                "psnr": quality,
            }
        )
    return rows, judged, outputs


def targets(
    rows: list[dict[str, Any]],
    conditions: list[Condition],
    edits: list[EditSpec],
    judged: dict[str, dict[str, np.ndarray]],
    path: str,
) -> dict[str, Any]:
    """:data:`TARGETS` for one path (``student_fp32``, ...) from :func:`measure`'s rows and per-image scores."""
    names = [str(e.attribute) for e in edits]
    per_edit: dict[str, Any] = {}
    for i, name in enumerate(names):
        ladder = sorted(
            [(0.0, 0)] + [(float(c.vector[i]), n) for n, c in enumerate(conditions) if c.active == (i,)]
        )
        means = [rows[n]["change"][path][name] for _, n in ladder]
        faces = np.stack([judged[f"{conditions[n].label}/{path}"][name] for _, n in ladder])
        singles = [n for _, n in ladder if n]
        leaks = {
            o: max(abs(rows[n]["change"][path][o]) for n in singles)
            for o in rows[0]["change"][path]
            if o != name
        }
        worst = max(leaks, key=lambda o: leaks[o])
        rise = means[-1] - means[0]
        monotonic = bool(np.all(np.diff(means) >= 0))
        per_edit[name] = {
            "strengths": [s for s, _ in ladder],
            "mean_change": means,
            "rise": rise,
            "monotonic_mean": monotonic,
            "monotonic_faces": monotonic_fraction(faces),
            "max_leak": leaks[worst],
            "max_leak_attribute": worst,
            "met": bool(rise >= TARGETS["rise"] and monotonic and leaks[worst] <= TARGETS["leak"]),
        }
    together: dict[str, Any] = {}
    for n, c in enumerate(conditions):
        if c.kind != "pair":
            continue
        ratios = {}
        for i in c.active:
            alone = next(
                m for m, a in enumerate(conditions) if a.active == (i,) and a.vector[i] == c.vector[i]
            )
            own = rows[alone]["change"][path][names[i]]
            ratios[names[i]] = rows[n]["change"][path][names[i]] / own if own else float("nan")
        together[c.label] = {
            "ratio_to_alone": ratios,
            "met": bool(all(r >= TARGETS["together"] for r in ratios.values())),
        }
    zeros_db = rows[0]["psnr"][path]["min"] if path in rows[0]["psnr"] else None  # None: the reference
    met = (
        all(e["met"] for e in per_edit.values())
        and all(t["met"] for t in together.values())
        and (zeros_db is None or zeros_db >= TARGETS["zeros_db"])
    )
    return {"edits": per_edit, "together": together, "zeros_psnr_min_db": zeros_db, "met": met}


def write_edits_grid(
    out: Path,
    inputs: list[np.ndarray],
    conditions: list[Condition],
    outputs: list[list[np.ndarray]],
    truth: list[list[np.ndarray]] | None,
) -> dict[str, Any]:
    """edits_grid.png: per face (first :data:`GRID_FACES`) a row of the input then each single edit at its range's
    ends and the first pair, the student's output (fp32); with the truth, a row of the renderer's true edits below."""
    picked = [n for n, c in enumerate(conditions) if c.kind == "single" and abs(c.vector[c.active[0]]) >= 1]
    picked += [next(n for n, c in enumerate(conditions) if c.kind == "pair")]
    rows = []
    for f in range(min(GRID_FACES, len(inputs))):
        rows.append([inputs[f], *[outputs[n][f] for n in picked]])
        if truth is not None:
            rows.append([inputs[f], *[truth[n][f] for n in picked]])
    save_image(out / "edits_grid.png", make_grid(rows))
    return {
        "file": "edits_grid.png",
        "columns": ["input", *[conditions[n].label for n in picked]],
        "rows": "student fp32, then the renderer's true edit, per face" if truth else "student fp32 per face",
    }


def resized(images: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    return [resize(im, size) for im in images]


def evaluate_edits(
    opts: EvaluateOptions,
    entry: ModelEntry,
    G: torch.nn.Module,
    students: list[Student],
    scoring: Scoring | None,
    seeds: list[int],
    out: Path,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The report's ``edits`` section (see the module docstring) and the teacher originals at the students' size
    (for the latency runs); writes edits_grid.png."""
    from editing.directions import load_direction

    edits = entry.spec.edits
    scoring = check_scoring(scoring, edits)
    directions = [
        load_direction(entry.path / str(e.direction), G.num_ws, G.w_dim).to(G.w_avg.device) for e in edits
    ]
    truncation = opts.truncation if opts.truncation is not None else entry.spec.truncation
    if truncation is None:
        raise FieldError("truncation", f"{entry.path}: no truncation recorded; pass the pairs' psi")
    size = entry.input_size
    conditions = edit_conditions(edits)
    originals, edited = teacher_edits(
        G, directions, edits, float(truncation), seeds, [c.vector for c in conditions]
    )
    inputs = resized(originals, size)
    rows, judged, outputs = measure(
        scoring, conditions, inputs, "teacher", [resized(e, size) for e in edited], students, "teacher seeds"
    )
    section: dict[str, Any] = {
        "attributes": [e.attribute for e in edits],
        "read": [scoring.attribute, *scoring.others],
        "targets": TARGETS,
        "teacher_seeds": {"n": len(seeds), "rows": rows},
    }
    unit_change = {}
    for i, e in enumerate(edits):
        top = max((c for c in conditions if c.active == (i,)), key=lambda c: float(c.vector[i]))
        row = rows[conditions.index(top)]
        unit_change[str(e.attribute)] = row["change"]["teacher"][str(e.attribute)] / float(top.vector[i])
    section["teacher_unit_change"] = unit_change
    judged_on, source, reference, grid_inputs, truth = judged, rows, "teacher", inputs, None
    if opts.clean_renders:
        from training.toyfaces.clean_renders import CleanSet, adult_faces
        from training.toyfaces.renderer import ATTRIBUTES, render
        from training.toyfaces.teacher import trained_aligned

        if not (G.checkpoint_info.get("metadata") or {}).get("toyfaces"):
            raise FieldError(
                "clean_renders", f"{entry.teacher_path}: not a toy-face teacher; no true edit to compare"
            )
        unknown = [a for a in unit_change if a not in ATTRIBUTES]
        if unknown:
            raise FieldError(
                "clean_renders", f"the renderer draws no {', '.join(unknown)}: no true edit of it"
            )
        faces = adult_faces(opts.clean_renders, G.z_dim, trained_aligned(G))
        params = [p for _, p in faces]
        renders = resized([render(p, G.img_resolution) for p in params], size)
        truth = [
            resized(true_edits(params, edits, unit_change, c.vector, G.img_resolution), size)
            for c in conditions
        ]
        source, judged_on, outputs = measure(
            scoring, conditions, renders, "truth", truth, students, "clean renders"
        )
        section["clean_renders"] = {"n": len(renders), "seeds": [s for s, _ in faces], "rows": source}
        reference, grid_inputs = "truth", renders
        if "age" in unit_change:  # the dial's artifact figures, in the hair the age edit whitens
            top = max(
                (c for c in conditions if c.label.startswith("age=") and c.kind == "single"),
                key=lambda c: float(c.vector.max()),
            )
            n = conditions.index(top)
            clean = CleanSet(
                [sd for sd, _ in faces],
                renders,
                truth[n],
                [p.age for p in params],
                unit_change["age"] * float(top.vector.max()),
                trained_aligned(G),
                params,
            )
            k = min(ARTIFACT_FACES, len(seeds))
            section["artifacts_age"] = {
                "condition": top.label,
                **clean_artifacts(
                    out,
                    clean,
                    renders,
                    truth[n],
                    {v: o[n] for v, o in outputs.items()},
                    students,
                    G.img_resolution,
                    size,
                    G.z_dim,
                    (seeds[:k], np.stack(resized(edited[n][:k], size))),
                ),
            }
    section["grid"] = write_edits_grid(out, grid_inputs, conditions, outputs["fp32"], truth)
    section["judged_on"] = "clean_renders" if truth is not None else "teacher_seeds"
    section["results"] = {
        name: targets(source, conditions, edits, judged_on, name)
        for name in [reference, *(f"student_{s.variant}" for s in students)]
    }
    return section, inputs


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _condition_table(rows: list[dict[str, Any]], reference: str, names: list[str], path: str) -> list[str]:
    lines = [
        f"| condition | {' | '.join(f'{n} ({reference} / student)' for n in names)} | PSNR student | "
        "PSNR identity |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for r in rows:
        cells = [f"{r['change'][reference][n]:+.3f} / {r['change'][path][n]:+.3f}" for n in names]
        lines.append(
            f"| {r['condition']} | {' | '.join(cells)} | {r['psnr'][path]['mean']:.2f} | "
            f"{r['psnr']['identity']['mean']:.2f} |"
        )
    return lines


def _artifacts_markdown(art: dict[str, Any] | None) -> list[str]:
    if not art:
        return []
    lines = [
        f"## Artifacts at {art['condition']}, in the hair it whitens (clean renders; training/artifacts.py)",
        "",
        "| path | HF energy in the hair | blemish peak | error peak |",
        "|---|---:|---:|---:|",
    ]
    for name, f in art["paths"].items():
        lines.append(
            f"| {name} | {f['hf_energy_region']:.1f} | {f['blemish_peak']:.1f} | {f['error_peak']:.1f} |"
        )
    own = art.get("teacher_samples")
    if own:
        lines.append(
            f"| teacher's own edit (its {own['n']} samples) | {own['hf_energy_region']:.1f} | "
            f"{own['blemish_peak']:.1f} | - |"
        )
    return [*lines, "", "Maps and the hair at 4x: clean_artifact_maps.png, clean_zoom_grid.png.", ""]


def edits_markdown(report: dict[str, Any]) -> str:
    """report.md of a multi-edit evaluation: the targets, then every condition's figures."""
    sec = report["edits"]
    names = [str(a) for a in sec["attributes"]]
    t = sec["targets"]
    on_clean = sec["judged_on"] == "clean_renders"
    reference = "truth" if on_clean else "teacher"
    where = (
        f"{sec['clean_renders']['n']} clean renders (adults; against the renderer's true edit)"
        if on_clean
        else f"{sec['teacher_seeds']['n']} held-out teacher seeds"
    )
    out = [
        f"# Evaluation of {report['entry']['name']}: {len(names)} edits ({', '.join(names)})",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {report['machine']['cpu']}; {report['created']}. Attribute model: every change below is its "
        f"mean over the faces, on its 0-1 scale; it reads {', '.join(sec['read'])}.",
        "",
        f"## Targets, on {where}",
        "",
        f"Each edit alone: its attribute rises over its range by >= {t['rise']} (mean, strengths ascending, "
        f"never falling), no other attribute moves by more than {t['leak']} on average at any strength; two edits "
        f"together move each >= {t['together']:.0%} as far as alone; all zeros is the input (>= {t['zeros_db']:.0f} "
        "dB). The reference row is the same measure of the "
        + ("renderer's true edit." if on_clean else "teacher's edit."),
        "",
        "| path | edit | rise over range | mean monotonic | faces monotonic | largest leak | met |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for path, res in sec["results"].items():
        for name, e in res["edits"].items():
            out.append(
                f"| {path} | {name} | {e['rise']:+.3f} | {_verdict(e['monotonic_mean'])} | "
                f"{e['monotonic_faces']:.1%} | {e['max_leak']:.3f} ({e['max_leak_attribute']}) | "
                f"{_verdict(e['met'])} |"
            )
    out += ["", "| path | pair at both highs | each as far as alone | met |", "|---|---|---|---|"]
    for path, res in sec["results"].items():
        for label, p in res["together"].items():
            ratios = ", ".join(f"{n} {v:.0%}" for n, v in p["ratio_to_alone"].items())
            out.append(f"| {path} | {label} | {ratios} | {_verdict(p['met'])} |")
    out.append("")
    for path, res in sec["results"].items():
        if res["zeros_psnr_min_db"] is not None:
            out.append(
                f"- {path}: all zeros, lowest PSNR against the input {res['zeros_psnr_min_db']:.2f} dB; every target "
                f"met: {_verdict(res['met'])}."
            )
    student = next(p for p in sec["results"] if p.startswith("student_"))
    if on_clean:
        out += [
            "",
            f"## Clean renders: each condition (mean change, {reference} / {student.replace('_', ' ')}; PSNR "
            "against the true edit)",
            "",
            *_condition_table(sec["clean_renders"]["rows"], "truth", sec["read"], student),
        ]
    out += [
        "",
        f"## Teacher seeds: each condition (mean change, teacher / {student.replace('_', ' ')}; PSNR against the "
        "teacher's edit)",
        "",
        "The teacher's change at strength 1, used as the true edit's unit: "
        + ", ".join(f"{n} {v:+.3f}" for n, v in sec["teacher_unit_change"].items()),
        "",
        *_condition_table(sec["teacher_seeds"]["rows"], "teacher", sec["read"], student),
        "",
        *_artifacts_markdown(sec.get("artifacts_age")),
        f"## Pictures: {sec['grid']['file']}",
        "",
        f"Columns: {', '.join(sec['grid']['columns'])}; rows: {sec['grid']['rows']}.",
        "",
        "## Latency (batch 1, ONNX Runtime, this machine)",
        "",
        "| variant | mean ms | p50 ms |",
        "|---|---:|---:|",
        *[f"| {k} | {v['mean_ms']:.2f} | {v['p50_ms']:.2f} |" for k, v in report["latency"].items()],
        "",
    ]
    return "\n".join(out)
