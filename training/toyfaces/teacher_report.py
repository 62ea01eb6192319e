"""`distill toyfaces evaluate-teacher`: does the toy-face teacher meet the bars of a usable teacher?

Measured by the domain's attribute model on held-out seeds (never used by the direction fit, the
pairs or `distill evaluate`):

- *quality*: share of teacher samples whose face/quality score passes (>= 0.5), beside the share of
  the renderer's own images of the same latents (the seed system accepted about 86%);
- *readability*: attribute errors (MAE against the renderer's labels for ``params_from_z(z)``, z from
  the seed exactly as `distill pairs` draws it) read
  from teacher samples, beside the same errors read from the renders themselves; sampled at
  truncation 1, where the teacher's z maps to exactly those labels;
- *the edit*: every sample edited by ``alpha`` along the direction (on its W+ layers, at the pairs'
  truncation) for a sweep of alphas: mean age change per unit alpha (least squares through the
  sweep), the change of every other attribute, and the share of edited samples still passing
  quality; a before/after grid.

Writes OUT/report.json, OUT/report.md, OUT/samples.png (renders above teacher samples) and
OUT/edit.png (one row per seed, one column per alpha).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import DistillError
from editing.images import from_uint8, make_grid, save_image, to_uint8
from training.metrics import psnr

HELD_OUT_SEED0 = (
    2_000_000  # above the direction fit (0..), pairs (0..) and `distill evaluate` (1,000,000..) seeds
)
QUALITY_BAR = 0.86
BLUR_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@torch.no_grad()
def synthesize(
    G: torch.nn.Module,
    seeds: list[int],
    truncation: float,
    edit: tuple[torch.Tensor, float, tuple[int, int]] | None = None,
    batch_size: int = 32,
    desc: str = "teacher",
) -> np.ndarray:
    """uint8 [N,H,W,3] teacher images of ``seeds`` (edited by ``(direction, alpha, layers)`` when given)."""
    from editing.directions import apply_direction
    from training.directions import z_from_seeds

    out = []
    for i in tqdm(range(0, len(seeds), batch_size), desc=desc, unit="batch", leave=False):
        z = z_from_seeds(seeds[i : i + batch_size], G.z_dim).to(G.w_avg.device)
        ws = G.mapping(z, truncation_psi=truncation)
        if edit is not None:
            ws = apply_direction(ws, edit[0], edit[1], edit[2])
        out.append(to_uint8(G.synthesis(ws, noise_mode="const").float().cpu()))
    return np.concatenate(out)


def evaluate_teacher(
    generator: str | Path,
    direction: str | Path,
    scorer: str | Path,
    num: int = 1000,
    alpha: float | None = None,
    truncation: float | None = None,
    layers: tuple[int, int] | None = None,
    steps: int = 4,
    seed0: int = HELD_OUT_SEED0,
    grid_rows: int = 6,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(report, grids) for a teacher, its direction and the attribute model; alpha/truncation/layers default to the direction's."""
    from editing.directions import load_direction
    from networks.stylegan2 import load_generator
    from training.directions import file_sha256, read_sidecar, z_from_seeds
    from training.toyfaces.attributes import QUALITY_INDEX, AttributeScorer, predict, readability
    from training.toyfaces.renderer import ATTRIBUTES, params_from_z, region_boxes, render
    from training.toyfaces.teacher import trained_aligned

    if num < 2:
        raise DistillError(f"--num {num}: need at least 2 samples")
    G = load_generator(generator)
    side = read_sidecar(direction) or {}
    alpha = float(alpha if alpha is not None else side.get("suggested_alpha", 0) or 0)
    if alpha <= 0:
        raise DistillError(f"{direction}: no suggested alpha in its .json sidecar; pass --alpha")
    truncation = float(truncation if truncation is not None else side.get("truncation", 1.0))
    layers = tuple(layers or side.get("layers") or (0, G.num_ws))
    d = load_direction(direction, G.num_ws, G.w_dim)
    score = AttributeScorer(scorer)
    seeds = list(range(seed0, seed0 + num))

    aligned = trained_aligned(G)
    params = [
        params_from_z(z, aligned) for z in z_from_seeds(seeds, G.z_dim).double().numpy()
    ]  # the latents G is given
    labels = np.stack([p.labels() for p in params])
    renders = np.stack(
        [render(p, G.img_resolution) for p in tqdm(params, desc="render", unit="face", leave=False)]
    )
    samples = synthesize(G, seeds, 1.0, desc="teacher samples")
    pred_render, pred_teacher = predict(score, renders), predict(score, samples)
    fidelity = psnr(from_uint8(samples), from_uint8(renders))
    regions = region_psnr(samples, renders, region_boxes(G.img_resolution))
    blur = best_fit_blur(samples, renders)

    alphas = [alpha * k / steps for k in range(steps + 1)]
    sweep, edited = [], []
    base = None
    for a in alphas:
        images = synthesize(G, seeds, truncation, (d, a, layers), desc=f"edit alpha {a:.3g}")
        pred = predict(score, images)
        base = pred if base is None else base
        delta = pred[:, : len(ATTRIBUTES)] - base[:, : len(ATTRIBUTES)]
        sweep.append(
            {
                "alpha": a,
                "mean": dict(zip(ATTRIBUTES, pred[:, : len(ATTRIBUTES)].mean(0).tolist(), strict=True)),
                "change": dict(zip(ATTRIBUTES, delta.mean(0).tolist(), strict=True)),
                "abs_change": dict(zip(ATTRIBUTES, np.abs(delta).mean(0).tolist(), strict=True)),
                "quality_pass_rate": float((pred[:, QUALITY_INDEX] >= 0.5).mean()),
            }
        )
        edited.append(images[:grid_rows])
    ages = np.array([row["mean"]["age"] for row in sweep])
    slope = float(np.polyfit(np.array(alphas), ages, 1)[0])
    last = sweep[-1]
    others = [a for a in ATTRIBUTES if a != "age"]
    report = {
        "generator": str(generator),
        "generator_sha256": file_sha256(generator),
        "direction": str(direction),
        "direction_sha256": file_sha256(direction),
        "scorer": str(scorer),
        "num": num,
        "seeds": [seed0, seed0 + num],
        "resolution": G.img_resolution,
        "quality": {
            "teacher_pass_rate": float((pred_teacher[:, QUALITY_INDEX] >= 0.5).mean()),
            "render_pass_rate": float((pred_render[:, QUALITY_INDEX] >= 0.5).mean()),
            "bar": QUALITY_BAR,
        },
        "readability": {
            "teacher": readability(pred_teacher, labels),
            "render": readability(pred_render, labels),
        },
        "psnr_teacher_vs_render": {
            "mean": float(fidelity.mean()),
            "p10": float(np.percentile(fidelity.numpy(), 10)),
            "p90": float(np.percentile(fidelity.numpy(), 90)),
            "regions": regions,
            "best_fit_blur": blur,
        },
        "edit": {
            "alpha": alpha,
            "truncation": truncation,
            "layers": list(layers),
            "sweep": sweep,
            "age_change_per_unit_alpha": slope,
            "age_change_at_alpha": last["change"]["age"],
            "other_abs_change_at_alpha": {a: last["abs_change"][a] for a in others},
            "other_mean_abs_change_at_alpha": float(np.mean([last["abs_change"][a] for a in others])),
        },
    }
    report["quality"]["passes_bar"] = report["quality"]["teacher_pass_rate"] >= QUALITY_BAR
    n = min(8, num)
    grids = {
        "samples": make_grid([list(renders[:n]), list(samples[:n])]),
        "edit": make_grid([[e[r] for e in edited] for r in range(min(grid_rows, num))]),
    }
    return report, grids


