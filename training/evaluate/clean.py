"""`distill evaluate`'s artifact figures and the toy domain's clean renders against the renderer's true edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from core.atomic import atomic_write_text
from core.errors import FieldError
from editing.images import from_uint8, make_grid, save_image
from training.artifacts import (
    ARTIFACT_FACES,
    EDIT_REGION_LEVELS,
    MAP_LEVELS,
    ZOOM,
    artifact_block,
    artifact_figures,
    blemish_map,
    busiest_window,
    edit_region,
    error_map,
    map_tiles,
    ratio_of,
    zoom_rows,
)
from training.evaluate.inputs import (
    GRID_ROWS,
    SUCCESS_FRACTION,
    EditSpec,
    EvaluateOptions,
    Scoring,
    edit_figures,
    spread,
)
from training.evaluate.paths import Student, legacy_outputs, resize, seed_name
from training.evaluate.report import per_image_csv
from training.metrics import psnr, ssim


def against_truth(
    outputs: list[np.ndarray], targets: torch.Tensor, identity: torch.Tensor
) -> tuple[dict[str, Any], list[float]]:
    """PSNR/SSIM of ``outputs`` against ``targets``, their gain over the identity's per-image PSNR ``identity``."""
    t = torch.cat([from_uint8(o) for o in outputs])
    p = psnr(t, targets)
    gain = p - identity[: len(outputs)]
    return {
        "psnr": spread(p.tolist()),
        "ssim": spread(ssim(t, targets).tolist()),
        "gain_over_identity_db": spread(gain.tolist()),
        "beats_identity": float((gain > 0).float().mean()),
    }, p.tolist()


def write_artifact_pictures(
    out: Path,
    prefix: str,
    references: np.ndarray,
    students: dict[str, np.ndarray],
    region: np.ndarray,
    columns: dict[str, np.ndarray],
    reference: str,
) -> dict[str, Any]:
    """PREFIXartifact_maps.png: a row per student variant, its blemish map | its error map against ``references`` | the
    references' own blemish map (heat maps, fixed scale 0..MAP_LEVELS levels); PREFIXzoom_grid.png: the first faces
    cropped where ``region`` acts most, ``ZOOM``x nearest neighbour, one column per picture of ``columns``."""
    own = blemish_map(references)
    save_image(
        out / f"{prefix}artifact_maps.png",
        make_grid([map_tiles([blemish_map(o), error_map(o, references), own]) for o in students.values()]),
    )
    y, x, h, w = busiest_window(region)
    faces = min(GRID_ROWS, len(references))
    save_image(
        out / f"{prefix}zoom_grid.png", make_grid(zoom_rows(list(columns.values()), (y, x, h, w), faces))
    )
    return {
        "maps": {
            "file": f"{prefix}artifact_maps.png",
            "rows": [f"student {v}" for v in students],
            "columns": [
                "student blemish map (median |Laplacian|)",
                f"student error map (median |output - {reference}|)",
                f"{reference}'s own blemish map",
            ],
            "scale_levels": [0, MAP_LEVELS],
        },
        "zoom": {
            "file": f"{prefix}zoom_grid.png",
            "columns": list(columns),
            "faces": faces,
            "factor": ZOOM,
            "crop": {"y": y, "x": x, "h": h, "w": w},
        },
    }


def teacher_artifacts(
    out: Path, inputs: np.ndarray, edits: np.ndarray, students: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Artifact figures (training/artifacts.py) of the identity and every student variant against the teacher's edit,
    beside the edit's own, inside the edit region (where the edit moved its input); artifact_maps.png, zoom_grid.png."""
    region = edit_region(inputs, edits)
    block = artifact_block(
        edits, {"identity": inputs, **{f"student_{v}": o for v, o in students.items()}}, region, "teacher"
    )
    block["region"] = f"where the teacher's edit moved the input by more than {EDIT_REGION_LEVELS:g} levels"
    return {
        **block,
        **write_artifact_pictures(
            out,
            "",
            edits,
            students,
            region,
            {**{f"student {v}": o for v, o in students.items()}, "teacher edit": edits, "input": inputs},
            "teacher edit",
        ),
    }


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(size):
        return mask
    return (
        np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST))
        > 127
    )


