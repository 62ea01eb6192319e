"""`distill evaluate`'s strength section for a strength-conditioned entry.

At each strength ``s`` (relative: the teacher edits with alpha ``s * edit.alpha``) on held-out teacher seeds:
PSNR/SSIM of every student variant against the teacher's edit at that strength (beside the do-nothing
baseline), and with a scorer the attribute's mean change for the teacher and the student, per unit of
strength, and whether the student's change rises (or falls) monotonically with the strength. At strength 0
the student must give back its input: the identity error (PSNR against the input, max pixel difference).
Artifact figures (training/artifacts.py) at each strength, on the first ARTIFACT_FACES seeds: HF energy (whole
picture and in the region that strength's teacher edit moves) and the fixed-pixel blemish peak of every student
variant, beside the teacher's edit's own and the identity's.
``strengths.png`` holds one row per strength: teacher | student for the first seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.images import from_uint8, make_grid, save_image
from training.artifacts import ARTIFACT_FACES, artifact_block, edit_region
from training.evaluate.inputs import EditSpec, Scoring
from training.evaluate.paths import Student, resize, teacher_pairs
from training.metrics import psnr, ssim
from training.strength import EVAL_STRENGTHS

GRID_SEEDS = 3
BATCH = 8
MONOTONIC_TOLERANCE = (
    0.01  # a face's dial is monotonic when its judged attribute never falls by more than this
)


def default_strengths(trained: tuple[float, float]) -> list[float]:
    """The evaluated strengths (EVAL_STRENGTHS: -1, -0.5, 0.5, 1) that lie in the trained range, plus its ends."""
    low, high = trained
    chosen = {s for s in EVAL_STRENGTHS if low <= s <= high} | {low, high}
    return sorted(chosen)


def monotonic_fraction(judged: np.ndarray, tolerance: float | None = None) -> float:
    """Share of faces (columns of ``judged`` [strengths, faces], strengths ascending) whose judged attribute never
    falls by more than ``tolerance`` (default MONOTONIC_TOLERANCE) from one strength to the next."""
    tol = MONOTONIC_TOLERANCE if tolerance is None else tolerance
    return float(np.mean(np.all(np.diff(judged, axis=0) >= -tol, axis=0)))


def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


def evaluate_strengths(
    G: torch.nn.Module,
    direction: torch.Tensor,
    spec: EditSpec,
    students: list[Student],
    scoring: Scoring | None,
    size: tuple[int, int],
    seeds: list[int],
    strengths: list[float],
    trained: tuple[float, float],
    out: Path,
) -> dict[str, Any]:
    """Every figure of the strength section (see the module docstring); writes ``out/strengths.png``."""
    strengths = sorted(set(strengths) | {0.0})
    rows: list[dict[str, Any]] = []
    grid_rows: list[list[np.ndarray]] = []
    originals_all: list[np.ndarray] = []
    for i in range(0, len(seeds), BATCH):
        originals, _ = teacher_pairs(G, direction, spec, seeds[i : i + BATCH])
        originals_all += list(originals)
    inputs = [resize(im, size) for im in originals_all]
    x = torch.cat([from_uint8(im) for im in inputs])
    base_scores = scoring.score(originals_all) if scoring else None
    judged: dict[str, list[list[float]]] = {}  # path -> per strength, the attribute read on each face
    for s in strengths:
        at = dataclasses.replace(spec, alpha=s * spec.alpha)
        edits: list[np.ndarray] = []
        for i in range(0, len(seeds), BATCH):
            edits += list(teacher_pairs(G, direction, at, seeds[i : i + BATCH])[1])
        edits_sized = [resize(im, size) for im in edits]
        target = torch.cat([from_uint8(im) for im in edits_sized])
        row: dict[str, Any] = {
            "strength": s,
            "alpha": s * spec.alpha,
            "identity": {
                "psnr": _spread(psnr(x, target).tolist()),
                "ssim": _spread(ssim(x, target).tolist()),
            },
            "students": {},
        }
        if scoring:
            a = scoring.attribute
            teacher_scores = scoring.score(edits)
            judged.setdefault("teacher", []).append([t[a] for t in teacher_scores])
            row["teacher_change"] = float(
                np.mean([t[a] - o[a] for t, o in zip(teacher_scores, base_scores, strict=True)])
            )
        grid = []
        k = min(ARTIFACT_FACES, len(inputs))
        ref, ident = np.stack(edits_sized[:k]), np.stack(inputs[:k])
        art_paths: dict[str, np.ndarray] = {"identity": ident}
        for student in students:
            outputs = [student(im, s) for im in inputs]
            y = torch.cat([from_uint8(o) for o in outputs])
            record: dict[str, Any] = {
                "psnr": _spread(psnr(y, target).tolist()),
                "ssim": _spread(ssim(y, target).tolist()),
            }
            if s == 0.0:
                record["identity_error"] = {
                    "psnr_vs_input": _spread(psnr(y, x).tolist()),
                    "max_abs_uint8": int(
                        max(
                            np.abs(o.astype(int) - im.astype(int)).max()
                            for o, im in zip(outputs, inputs, strict=True)
                        )
                    ),
                }
            if scoring:
                scores = scoring.score(outputs)
                record["change"] = float(
                    np.mean([t[a] - o[a] for t, o in zip(scores, base_scores, strict=True)])
                )
                record["change_per_unit"] = None if s == 0 else record["change"] / s
                judged.setdefault(student.variant, []).append([o[a] for o in scores])
            row["students"][student.variant] = record
            art_paths[f"student_{student.variant}"] = np.stack(outputs[:k])
            if student is students[0]:
                grid = outputs
        row["artifacts"] = artifact_block(ref, art_paths, edit_region(ident, ref), "teacher")
        rows.append(row)
        grid_rows.append(
            [im for k in range(min(GRID_SEEDS, len(seeds))) for im in (resize(edits[k], size), grid[k])]
        )
    save_image(out / "strengths.png", make_grid(grid_rows))
    report: dict[str, Any] = {
        "trained_range": list(trained),
        "units": "relative: alpha = strength x edit.alpha",
        "seeds": {"start": seeds[0], "stop": seeds[-1] + 1, "count": len(seeds)},
        "rows": rows,
        "grid": {
            "file": "strengths.png",
            "rows": strengths,
            "columns": "teacher | student "
            + students[0].variant
            + f" for the first {min(GRID_SEEDS, len(seeds))} seeds",
        },
    }
    if scoring:
        report["attribute"] = scoring.attribute
        for v in (st.variant for st in students):
            changes = [r["students"][v]["change"] for r in rows]
            steps = np.diff(changes)
            report.setdefault("monotonic", {})[v] = bool(np.all(steps > 0) or np.all(steps < 0))
        teacher = [r["teacher_change"] for r in rows]
        report["monotonic"]["teacher"] = bool(np.all(np.diff(teacher) > 0) or np.all(np.diff(teacher) < 0))
        report["monotonic_per_face"] = {
            "tolerance": MONOTONIC_TOLERANCE,
            "fraction": {path: monotonic_fraction(np.asarray(v)) for path, v in judged.items()},
        }
    return report


def strength_markdown(r: dict[str, Any]) -> list[str]:
    """The strength section of report.md."""
    variants = list(r["rows"][0]["students"])
    scored = "attribute" in r
    head = ["strength", "alpha", *[f"PSNR / SSIM {v}" for v in variants], "identity PSNR / SSIM"]
    if scored:
        head += ["teacher change", *[f"{v} change (per unit)" for v in variants]]
    lines = [
        "",
        "## Strengths",
        "",
        f"A strength-conditioned student (trained on {r['trained_range'][0]:g}..{r['trained_range'][1]:g}; "
        f"{r['units']}), on {r['seeds']['count']} held-out seeds {r['seeds']['start']}..{r['seeds']['stop'] - 1}: "
        "each path against the teacher's edit at that strength.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in r["rows"]:
        cells = [f"{row['strength']:+.2f}", f"{row['alpha']:.3g}"]
        cells += [
            f"{row['students'][v]['psnr']['mean']:.2f} dB / {row['students'][v]['ssim']['mean']:.3f}"
            for v in variants
        ]
        cells.append(f"{row['identity']['psnr']['mean']:.2f} dB / {row['identity']['ssim']['mean']:.3f}")
        if scored:
            cells.append(f"{row['teacher_change']:+.3f}")
            for v in variants:
                per = row["students"][v]["change_per_unit"]
                cells.append(f"{row['students'][v]['change']:+.3f} ({'-' if per is None else f'{per:+.3f}'})")
        lines.append("| " + " | ".join(cells) + " |")
    zero = next(row for row in r["rows"] if row["strength"] == 0.0)
    lines += [""]
    for v in variants:
        err = zero["students"][v]["identity_error"]
        lines.append(
            f"- Strength 0, {v}: {err['psnr_vs_input']['mean']:.2f} dB against the input "
            f"(max pixel difference {err['max_abs_uint8']})."
        )
    if scored:
        lines.append(
            f"- {r['attribute']} change monotonic in the strength: "
            + ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in r["monotonic"].items())
            + "; per face (the judged "
            + r["attribute"]
            + f" never falls by more than {r['monotonic_per_face']['tolerance']} from one strength to the next): "
            + ", ".join(f"{k} {v:.1%}" for k, v in r["monotonic_per_face"]["fraction"].items())
            + "."
        )
    lines += [
        "",
        "Artifacts at each strength against the teacher's edit at that strength (first "
        f"{r['rows'][0]['artifacts']['n']} seeds): HF energy (mean squared Laplacian, 8-bit levels) in the region the "
        "edit moves, and the fixed-pixel blemish peak (per pixel the median |Laplacian| over the faces, at its worst "
        "pixel), beside the teacher's own and the identity's.",
        "",
        "| strength | teacher HF / blemish | identity HF / blemish | "
        + " | ".join(f"{v} HF / blemish (x teacher)" for v in variants)
        + " |",
        "|---|" + "---:|" * (2 + len(variants)),
    ]
    for row in r["rows"]:
        p, ratios = row["artifacts"]["paths"], row["artifacts"]["ratio_to_reference"]
        cells = [f"{row['strength']:+.2f}", _hf_blemish(p["teacher"]), _hf_blemish(p["identity"])]
        for v in variants:
            q = ratios[f"student_{v}"]
            cells.append(
                f"{_hf_blemish(p[f'student_{v}'])} ({_x(q['hf_energy_region'])} / {_x(q['blemish_peak'])})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    g = r["grid"]
    lines += [
        "",
        f"![one row per strength {', '.join(f'{s:+g}' for s in g['rows'])}: {g['columns']}]({g['file']})",
        "",
        f"Rows: strengths {', '.join(f'{s:+g}' for s in g['rows'])}; columns: {g['columns']}.",
        "",
    ]
    return lines


def _hf_blemish(f: dict[str, Any]) -> str:
    hf = "-" if f["hf_energy_region"] is None else f"{f['hf_energy_region']:.1f}"
    return f"{hf} / {f['blemish_peak']:.1f}"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"