def region_psnr(
    samples: np.ndarray, renders: np.ndarray, boxes: dict[str, tuple[int, int, int, int]]
) -> dict[str, dict[str, float]]:
    """Mean PSNR of teacher samples against renders inside each (y0, y1, x0, x1) box (eyes, mouth)."""
    out = {}
    for name, (y0, y1, x0, x1) in boxes.items():
        values = psnr(from_uint8(samples[:, y0:y1, x0:x1]), from_uint8(renders[:, y0:y1, x0:x1]))
        out[name] = {"mean": float(values.mean()), "box_yyxx": [y0, y1, x0, x1]}
    return out


def best_fit_blur(
    samples: np.ndarray, renders: np.ndarray, sigmas: tuple[float, ...] = BLUR_SIGMAS
) -> dict[str, Any]:
    """Which Gaussian blur of the renders the teacher samples are closest to (mean PSNR per sigma, in pixels).

    A sharp teacher peaks at sigma 0; a teacher that only draws the blobs of a face peaks at several pixels.
    """
    from PIL import Image, ImageFilter

    curve = []
    for sigma in sigmas:
        blurred = (
            renders
            if sigma == 0
            else np.stack(
                [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma))) for im in renders]
            )
        )
        curve.append({"sigma": sigma, "psnr": float(psnr(from_uint8(samples), from_uint8(blurred)).mean())})
    best = max(curve, key=lambda row: row["psnr"])
    return {"sigma": best["sigma"], "psnr": best["psnr"], "curve": curve}