def clean_artifacts(
    out: Path,
    clean: Any,
    inputs: list[np.ndarray],
    targets: list[np.ndarray],
    outputs: dict[str, list[np.ndarray]],
    students: list[Student],
    resolution: int,
    size: tuple[int, int],
    z_dim: int,
    teacher_samples: tuple[list[int], np.ndarray] | None,
) -> dict[str, Any]:
    """Artifact figures of the identity and every student variant against the renderer's true edit, in the hair (of the
    face or its aged version: where an age edit acts); the teacher's own edit on its held-out samples, in their hair,
    as the teacher's level; clean_artifact_maps.png, clean_zoom_grid.png."""
    from training.directions import z_from_seeds
    from training.toyfaces.clean_renders import hair_region
    from training.toyfaces.renderer import params_from_z

    k = min(ARTIFACT_FACES, len(inputs))
    hair = np.stack(
        [_resize_mask(hair_region(p, clean.age_change, resolution), size) for p in clean.params[:k]]
    )
    truth, ident = np.stack(targets[:k]), np.stack(inputs[:k])
    variants = {s.variant: np.stack(outputs[s.variant][:k]) for s in students}
    block = artifact_block(
        truth, {"identity": ident, **{f"student_{v}": o for v, o in variants.items()}}, hair, "true_edit"
    )
    block["region"] = (
        "hair: the pixels the renderer paints with hair colour on both the face and its truly aged version, "
        "2 px off the outline (hair_region)"
    )
    if teacher_samples:
        seeds, edits = teacher_samples
        z = z_from_seeds(seeds, z_dim).double().numpy()
        masks = np.stack(
            [
                _resize_mask(
                    hair_region(params_from_z(zi, clean.aligned), clean.age_change, resolution), size
                )
                for zi in z
            ]
        )
        own = artifact_figures(edits, edits, masks)
        block["teacher_samples"] = {"n": len(seeds), **own.as_dict()}
        block["ratio_to_teacher_samples"] = {
            name: {
                "hf_energy_region": ratio_of(fig["hf_energy_region"], own.hf_energy_region),
                "blemish_peak": ratio_of(fig["blemish_peak"], own.blemish_peak),
            }
            for name, fig in block["paths"].items()
            if name.startswith("student_")
        }
    return {
        **block,
        **write_artifact_pictures(
            out,
            "clean_",
            truth,
            variants,
            hair,
            {
                **{f"student {v}": o for v, o in variants.items()},
                "true edit (renderer)": truth,
                "input": ident,
            },
            "true edit",
        ),
    }


def evaluate_clean_renders(
    opts: EvaluateOptions,
    G: torch.nn.Module,
    direction: torch.Tensor,
    spec: EditSpec,
    students: list[Student],
    scoring: Scoring | None,
    size: tuple[int, int],
    teacher_change: float | None,
    out: Path,
    teacher_samples: tuple[list[int], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The toy domain's clean renders against the renderer's true edit (see training/toyfaces/clean_renders.py);
    ``teacher_samples`` (held-out seeds, the teacher's edits at the students' size) give the teacher's own artifact
    level in the hair."""
    from training.toyfaces.attributes import ADULT_AGE
    from training.toyfaces.clean_renders import clean_render_set
    from training.toyfaces.teacher import trained_aligned

    if not (G.checkpoint_info.get("metadata") or {}).get("toyfaces"):
        raise FieldError(
            (),
            f"{{clean_renders}}: {spec.teacher} is not a toy-face teacher (distill toyfaces train-teacher); "
            "clean renders with a true edit exist only in the toy domain",
            refs=("clean_renders",),
        )
    change = opts.clean_age_change if opts.clean_age_change is not None else teacher_change
    if change is None:
        raise FieldError(
            "clean_renders",
            "needs the teacher's age change: pass {scorer} with {attribute} age=INDEX, or {clean_age_change} X",
            refs=("scorer", "attribute", "clean_age_change"),
        )
    clean = clean_render_set(opts.clean_renders, G.img_resolution, G.z_dim, change, trained_aligned(G))
    inputs = [resize(im, size) for im in clean.inputs]
    targets_u8 = [resize(im, size) for im in clean.targets]
    targets = torch.cat([from_uint8(t) for t in targets_u8])
    ident = torch.cat([from_uint8(x) for x in inputs])
    identity_psnr = psnr(ident, targets)
    rows = [
        {"seed": sd, "age": a, "psnr_identity": p}
        for sd, a, p in zip(clean.seeds, clean.ages, identity_psnr.tolist(), strict=True)
    ]
    paths: dict[str, Any] = {
        "identity": {"psnr": spread(identity_psnr.tolist()), "ssim": spread(ssim(ident, targets).tolist())}
    }
    outputs: dict[str, list[np.ndarray]] = {}
    for s in students:
        outputs[s.variant] = [
            s(x) for x in tqdm(inputs, desc=f"clean renders, student {s.variant}", unit="img", leave=False)
        ]
        paths[f"student_{s.variant}"], per = against_truth(outputs[s.variant], targets, identity_psnr)
        for row, v in zip(rows, per, strict=True):
            row[f"psnr_{s.variant}"] = v
    legacy_n = min(opts.clean_legacy_num, len(inputs))
    if legacy_n:
        outputs["legacy"], seconds, _ = legacy_outputs(
            G,
            direction,
            spec,
            [seed_name(s) for s in clean.seeds[:legacy_n]],
            clean.inputs[:legacy_n],
            opts.legacy_steps,
            opts.vgg16,
            out / "legacy_clean",
        )
        outputs["legacy"] = [resize(im, size) for im in outputs["legacy"]]
        paths["legacy"], per = against_truth(outputs["legacy"], targets[:legacy_n], identity_psnr)
        paths["identity_on_legacy_seeds"] = {
            "psnr": spread(identity_psnr[:legacy_n].tolist()),
            "ssim": spread(ssim(ident[:legacy_n], targets[:legacy_n]).tolist()),
        }
        paths["student_fp32_on_legacy_seeds"], _ = against_truth(
            outputs["fp32"][:legacy_n], targets[:legacy_n], identity_psnr
        )
        for row, v in zip(rows, per, strict=False):
            row["psnr_legacy"] = v
    judged: dict[str, Any] = {}
    if scoring:
        a = scoring.attribute
        read = {
            "input": scoring.score(inputs),
            "truth": scoring.score(targets_u8),
            **{k: scoring.score(v) for k, v in outputs.items()},
        }

        def col(name: str, key: str, n: int | None = None) -> np.ndarray:
            return np.asarray([r[key] for r in read[name][:n]], dtype=np.float64)

        for name, images in outputs.items():
            n = len(images)
            others = {o: (col("input", o, n), col(name, o, n)) for o in scoring.others}
            judged[name if name == "legacy" else f"student_{name}"] = edit_figures(
                col("input", a, n), col("truth", a, n), col(name, a, n), 1.0, others
            )
        for name, per_image in read.items():
            for row, record in zip(rows, per_image, strict=False):
                row[f"{name}.{a}"] = record[a]
    atomic_write_text(out / "clean_per_image.csv", per_image_csv(rows))
    n = min(GRID_ROWS, len(inputs))
    grid_rows = [
        [inputs[i], targets_u8[i], *[outputs[k][i] for k in outputs if i < len(outputs[k])]] for i in range(n)
    ]
    save_image(out / "clean_grid.png", make_grid(grid_rows))
    return {
        "n": len(inputs),
        "seeds": {"start": clean.seeds[0], "stop": clean.seeds[-1] + 1, "adults_only": True},
        "ages": {"min": ADULT_AGE, "max": round(1.0 - change, 6)},
        "capped": evaluate_capped_renders(G, students, size, change, len(inputs), trained_aligned(G)),
        "aligned": clean.aligned,
        "age_change": change,
        "age_change_source": "--clean-age-change"
        if opts.clean_age_change is not None
        else "the teacher's mean age change on the held-out seeds, read by the scorer",
        "paths": paths,
        "age_judge": judged,
        "success_fraction": SUCCESS_FRACTION,
        "artifacts": clean_artifacts(
            out,
            clean,
            inputs,
            targets_u8,
            outputs,
            students,
            G.img_resolution,
            size,
            G.z_dim,
            teacher_samples,
        ),
        "grid": {
            "file": "clean_grid.png",
            "columns": [
                "clean render",
                "true edit (renderer)",
                *[f"student {k}" if k != "legacy" else "legacy" for k in outputs],
            ],
        },
    }


def evaluate_capped_renders(
    G: torch.nn.Module,
    students: list[Student],
    size: tuple[int, int],
    change: float,
    ageable: int,
    aligned: bool,
) -> dict[str, Any]:
    """The students on the adults the renderer cannot age by the full ``change`` (age above 1 - change), measured
    apart from the headline set: as many as the age scale gives them beside ``ageable`` faces."""
    from training.toyfaces.attributes import ADULT_AGE
    from training.toyfaces.clean_renders import clean_render_set

    num = max(1, round(ageable * change / (1.0 - change - ADULT_AGE)))
    top = clean_render_set(num, G.img_resolution, G.z_dim, change, aligned, capped=True)
    inputs = [resize(im, size) for im in top.inputs]
    targets = torch.cat([from_uint8(resize(t, size)) for t in top.targets])
    ident = torch.cat([from_uint8(x) for x in inputs])
    identity_psnr = psnr(ident, targets)
    paths: dict[str, Any] = {
        "identity": {"psnr": spread(identity_psnr.tolist()), "ssim": spread(ssim(ident, targets).tolist())}
    }
    for s in students:
        outputs = [
            s(x) for x in tqdm(inputs, desc=f"capped renders, student {s.variant}", unit="img", leave=False)
        ]
        paths[f"student_{s.variant}"], _ = against_truth(outputs, targets, identity_psnr)
    return {
        "n": num,
        "seeds": {"start": top.seeds[0], "stop": top.seeds[-1] + 1},
        "ages": {"min": round(1.0 - change, 6), "max": 1.0},
        "paths": paths,
    }