def render_markdown(r: dict[str, Any]) -> str:
    """The report as markdown (figures from report.json, grids beside it)."""
    q, e = r["quality"], r["edit"]
    rt, rr = r["readability"]["teacher"], r["readability"]["render"]
    lines = [
        "# Toy-face teacher report",
        "",
        f"Written by `distill toyfaces evaluate-teacher` on {r['num']} held-out seeds "
        f"[{r['seeds'][0]}, {r['seeds'][1]}); scores from the attribute model `{Path(r['scorer']).name}`.",
        "",
        "## Quality and readability (truncation 1)",
        "",
        "| | teacher samples | renders of the same latents |",
        "|---|---:|---:|",
        f"| pass the face/quality score (bar {q['bar']:.0%}) | **{q['teacher_pass_rate']:.1%}** | {q['render_pass_rate']:.1%} |",
    ]
    lines += [f"| {a} MAE | {rt['mae'][a]:.3f} | {rr['mae'][a]:.3f} |" for a in rt["mae"]]
    lines += [
        f"| glasses accuracy | {rt['glasses_accuracy']:.1%} | {rr['glasses_accuracy']:.1%} |",
        f"| adult (age >= 0.2) accuracy | {rt['adult_accuracy']:.1%} | {rr['adult_accuracy']:.1%} |",
        "",
        f"PSNR of the teacher sample against the render of the same latent: mean {r['psnr_teacher_vs_render']['mean']:.2f} dB "
        f"(p10 {r['psnr_teacher_vs_render']['p10']:.2f}, p90 {r['psnr_teacher_vs_render']['p90']:.2f}).",
        "",
        *_fidelity_details(r["psnr_teacher_vs_render"]),
        "![renders (top) and teacher samples (bottom)](samples.png)",
        "",
        f"## The edit (alpha up to {e['alpha']:.3g}, W+ layers {e['layers'][0]}:{e['layers'][1]}, truncation {e['truncation']:g})",
        "",
        f"Mean age change per unit alpha: **{e['age_change_per_unit_alpha']:+.4f}** "
        f"(age is 0 child .. 1 elderly); at alpha {e['alpha']:.3g}: {e['age_change_at_alpha']:+.3f}, while the other "
        f"attributes move by {e['other_mean_abs_change_at_alpha']:.3f} on average (mean absolute change).",
        "",
        "| alpha | mean age | "
        + " | ".join(f"{a} change" for a in e["other_abs_change_at_alpha"])
        + " | quality pass |",
        "|---:|---:|" + "---:|" * len(e["other_abs_change_at_alpha"]) + "---:|",
    ]
    for row in e["sweep"]:
        lines.append(
            f"| {row['alpha']:.3g} | {row['mean']['age']:.3f} | "
            + " | ".join(f"{row['change'][a]:+.3f}" for a in e["other_abs_change_at_alpha"])
            + f" | {row['quality_pass_rate']:.1%} |"
        )
    lines += ["", "![one row per seed, alpha rising to the right](edit.png)", ""]
    return "\n".join(lines)


def _fidelity_details(fid: dict[str, Any]) -> list[str]:
    """Markdown lines for the per-region PSNR and the best-fit blur (absent in reports of older versions)."""
    if "regions" not in fid:
        return []
    regions = ", ".join(f"{name} {v['mean']:.2f} dB" for name, v in fid["regions"].items())
    blur = fid["best_fit_blur"]
    curve = ", ".join(f"{row['sigma']:g} px: {row['psnr']:.2f}" for row in blur["curve"])
    return [
        f"Per region (eyes with brows and glasses, mouth; boxes of the aligned pose): {regions}.",
        "",
        f"Best-fit blur: the samples are closest to the renders blurred by a Gaussian of sigma **{blur['sigma']:g} px** "
        f"({blur['psnr']:.2f} dB; a sharp teacher peaks at 0). PSNR against the blurred renders by sigma: {curve}.",
        "",
    ]


def write_report(out: str | Path, report: dict[str, Any], grids: dict[str, np.ndarray]) -> Path:
    """OUT/report.json, OUT/report.md and the grids; returns the markdown path."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    for name, image in grids.items():
        save_image(out / f"{name}.png", image)
    atomic_write_text(out / "report.md", render_markdown(report))
    return out / "report.md"
