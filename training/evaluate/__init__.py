"""`distill evaluate`: how close a distilled student comes to its teacher's edit, and how much faster it is.

For held-out teacher seeds (never used to make the student's training pairs) it renders the teacher's
original and edited image (seed -> z exactly as `distill pairs` does, the entry's truncation,
direction, alpha and W+ layers), runs the student on the original through ONNX Runtime on the CPU
(fp32 and every requested variant present in the entry; at the entry's native size, the teacher
image resized when the sizes differ) and, on the first ``--legacy-num`` seeds, the legacy path the
student replaces (project the original into W, add the direction, synthesize).

Figures (REPORT_DIR/report.json, rendered in REPORT_DIR/report.md with image grids):

- fidelity: PSNR and SSIM of each path's output against the teacher's edited image (mean, p10/p50/p90);
- with an attribute scorer (any ONNX regressor, as `distill filter` takes): *edit success*, the share of
  images on which the attribute moves (in the direction the teacher moves it on average) by at least
  half the teacher's own change on that image, and *preservation*, the mean absolute change of the other
  attributes between the original and the output; the teacher itself is the reference row;
- latency per image, measured in the same run on this machine: every ONNX Runtime variant (batch 1)
  and the legacy projection with its step count, and the speedups.

REPORT_DIR/per_image.csv holds the figures behind every aggregate, one line per seed: ``psnr_<path>``,
``ssim_<path>``, ``seconds_legacy`` and the scorer's outputs as ``<path>.<name>`` (``original.age``,
``teacher.age``, ``fp32.age``, ``legacy.age``, ...).

Images compared are what a user gets: uint8 pictures, the student fed the uint8 original. An output
identical to the teacher's edit scores 126.02 dB (the PSNR floor of metrics.psnr's mse clamp).
Legacy outputs are cached per seed in REPORT_DIR/legacy/ with their timing, so an interrupted run
resumes without re-projecting (the report says how many were reused).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from tqdm import tqdm

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import DistillError
from core.runfiles import PAIRS_MANIFEST
from editing.directions import apply_direction, load_direction
from editing.images import from_uint8, load_image, make_grid, save_image, to_uint8
from engines.base import EngineSpec
from engines.ort import OrtEngine
from model_zoo.registry import MANIFEST, ModelEntry, get_entry, load_entry
from model_zoo.schema import provenance, resolve_provenance
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
from training.devices import exact_float32, pick_device
from training.directions import file_sha256, z_from_seeds
from training.manifest import read_manifest
from training.metrics import psnr, ssim
from training.onnx_scorer import OnnxScorer
from training.options import add_scorer_input_arguments, options_from_args
from training.variants import cpu_description

DEFAULT_NUM = 500
HELD_OUT_SEED0 = 1_000_000  # default first evaluation seed: far above the seeds `distill pairs` starts from
SUCCESS_FRACTION = 0.5  # success: the output moves the attribute by at least this share of the teacher's move
GRID_ROWS = 4
BATCH = 8
WARMUP_RUNS = 2


# ----------------------------------------------------------------------------------------------
# What is evaluated: the entry, its edit, the seeds.


@dataclass(frozen=True)
class EditSpec:
    """The teacher edit the student was distilled from, read from the entry's manifest."""

    teacher: Path
    direction: Path
    alpha: float
    layers: tuple[int, int]
    normalize: bool
    truncation: float
    attribute: str | None


def resolve_entry(text: str, root: str | None) -> ModelEntry:
    """A zoo entry folder given by path, or an entry name in ``root``; checksums verified either way."""
    path = Path(text)
    if (path / MANIFEST).is_file():
        entry = load_entry(path)
        entry.verify()
        return entry
    return get_entry(text, root)


def edit_spec(entry: ModelEntry, truncation: float | None = None) -> EditSpec:
    """The teacher, direction, alpha, layers and truncation of ``entry``; DistillError naming what is missing."""
    m = entry.spec
    where = entry.path / MANIFEST
    if entry.teacher_path is None or entry.direction_path is None:
        missing = " and ".join(k for k in ("teacher", "direction") if getattr(m, k) is None)
        raise DistillError(
            f"{where}: model {entry.name!r} has no {missing}; evaluation renders the teacher's edit. Re-export it with "
            f"`distill export RUN --out {entry.path} --teacher TEACHER --direction DIRECTION --alpha A --layers START:STOP`"
        )
    alpha, layers, normalize = m.direction_edit()
    psi = truncation if truncation is not None else m.truncation
    if psi is None:
        raise DistillError(f"{where}: no 'truncation' recorded; pass the psi the pairs were made with (--truncation 0.7)")
    return EditSpec(teacher=entry.teacher_path, direction=entry.direction_path, alpha=alpha, layers=layers,
                    normalize=normalize, truncation=float(psi), attribute=m.edit.attribute)


def dataset_seeds(entry: ModelEntry, override: str | None = None) -> tuple[list[int] | None, str]:
    """The seeds of the pair dataset the student was trained on (None when unknown), and where they came from."""
    text = override or entry.spec.data.dataset
    if not text:
        return None, "unknown: the manifest names no dataset (pass --dataset DATASET to check the seeds)"
    root = Path(text) if override else resolve_provenance(text)
    if not (root / PAIRS_MANIFEST).is_file():
        if override:
            raise DistillError(f"--dataset {root}: not a pair dataset (no manifest.jsonl)")
        return None, f"unknown: the training dataset {root} is not on this machine (pass --dataset DATASET)"
    return sorted(r.seed for r in read_manifest(root)), provenance(root.resolve())


def parse_seeds(text: str) -> tuple[int, int]:
    """``"1000000:1000500"`` -> (1000000, 1000500), the half-open range [START, STOP)."""
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected START:STOP, e.g. 1000000:1000500") from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: need 0 <= START < STOP")
    return start, stop


def choose_seeds(requested: tuple[int, int] | None, num: int | None, trained: list[int] | None) -> list[int]:
    """The evaluation seeds: the first ``num`` of ``requested`` (all of it when ``num`` is None), or by default
    ``num`` seeds from :data:`HELD_OUT_SEED0` (above every training seed). Refuses any overlap with ``trained``."""
    if num is not None and num < 1:
        raise DistillError(f"--num {num}: need at least one seed")
    if requested is None:
        start = HELD_OUT_SEED0
        if trained and trained[-1] >= start:
            start = (trained[-1] // HELD_OUT_SEED0 + 1) * HELD_OUT_SEED0
        seeds = list(range(start, start + (num or DEFAULT_NUM)))
    else:
        seeds = list(range(*requested))
        if num is not None:
            if num > len(seeds):
                raise DistillError(f"--seeds {requested[0]}:{requested[1]} holds {len(seeds)} seeds, fewer than --num {num}")
            seeds = seeds[:num]
    if trained:
        used = sorted(set(seeds).intersection(trained))
        if used:
            raise DistillError(
                f"--seeds: {len(used)} of the evaluation seeds (e.g. {used[0]}) made the student's training pairs "
                f"(dataset seeds {trained[0]}..{trained[-1]}); choose a held-out range, e.g. "
                f"--seeds {trained[-1] + 1}:{trained[-1] + 1 + len(seeds)}"
            )
    return seeds


# ----------------------------------------------------------------------------------------------
# Scoring and statistics.


def spread(values: list[float] | np.ndarray) -> dict[str, float]:
    """n, mean and the 10th/50th/90th percentiles."""
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "mean": float(v.mean()), "p10": float(np.percentile(v, 10)),
            "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90))}


def latency(seconds: list[float]) -> dict[str, float]:
    """Per-image wall time: n, mean, p50 and p95 in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"n": int(ms.size), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95))}


def edit_figures(orig: np.ndarray, teacher: np.ndarray, out: np.ndarray, sign: float,
                 others: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Edit success, mean attribute change and preservation of one path against the teacher, per image arrays.

    ``orig``/``teacher``/``out``: the attribute on the original, the teacher's edit and this path's output;
    ``sign``: +1 when the teacher raises the attribute on average, -1 when it lowers it; ``others``: name ->
    (value on the original, value on the output). Success needs a teacher change in the intended direction.
    """
    rise_t = sign * (teacher - orig)
    rise = sign * (out - orig)
    success = (rise_t > 0) & (rise >= SUCCESS_FRACTION * rise_t)
    changes = {name: float(np.abs(b - a).mean()) for name, (a, b) in others.items()}
    return {
        "n": int(orig.size), "edit_success": float(success.mean()), "mean_change": float(rise.mean()),
        "preservation": float(np.mean(list(changes.values()))) if changes else None, "other_changes": changes,
    }


# ----------------------------------------------------------------------------------------------
# The three paths.


class Student:
    """One ONNX variant of the student in ONNX Runtime on the CPU: the service's engine (engines.ort.OrtEngine)."""

    def __init__(self, variant: str, path: Path, threads: int) -> None:
        self.variant = variant
        self.path = path
        self.engine = OrtEngine(EngineSpec("onnxruntime", "cpu", variant, variant), path, intra_op_threads=threads)
        self.seconds: list[float] = []

    def __call__(self, image: np.ndarray, strength: float | None = None) -> np.ndarray:
        """uint8 [H,W,3] -> uint8 [H,W,3] (a strength-conditioned student at ``strength``, default 1.0: the
        edit's own alpha)."""
        s = None if strength is None else np.asarray([strength], np.float32)
        y = self.engine.run(from_uint8(image).numpy(), s)
        return to_uint8(torch.from_numpy(np.asarray(y)))[0]

    def timed_run(self, x: np.ndarray) -> None:
        """One timed batch-1 run of a prepared float32 input; the time goes to ``seconds``."""
        t0 = time.perf_counter()
        self.engine.run(x)
        self.seconds.append(time.perf_counter() - t0)


def time_students(students: list[Student], images: list[np.ndarray]) -> None:
    """Per-image latency of every variant on the same inputs, side by side: after ``WARMUP_RUNS`` untimed
    runs each, every image goes through every variant in turn (the order rotating per image), so slow
    spells of a shared machine hit all variants alike. Timed apart from the teacher's torch work."""
    inputs = [from_uint8(im).numpy() for im in images]
    for s in students:
        for _ in range(WARMUP_RUNS):
            s.engine.run(inputs[0])
    for i, x in enumerate(tqdm(inputs, desc="student latency", unit="img")):
        for k in range(len(students)):
            students[(i + k) % len(students)].timed_run(x)


def engine_latency(entry: ModelEntry, variants: list[str], images: list[np.ndarray], threads: int) -> list[dict[str, Any]]:
    """Median batch-1 latency of each evaluated variant in each engine this machine has (ONNX Runtime, OpenVINO
    f32/bf16/int8), with its PSNR against ONNX Runtime fp32 on up to 4 of the timing inputs (engines/)."""
    from engines.measure import engine_table

    x = np.concatenate([from_uint8(im).numpy() for im in images[:4]]).astype(np.float32)
    return engine_table({v: entry.variant_path(v) for v in variants}, entry.input_size, x,
                        repeats=max(3, min(len(images), 20)), threads=threads,
                        variants={v: entry.variants[v] for v in variants})


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H,W,3] to (H, W) with PIL bicubic (the service's resize); unchanged when already that size."""
    if image.shape[:2] == tuple(size):
        return image
    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC))


@torch.no_grad()
def teacher_pairs(G: torch.nn.Module, direction: torch.Tensor, spec: EditSpec, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 originals and edits [N,R,R,3] for ``seeds``, exactly as `distill pairs` renders them."""
    z = z_from_seeds(seeds, G.z_dim).to(G.w_avg.device)
    ws = G.mapping(z, truncation_psi=spec.truncation)
    ws_edit = apply_direction(ws, direction, spec.alpha, spec.layers, spec.normalize)
    images = to_uint8(G.synthesis(torch.cat([ws, ws_edit]), noise_mode="const"))
    return images[: len(seeds)], images[len(seeds):]


def legacy_key(spec: EditSpec, steps: int, vgg16: str | None, device: torch.device) -> str:
    """Identifies the legacy settings, so cached projections are reused only for the same edit, steps and device."""
    parts = [file_sha256(spec.teacher), file_sha256(spec.direction), spec.alpha, spec.layers, spec.normalize,
             spec.truncation, steps, file_sha256(vgg16) if vgg16 else None, "projector-seed-0", device.type]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def legacy_outputs(G: torch.nn.Module, direction: torch.Tensor, spec: EditSpec, seeds: list[int],
                   originals: list[np.ndarray], steps: int, vgg16: str | None, cache: Path
                   ) -> tuple[list[np.ndarray], list[float], int]:
    """Project, edit and synthesize each original; (outputs, seconds each, how many came from ``cache``)."""
    from editing.projector import legacy_edit, w_stats

    device = G.w_avg.device
    key = legacy_key(spec, steps, vgg16, device)
    cache.mkdir(parents=True, exist_ok=True)
    outputs, seconds, reused = [], [], 0
    warm = False
    bar = tqdm(list(zip(seeds, originals, strict=True)), desc=f"legacy ({steps} steps)", unit="img")
    for seed, original in bar:
        image_path, record_path = cache / f"{seed:08d}.png", cache / f"{seed:08d}.json"
        if record_path.is_file() and image_path.is_file():
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") == key:
                outputs.append(np.array(load_image(image_path)))
                seconds.append(float(record["seconds"]))
                reused += 1
                continue
        if not warm:  # as the service does before it turns ready: W statistics, lazy imports, first steps
            w_stats(G)
            legacy_edit(G, from_uint8(original), direction, spec.alpha, spec.layers, steps=2, normalize=spec.normalize,
                        vgg16_path=vgg16, seed=0)
            warm = True
        t0 = time.perf_counter()
        edited = legacy_edit(G, from_uint8(original), direction, spec.alpha, spec.layers, steps=steps,
                             normalize=spec.normalize, vgg16_path=vgg16, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        out = to_uint8(edited)[0]
        save_image(image_path, out)
        atomic_write_json(record_path, {"seed": seed, "seconds": elapsed, "steps": steps, "key": key})
        outputs.append(out)
        seconds.append(elapsed)
        bar.set_postfix(s_per_img=f"{elapsed:.1f}")
    return outputs, seconds, reused


def against_truth(outputs: list[np.ndarray], targets: torch.Tensor, identity: torch.Tensor) -> tuple[dict[str, Any], list[float]]:
    """PSNR/SSIM of ``outputs`` against ``targets``, their gain over the identity's per-image PSNR ``identity``."""
    t = torch.cat([from_uint8(o) for o in outputs])
    p = psnr(t, targets)
    gain = p - identity[: len(outputs)]
    return {"psnr": spread(p.tolist()), "ssim": spread(ssim(t, targets).tolist()), "gain_over_identity_db": spread(gain.tolist()),
            "beats_identity": float((gain > 0).float().mean())}, p.tolist()


def write_artifact_pictures(out: Path, prefix: str, references: np.ndarray, students: dict[str, np.ndarray],
                            region: np.ndarray, columns: dict[str, np.ndarray], reference: str) -> dict[str, Any]:
    """PREFIXartifact_maps.png: a row per student variant, its blemish map | its error map against ``references`` | the
    references' own blemish map (heat maps, fixed scale 0..MAP_LEVELS levels); PREFIXzoom_grid.png: the first faces
    cropped where ``region`` acts most, ``ZOOM``x nearest neighbour, one column per picture of ``columns``."""
    own = blemish_map(references)
    save_image(out / f"{prefix}artifact_maps.png",
               make_grid([map_tiles([blemish_map(o), error_map(o, references), own]) for o in students.values()]))
    y, x, h, w = busiest_window(region)
    faces = min(GRID_ROWS, len(references))
    save_image(out / f"{prefix}zoom_grid.png", make_grid(zoom_rows(list(columns.values()), (y, x, h, w), faces)))
    return {"maps": {"file": f"{prefix}artifact_maps.png", "rows": [f"student {v}" for v in students],
                     "columns": ["student blemish map (median |Laplacian|)", f"student error map (median |output - {reference}|)",
                                 f"{reference}'s own blemish map"], "scale_levels": [0, MAP_LEVELS]},
            "zoom": {"file": f"{prefix}zoom_grid.png", "columns": list(columns), "faces": faces, "factor": ZOOM,
                     "crop": {"y": y, "x": x, "h": h, "w": w}}}


def teacher_artifacts(out: Path, inputs: np.ndarray, edits: np.ndarray, students: dict[str, np.ndarray]) -> dict[str, Any]:
    """Artifact figures (training/artifacts.py) of the identity and every student variant against the teacher's edit,
    beside the edit's own, inside the edit region (where the edit moved its input); artifact_maps.png, zoom_grid.png."""
    region = edit_region(inputs, edits)
    block = artifact_block(edits, {"identity": inputs, **{f"student_{v}": o for v, o in students.items()}}, region, "teacher")
    block["region"] = f"where the teacher's edit moved the input by more than {EDIT_REGION_LEVELS:g} levels"
    return {**block, **write_artifact_pictures(out, "", edits, students, region, {
        **{f"student {v}": o for v, o in students.items()}, "teacher edit": edits, "input": inputs}, "teacher edit")}


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 127


def clean_artifacts(out: Path, clean: Any, inputs: list[np.ndarray], targets: list[np.ndarray],
                    outputs: dict[str, list[np.ndarray]], students: list[Student], resolution: int, size: tuple[int, int],
                    z_dim: int, teacher_samples: tuple[list[int], np.ndarray] | None) -> dict[str, Any]:
    """Artifact figures of the identity and every student variant against the renderer's true edit, in the hair (of the
    face or its aged version: where an age edit acts); the teacher's own edit on its held-out samples, in their hair,
    as the teacher's level; clean_artifact_maps.png, clean_zoom_grid.png."""
    from training.directions import z_from_seeds
    from training.toyfaces.clean_renders import hair_region
    from training.toyfaces.renderer import params_from_z

    k = min(ARTIFACT_FACES, len(inputs))
    hair = np.stack([_resize_mask(hair_region(p, clean.age_change, resolution), size) for p in clean.params[:k]])
    truth, ident = np.stack(targets[:k]), np.stack(inputs[:k])
    variants = {s.variant: np.stack(outputs[s.variant][:k]) for s in students}
    block = artifact_block(truth, {"identity": ident, **{f"student_{v}": o for v, o in variants.items()}}, hair, "true_edit")
    block["region"] = ("hair: the pixels the renderer paints with hair colour on both the face and its truly aged version, "
                       "2 px off the outline (hair_region)")
    if teacher_samples:
        seeds, edits = teacher_samples
        z = z_from_seeds(seeds, z_dim).double().numpy()
        masks = np.stack([_resize_mask(hair_region(params_from_z(zi, clean.aligned), clean.age_change, resolution), size)
                          for zi in z])
        own = artifact_figures(edits, edits, masks)
        block["teacher_samples"] = {"n": len(seeds), **own.as_dict()}
        block["ratio_to_teacher_samples"] = {
            name: {"hf_energy_region": ratio_of(fig["hf_energy_region"], own.hf_energy_region),
                   "blemish_peak": ratio_of(fig["blemish_peak"], own.blemish_peak)}
            for name, fig in block["paths"].items() if name.startswith("student_")}
    return {**block, **write_artifact_pictures(out, "clean_", truth, variants, hair, {
        **{f"student {v}": o for v, o in variants.items()}, "true edit (renderer)": truth, "input": ident}, "true edit")}


def evaluate_clean_renders(opts: EvaluateOptions, G: torch.nn.Module, direction: torch.Tensor, spec: EditSpec,
                           students: list[Student], scoring: Scoring | None, size: tuple[int, int],
                           teacher_change: float | None, out: Path,
                           teacher_samples: tuple[list[int], np.ndarray] | None = None) -> dict[str, Any]:
    """The toy domain's clean renders against the renderer's true edit (see training/toyfaces/clean_renders.py);
    ``teacher_samples`` (held-out seeds, the teacher's edits at the students' size) give the teacher's own artifact
    level in the hair."""
    from training.toyfaces.attributes import ADULT_AGE
    from training.toyfaces.clean_renders import clean_render_set
    from training.toyfaces.teacher import trained_aligned

    if not (G.checkpoint_info.get("metadata") or {}).get("toyfaces"):
        raise DistillError(f"--clean-renders: {spec.teacher} is not a toy-face teacher (distill toyfaces train-teacher); "
                           "clean renders with a true edit exist only in the toy domain")
    change = opts.clean_age_change if opts.clean_age_change is not None else teacher_change
    if change is None:
        raise DistillError("--clean-renders needs the teacher's age change: pass --scorer with --attribute age=INDEX, "
                           "or --clean-age-change X")
    clean = clean_render_set(opts.clean_renders, G.img_resolution, G.z_dim, change, trained_aligned(G))
    inputs = [resize(im, size) for im in clean.inputs]
    targets_u8 = [resize(im, size) for im in clean.targets]
    targets = torch.cat([from_uint8(t) for t in targets_u8])
    ident = torch.cat([from_uint8(x) for x in inputs])
    identity_psnr = psnr(ident, targets)
    rows = [{"seed": sd, "age": a, "psnr_identity": p} for sd, a, p in zip(clean.seeds, clean.ages, identity_psnr.tolist(), strict=True)]
    paths: dict[str, Any] = {"identity": {"psnr": spread(identity_psnr.tolist()), "ssim": spread(ssim(ident, targets).tolist())}}
    outputs: dict[str, list[np.ndarray]] = {}
    for s in students:
        outputs[s.variant] = [s(x) for x in tqdm(inputs, desc=f"clean renders, student {s.variant}", unit="img", leave=False)]
        paths[f"student_{s.variant}"], per = against_truth(outputs[s.variant], targets, identity_psnr)
        for row, v in zip(rows, per, strict=True):
            row[f"psnr_{s.variant}"] = v
    legacy_n = min(opts.clean_legacy_num, len(inputs))
    if legacy_n:
        outputs["legacy"], seconds, _ = legacy_outputs(G, direction, spec, clean.seeds[:legacy_n], clean.inputs[:legacy_n],
                                                       opts.legacy_steps, opts.vgg16, out / "legacy_clean")
        outputs["legacy"] = [resize(im, size) for im in outputs["legacy"]]
        paths["legacy"], per = against_truth(outputs["legacy"], targets[:legacy_n], identity_psnr)
        paths["identity_on_legacy_seeds"] = {"psnr": spread(identity_psnr[:legacy_n].tolist()),
                                             "ssim": spread(ssim(ident[:legacy_n], targets[:legacy_n]).tolist())}
        paths["student_fp32_on_legacy_seeds"], _ = against_truth(outputs["fp32"][:legacy_n], targets[:legacy_n], identity_psnr)
        for row, v in zip(rows, per, strict=False):
            row["psnr_legacy"] = v
    judged: dict[str, Any] = {}
    if scoring:
        a = scoring.attribute
        read = {"input": scoring.score(inputs), "truth": scoring.score(targets_u8),
                **{k: scoring.score(v) for k, v in outputs.items()}}

        def col(name: str, key: str, n: int | None = None) -> np.ndarray:
            return np.asarray([r[key] for r in read[name][:n]], dtype=np.float64)

        for name, images in outputs.items():
            n = len(images)
            others = {o: (col("input", o, n), col(name, o, n)) for o in scoring.others}
            judged[name if name == "legacy" else f"student_{name}"] = edit_figures(
                col("input", a, n), col("truth", a, n), col(name, a, n), 1.0, others)
        for name, per_image in read.items():
            for row, record in zip(rows, per_image, strict=False):
                row[f"{name}.{a}"] = record[a]
    atomic_write_text(out / "clean_per_image.csv", per_image_csv(rows))
    n = min(GRID_ROWS, len(inputs))
    grid_rows = [[inputs[i], targets_u8[i], *[outputs[k][i] for k in outputs if i < len(outputs[k])]] for i in range(n)]
    save_image(out / "clean_grid.png", make_grid(grid_rows))
    return {"n": len(inputs), "seeds": {"start": clean.seeds[0], "stop": clean.seeds[-1] + 1, "adults_only": True},
            "ages": {"min": ADULT_AGE, "max": round(1.0 - change, 6)},
            "capped": evaluate_capped_renders(G, students, size, change, len(inputs), trained_aligned(G)),
            "aligned": clean.aligned, "age_change": change,
            "age_change_source": "--clean-age-change" if opts.clean_age_change is not None
            else "the teacher's mean age change on the held-out seeds, read by the scorer",
            "paths": paths, "age_judge": judged, "success_fraction": SUCCESS_FRACTION,
            "artifacts": clean_artifacts(out, clean, inputs, targets_u8, outputs, students, G.img_resolution, size, G.z_dim,
                                         teacher_samples),
            "grid": {"file": "clean_grid.png", "columns": ["clean render", "true edit (renderer)", *[
                f"student {k}" if k != "legacy" else "legacy" for k in outputs]]}}


def evaluate_capped_renders(G: torch.nn.Module, students: list[Student], size: tuple[int, int], change: float,
                            ageable: int, aligned: bool) -> dict[str, Any]:
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
    paths: dict[str, Any] = {"identity": {"psnr": spread(identity_psnr.tolist()), "ssim": spread(ssim(ident, targets).tolist())}}
    for s in students:
        outputs = [s(x) for x in tqdm(inputs, desc=f"capped renders, student {s.variant}", unit="img", leave=False)]
        paths[f"student_{s.variant}"], _ = against_truth(outputs, targets, identity_psnr)
    return {"n": num, "seeds": {"start": top.seeds[0], "stop": top.seeds[-1] + 1},
            "ages": {"min": round(1.0 - change, 6), "max": 1.0}, "paths": paths}


# ----------------------------------------------------------------------------------------------
# The evaluation.


@dataclass
class Scoring:
    """The scorer and which of its outputs is the edited attribute and which are the others."""

    scorer: OnnxScorer
    attribute: str
    others: list[str]
    path: Path
    cache: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def score(self, images: list[np.ndarray] | np.ndarray) -> list[dict[str, float]]:
        out: list[dict[str, float]] = []
        for i in range(0, len(images), 32):
            out += self.scorer.score(np.stack(images[i : i + 32]))
        return out


def build_scoring(opts: EvaluateOptions) -> Scoring | None:
    """The --scorer options -> Scoring, or None without --scorer."""
    if not opts.scorer:
        if opts.attribute or opts.other:
            raise DistillError("--attribute/--other need --scorer MODEL.onnx (the model that reads the attributes)")
        return None
    if not opts.attribute:
        raise DistillError("--scorer needs --attribute NAME=INDEX: the scorer output the edit should change, e.g. age=0")
    named = [_name_index(opts.attribute, "--attribute")] + [_name_index(t, "--other") for t in opts.other]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise DistillError(f"--attribute/--other: repeated names {names}")
    scorer = OnnxScorer(opts.scorer, dict(named), input_size=opts.input_size, mean=opts.mean, std=opts.std,
                        activation=opts.activation, providers=["CPUExecutionProvider"])
    return Scoring(scorer, names[0], names[1:], Path(opts.scorer))


def _name_index(text: str, flag: str) -> tuple[str, int]:
    name, sep, index = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, int(index)
    except ValueError:
        raise DistillError(f"{flag} {text!r}: expected NAME=INDEX (the scorer output's column), e.g. age=0") from None


@dataclass
class EvaluateOptions:
    """What ``distill evaluate`` does: one field per flag (``seeds`` as (START, STOP), ``variants`` as a list)."""

    entry: str  # a model-zoo entry name or an entry folder
    out: str | os.PathLike
    model_zoo: str | None = None
    dataset: str | None = None
    seeds: tuple[int, int] | None = None
    num: int | None = None
    truncation: float | None = None
    scorer: str | None = None
    attribute: str | None = None  # NAME=INDEX
    other: list[str] = field(default_factory=list)  # NAME=INDEX each
    input_size: int | tuple[int, int] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    activation: str = "none"
    legacy_num: int = 20
    legacy_steps: int = 200
    variants: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    timing_num: int = 100
    clean_renders: int = 0
    clean_legacy_num: int = 10
    clean_age_change: float | None = None
    vgg16: str | None = None
    device: str = "cpu"
    threads: int = 0
    strengths: list[float] | None = None  # a strength-conditioned entry: None = -1, -0.5, 0.5, 1 within its range
    strength_num: int = 100  # seeds of the strength section

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in ("fp32", "fp16", "int8")]
        if unknown or "fp32" not in self.variants:
            raise DistillError(f"--variants {','.join(self.variants)!r}: a comma list of fp32 (required), int8, fp16")
        if self.legacy_num < 0 or self.clean_legacy_num < 0 or self.legacy_steps < 1 or self.timing_num < 1:
            raise DistillError("--legacy-num and --clean-legacy-num must be >= 0, --legacy-steps and --timing-num >= 1")


def evaluate(opts: EvaluateOptions) -> dict[str, Any]:
    """Run the evaluation ``opts`` describes; write its report folder and return the report dict."""
    from networks.stylegan2 import load_generator

    entry = resolve_entry(opts.entry, opts.model_zoo)
    spec = edit_spec(entry, opts.truncation)
    trained, trained_source = dataset_seeds(entry, opts.dataset)
    seeds = choose_seeds(opts.seeds, opts.num, trained)
    present = [v for v in opts.variants if v in entry.manifest["variants"]]
    missing = [v for v in opts.variants if v not in present]
    scoring = build_scoring(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.threads:
        torch.set_num_threads(opts.threads)

    device = pick_device(opts.device)
    exact_float32()
    G = load_generator(spec.teacher, device=device)
    direction = load_direction(spec.direction, G.num_ws, G.w_dim).to(device)
    size = entry.input_size
    students = [Student(v, entry.variant_path(v), opts.threads) for v in present]

    legacy_num = min(opts.legacy_num, len(seeds))
    grid_rows = min(GRID_ROWS, len(seeds))
    keep_first = max(grid_rows, legacy_num)  # originals, edits and outputs kept for the grid and the legacy path
    timing_inputs: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    kept_orig, kept_edit, kept_student = [], [], {v: [] for v in present}
    art_inputs, art_edits, art_student = [], [], {v: [] for v in present}  # the artifact figures' first faces
    scores: dict[str, list[dict[str, float]]] = {k: [] for k in ["original", "teacher", *present]}
    bar = tqdm(total=len(seeds), desc="teacher + student", unit="img")
    for i in range(0, len(seeds), BATCH):
        batch = seeds[i : i + BATCH]
        originals, edits = teacher_pairs(G, direction, spec, batch)
        inputs = [resize(im, size) for im in originals]
        edits_sized = [resize(im, size) for im in edits]
        targets = torch.cat([from_uint8(im) for im in edits_sized])
        batch_rows = [{"seed": s} for s in batch]
        same = torch.cat([from_uint8(x) for x in inputs])
        for row, p, q in zip(batch_rows, psnr(same, targets).tolist(), ssim(same, targets).tolist(), strict=True):
            row["psnr_identity"], row["ssim_identity"] = p, q
        for s in students:
            outputs = [s(x) for x in inputs]
            t = torch.cat([from_uint8(o) for o in outputs])
            for row, p, q in zip(batch_rows, psnr(t, targets).tolist(), ssim(t, targets).tolist(), strict=True):
                row[f"psnr_{s.variant}"], row[f"ssim_{s.variant}"] = p, q
            if scoring:
                scores[s.variant] += scoring.score(outputs)
            kept_student[s.variant] += outputs[: max(0, keep_first - i)]
            art_student[s.variant] += outputs[: max(0, ARTIFACT_FACES - i)]
        if scoring:
            scores["original"] += scoring.score(originals)
            scores["teacher"] += scoring.score(edits)
        kept_orig += list(originals[: max(0, keep_first - i)])
        kept_edit += list(edits[: max(0, keep_first - i)])
        art_inputs += inputs[: max(0, ARTIFACT_FACES - i)]
        art_edits += edits_sized[: max(0, ARTIFACT_FACES - i)]
        timing_inputs += inputs[: max(0, opts.timing_num - i)]
        rows += batch_rows
        bar.update(len(batch))
    bar.close()
    time_students(students, timing_inputs)

    legacy: dict[str, Any] | None = None
    legacy_images: list[np.ndarray] = []
    if legacy_num:
        legacy_images, seconds, reused = legacy_outputs(
            G, direction, spec, seeds[:legacy_num], kept_orig[:legacy_num], opts.legacy_steps, opts.vgg16,
            out / "legacy")
        t = torch.cat([from_uint8(o) for o in legacy_images])
        targets = torch.cat([from_uint8(e) for e in kept_edit[:legacy_num]])
        for row, p, q, sec in zip(rows, psnr(t, targets).tolist(), ssim(t, targets).tolist(), seconds, strict=False):
            row["psnr_legacy"], row["ssim_legacy"], row["seconds_legacy"] = p, q, sec
        if scoring:
            scores["legacy"] = scoring.score(legacy_images)
        legacy = {"n": legacy_num, "steps": opts.legacy_steps, "seconds": seconds, "reused": reused,
                  "distance": "VGG16 perceptual" if opts.vgg16 else "pyramid pixel (no --vgg16 weights)"}

    if scoring:
        for name, per_image in scores.items():
            for row, record in zip(rows, per_image, strict=False):
                for key, value in record.items():
                    row[f"{name}.{key}"] = value

    report = build_report(opts, entry, spec, G, seeds, trained, trained_source, present, missing, rows, scoring,
                          students, legacy)
    report["artifacts"] = teacher_artifacts(out, np.stack(art_inputs), np.stack(art_edits),
                                            {v: np.stack(o) for v, o in art_student.items()})
    if opts.clean_renders:
        change = report["edit"].get("teacher_mean_change") if report["edit"]["available"] else None
        report["clean_renders"] = evaluate_clean_renders(opts, G, direction, spec, students, scoring, size, change, out,
                                                         (seeds[:len(art_edits)], np.stack(art_edits)))
    if entry.spec.strength is not None:
        from training.evaluate_strength import default_strengths, evaluate_strengths

        trained = entry.spec.strength.range
        report["strengths"] = evaluate_strengths(
            G, direction, spec, students, scoring, size, seeds[: max(1, opts.strength_num)],
            opts.strengths or default_strengths(trained), trained, out)
    report["engines"] = engine_latency(entry, present, timing_inputs, opts.threads)
    report["grid"] = write_grid(out, seeds[:grid_rows], kept_orig, kept_edit, kept_student, legacy_images)
    atomic_write_text(out / "per_image.csv", per_image_csv(rows))
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def build_report(opts: EvaluateOptions, entry: ModelEntry, spec: EditSpec, G: torch.nn.Module, seeds: list[int],
                 trained: list[int] | None, trained_source: str, present: list[str], missing: list[str],
                 rows: list[dict[str, Any]], scoring: Scoring | None, students: list[Student],
                 legacy: dict[str, Any] | None) -> dict[str, Any]:
    """Every figure of the report, computed from the per-image rows."""
    legacy_n = legacy["n"] if legacy else 0
    fidelity: dict[str, Any] = {}
    for v in present:
        fidelity[f"student_{v}"] = {"psnr": spread([r[f"psnr_{v}"] for r in rows]),
                                    "ssim": spread([r[f"ssim_{v}"] for r in rows])}
    fidelity["identity"] = {"psnr": spread([r["psnr_identity"] for r in rows]),
                            "ssim": spread([r["ssim_identity"] for r in rows])}
    if legacy:
        sub = rows[:legacy_n]
        fidelity["legacy"] = {"psnr": spread([r["psnr_legacy"] for r in sub]), "ssim": spread([r["ssim_legacy"] for r in sub])}
        fidelity["student_fp32_on_legacy_seeds"] = {"psnr": spread([r["psnr_fp32"] for r in sub]),
                                                    "ssim": spread([r["ssim_fp32"] for r in sub])}
        fidelity["identity_on_legacy_seeds"] = {"psnr": spread([r["psnr_identity"] for r in sub]),
                                                "ssim": spread([r["ssim_identity"] for r in sub])}

    edit: dict[str, Any] = {"available": False,
                            "note": "edit success and preservation need an attribute scorer: pass --scorer MODEL.onnx "
                                    "--attribute NAME=INDEX [--other NAME=INDEX ...]"}
    if scoring:
        a = scoring.attribute

        def col(name: str, key: str, n: int | None = None) -> np.ndarray:
            return np.asarray([r[f"{name}.{key}"] for r in rows[:n]], dtype=np.float64)

        mean_teacher_change = float((col("teacher", a) - col("original", a)).mean())
        sign = -1.0 if mean_teacher_change < 0 else 1.0

        def figures(name: str, n: int | None = None) -> dict[str, Any]:
            others = {o: (col("original", o, n), col(name, o, n)) for o in scoring.others}
            return edit_figures(col("original", a, n), col("teacher", a, n), col(name, a, n), sign, others)

        paths = {"teacher": figures("teacher"), **{f"student_{v}": figures(v) for v in present}}
        if legacy:
            paths["teacher_on_legacy_seeds"] = figures("teacher", legacy_n)
            paths["legacy"] = figures("legacy", legacy_n)
            paths["student_fp32_on_legacy_seeds"] = figures("fp32", legacy_n)
        edit = {"available": True, "attribute": a, "others": scoring.others, "direction": "rise" if sign > 0 else "fall",
                "teacher_mean_change": mean_teacher_change, "success_fraction": SUCCESS_FRACTION, "paths": paths,
                "scorer": {"file": str(scoring.path), "sha256": file_sha256(scoring.path),
                           "outputs": scoring.scorer.outputs, "input_size": list(scoring.scorer.input_size),
                           "mean": scoring.scorer.mean.reshape(-1).tolist(), "std": scoring.scorer.std.reshape(-1).tolist(),
                           "activation": scoring.scorer.activation}}

    timing: dict[str, Any] = {f"student_{s.variant}": latency(s.seconds) for s in students}
    speedup: dict[str, dict[str, float]] = {}
    if legacy:
        timing["legacy"] = {**latency(legacy["seconds"]), "steps": legacy["steps"], "reused_from_cache": legacy["reused"]}
        for s in students:
            speedup[f"legacy_vs_student_{s.variant}"] = _ratios(timing["legacy"], timing[f"student_{s.variant}"])
    if "int8" in present:
        speedup["student_fp32_vs_student_int8"] = _ratios(timing["student_fp32"], timing["student_int8"])

    return {
        "format": "distill-evaluation/1",
        "command": command_line(opts),
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cpu": cpu_description(), "platform": platform.platform(), "ort_threads": opts.threads or "default",
                    "torch_threads": torch.get_num_threads(),
                    "torch_device": _device_name(G.w_avg.device), "onnxruntime": ort.__version__,
                    "torch": torch.__version__, "provider": "CPUExecutionProvider"},
        "entry": {"name": entry.name, "path": str(entry.path), "description": entry.manifest.get("description"),
                  "input_size": list(entry.input_size), "variants_evaluated": present, "variants_missing": missing},
        "teacher": {"file": str(spec.teacher), "sha256": file_sha256(spec.teacher), "resolution": int(G.img_resolution),
                    "truncation": spec.truncation, "noise_mode": "const"},
        "direction": {"file": str(spec.direction), "attribute": spec.attribute, "alpha": spec.alpha,
                      "layers": list(spec.layers), "normalize": spec.normalize},
        "seeds": {"start": seeds[0], "stop": seeds[-1] + 1, "count": len(seeds),
                  "seed_to_z": "torch.randn(z_dim, generator=torch.Generator('cpu').manual_seed(seed))",
                  "training_seeds": None if trained is None else {"min": trained[0], "max": trained[-1], "count": len(trained)},
                  "training_seeds_source": trained_source, "held_out_verified": trained is not None},
        "legacy": None if not legacy else {k: legacy[k] for k in ("n", "steps", "reused", "distance")},
        "fidelity": fidelity,
        "edit": edit,
        "latency": timing,
        "speedup": speedup,
    }


def _device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def _ratios(slow: dict[str, float], fast: dict[str, float]) -> dict[str, float]:
    return {"mean": slow["mean_ms"] / fast["mean_ms"], "p50": slow["p50_ms"] / fast["p50_ms"]}


def command_line(opts: EvaluateOptions) -> str:
    """The command that reproduces this report, every option spelled out."""
    argv = ["distill", "evaluate", opts.entry, "--out", str(opts.out)]
    if opts.model_zoo:
        argv += ["--model-zoo", opts.model_zoo]
    if opts.dataset:
        argv += ["--dataset", opts.dataset]
    if opts.seeds:
        argv += ["--seeds", f"{opts.seeds[0]}:{opts.seeds[1]}"]
    if opts.num is not None:
        argv += ["--num", str(opts.num)]
    if opts.truncation is not None:
        argv += ["--truncation", str(opts.truncation)]
    if opts.scorer:
        argv += ["--scorer", opts.scorer, "--attribute", opts.attribute]
        for o in opts.other:
            argv += ["--other", o]
        if opts.input_size:
            size = opts.input_size
            argv += ["--input-size", str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"]
        argv += ["--mean", *map(str, opts.mean), "--std", *map(str, opts.std), "--activation", opts.activation]
    argv += ["--legacy-num", str(opts.legacy_num), "--legacy-steps", str(opts.legacy_steps), "--variants", ",".join(opts.variants),
             "--timing-num", str(opts.timing_num)]
    if opts.clean_renders:
        argv += ["--clean-renders", str(opts.clean_renders), "--clean-legacy-num", str(opts.clean_legacy_num)]
        if opts.clean_age_change is not None:
            argv += ["--clean-age-change", str(opts.clean_age_change)]
    if opts.vgg16:
        argv += ["--vgg16", opts.vgg16]
    if opts.threads:
        argv += ["--threads", str(opts.threads)]
    if opts.device != "cpu":
        argv += ["--device", opts.device]
    return shlex.join(argv)


# ----------------------------------------------------------------------------------------------
# Output files.


def write_grid(out: Path, seeds: list[int], originals: list[np.ndarray], edits: list[np.ndarray],
               students: dict[str, list[np.ndarray]], legacy: list[np.ndarray]) -> dict[str, Any]:
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
        lines.append(",".join("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]))
                              for k in keys))
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _label(path: str, report: dict[str, Any]) -> str:
    legacy = report.get("legacy") or {}
    labels = {"teacher": "teacher (reference)", "legacy": f"legacy projection ({legacy.get('steps')} steps)",
              "teacher_on_legacy_seeds": f"teacher (reference), first {legacy.get('n')} seeds",
              "student_fp32_on_legacy_seeds": f"student fp32, first {legacy.get('n')} seeds",
              "identity": "identity (input unchanged: the do-nothing baseline)",
              "identity_on_legacy_seeds": f"identity, first {legacy.get('n')} seeds"}
    return labels.get(path, path.replace("student_", "student "))


def headline(report: dict[str, Any]) -> list[str]:
    """A few sentences with the figures a reader looks for first (all from the tables below)."""
    fid, lat, ed = report["fidelity"], report["latency"], report["edit"]
    f32 = fid["student_fp32"]
    ident = fid["identity"]
    out = [f"- Student (fp32) vs the teacher's edit on {f32['psnr']['n']} held-out seeds: PSNR {_f(f32['psnr']['mean'])} dB, "
           f"SSIM {_f(f32['ssim']['mean'], 4)} (do-nothing baseline, the input unchanged: {_f(ident['psnr']['mean'])} dB, "
           f"SSIM {_f(ident['ssim']['mean'], 4)})."]
    if "legacy" in fid:
        lg, same = fid["legacy"], fid["student_fp32_on_legacy_seeds"]
        verdict = "closer to" if same["psnr"]["mean"] >= lg["psnr"]["mean"] else "further from"
        out.append(f"- On the first {lg['psnr']['n']} seeds the student is {verdict} the teacher's edit than the legacy "
                   f"projection: PSNR {_f(same['psnr']['mean'])} vs {_f(lg['psnr']['mean'])} dB, SSIM "
                   f"{_f(same['ssim']['mean'], 4)} vs {_f(lg['ssim']['mean'], 4)}.")
    if ed["available"]:
        paths = ed["paths"]
        parts = [f"{_label(k, report)} {_f(paths[k]['edit_success'] * 100, 1)}%" for k in
                 ("teacher", "student_fp32", "student_int8", "legacy") if k in paths]
        out.append(f"- Edit success ({ed['attribute']}): {', '.join(parts)}.")
    c = report.get("clean_renders")
    if c:
        st, ident = c["paths"]["student_fp32"], c["paths"]["identity"]
        judge = c["age_judge"].get("student_fp32")
        out.append(f"- On {c['n']} clean renders of ageable adults (pictures no teacher drew) against the renderer's true edit: student "
                   f"fp32 {_f(st['psnr']['mean'])} dB vs the identity's {_f(ident['psnr']['mean'])} dB (gain "
                   f"{_f(st['gain_over_identity_db']['mean'])} dB, better than the identity on "
                   f"{_f(st['beats_identity'] * 100, 1)}% of them)"
                   + (f"; the age judge sees the age rise on {_f(judge['edit_success'] * 100, 1)}%." if judge else "."))
    art = report.get("artifacts")
    if art:
        f, t = art["paths"]["student_fp32"], art["paths"]["teacher"]
        r = art["ratio_to_reference"]["student_fp32"]
        out.append(f"- Artifacts of the student (fp32) against the teacher's edit: HF energy in the edit region "
                   f"{_f(f['hf_energy_region'], 1)} (the teacher's own {_f(t['hf_energy_region'], 1)}: "
                   f"{_f(r['hf_energy_region'])}x), fixed-pixel blemish peak {_f(f['blemish_peak'], 1)} (the teacher's own "
                   f"{_f(t['blemish_peak'], 1)}: {_f(r['blemish_peak'])}x).")
    if c and c.get("artifacts"):
        f, t = c["artifacts"]["paths"]["student_fp32"], c["artifacts"]["paths"]["true_edit"]
        out.append(f"- In the hair of the clean renders: student fp32 HF energy {_f(f['hf_energy_region'], 1)}, blemish peak "
                   f"{_f(f['blemish_peak'], 1)} (the true edit's {_f(t['hf_energy_region'], 1)} and {_f(t['blemish_peak'], 1)}"
                   + (f"; the teacher's own samples' {_f(c['artifacts']['teacher_samples']['hf_energy_region'], 1)} and "
                      f"{_f(c['artifacts']['teacher_samples']['blemish_peak'], 1)}" if c["artifacts"].get("teacher_samples")
                      else "") + ").")
    parts = [f"{_label(k, report)} {_f(v['mean_ms'])} ms" for k, v in lat.items()]
    out.append(f"- Mean latency per image on this machine: {', '.join(parts)}.")
    if "legacy_vs_student_fp32" in report["speedup"]:
        out.append(f"- Speedup of the student (fp32) over the legacy path: {_f(report['speedup']['legacy_vs_student_fp32']['mean'], 1)}x"
                   + (f"; INT8: {_f(report['speedup']['legacy_vs_student_int8']['mean'], 1)}x"
                      if "legacy_vs_student_int8" in report["speedup"] else "") + ".")
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the tables of report.json (same figures, rounded), the machine, the command, the grid."""
    e, t, d, s = report["entry"], report["teacher"], report["direction"], report["seeds"]
    lines = [
        f"# Evaluation of `{e['name']}`", "",
        f"{e.get('description') or ''}", "",
        f"Generated by `distill evaluate` on {report['created']}:", "", "```", report["command"], "```", "",
        "## Setup", "",
        f"- Machine: {report['machine']['cpu']}; ONNX Runtime {report['machine']['onnxruntime']} "
        f"({report['machine']['provider']}, intra-op threads: {report['machine']['ort_threads']}); "
        f"torch {report['machine']['torch']} on {report['machine']['torch_device']} ({report['machine']['torch_threads']} "
        "CPU threads) for the teacher and the legacy path.",
        f"- Teacher: `{t['file']}` ({t['resolution']} px, truncation {t['truncation']}, sha256 {t['sha256'][:12]}).",
        f"- Edit: `{d['file']}` ({d['attribute'] or 'unnamed'}), alpha {d['alpha']}, W+ layers {d['layers'][0]}:{d['layers'][1]}"
        f"{', normalized' if d['normalize'] else ''}.",
        f"- Student: input {e['input_size'][0]}x{e['input_size'][1]}, variants {', '.join(e['variants_evaluated'])}"
        + (f" (not in the entry: {', '.join(e['variants_missing'])})" if e["variants_missing"] else "")
        + (f"; the teacher's {t['resolution']} px images are resized (bicubic) to its input size, and its outputs "
           "compared with the resized edit" if e["input_size"] != [t["resolution"], t["resolution"]] else "") + ".",
        f"- Seeds: {s['count']} held-out teacher seeds {s['start']}..{s['stop'] - 1} (`{s['seed_to_z']}`). "
        + (f"Training pairs used seeds {s['training_seeds']['min']}..{s['training_seeds']['max']} "
           f"({s['training_seeds']['count']} seeds, from {s['training_seeds_source']}): no overlap."
           if s["held_out_verified"] else f"Held-out status not verified: training seeds {s['training_seeds_source']}."),
    ]
    if report["legacy"]:
        lg = report["legacy"]
        lines.append(f"- Legacy path: the first {lg['n']} seeds, {lg['steps']} projection steps, distance: {lg['distance']}"
                     + (f"; {lg['reused']} projections (and their times) reused from an earlier run's cache in legacy/ "
                        "(delete it to re-time)." if lg["reused"] else "."))
    lines += ["", "## Headline", "", *headline(report)]
    lines += ["", "## Fidelity to the teacher's edit", "",
              "PSNR (dB) and SSIM of each output against the teacher's edited image.", "",
              "| path | n | PSNR mean | p10 | p50 | p90 | SSIM mean | p10 | p50 | p90 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path, fig in report["fidelity"].items():
        p, q = fig["psnr"], fig["ssim"]
        lines.append(f"| {_label(path, report)} | {p['n']} | " + " | ".join(_f(p[k]) for k in ("mean", "p10", "p50", "p90"))
                     + " | " + " | ".join(_f(q[k], 4) for k in ("mean", "p10", "p50", "p90")) + " |")

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
            "between the original and the output (lower is better).", "",
            "| path | n | edit success | mean change | preservation |", "|---|---:|---:|---:|---:|",
        ]
        for path, fig in ed["paths"].items():
            lines.append(f"| {_label(path, report)} | {fig['n']} | {_f(fig['edit_success'] * 100, 1)}% | "
                         f"{_f(fig['mean_change'], 4)} | {_f(fig['preservation'], 4)} |")

    lines += ["", "## Latency per image", "",
              "Measured in this run on this machine, batch 1: ONNX Runtime `session.run` for the student, "
              "projection + edit + synthesis for the legacy path.", "",
              "| path | n | mean (ms) | p50 (ms) | p95 (ms) |", "|---|---:|---:|---:|---:|"]
    for path, fig in report["latency"].items():
        lines.append(f"| {_label(path, report)} | {fig['n']} | {_f(fig['mean_ms'])} | {_f(fig['p50_ms'])} | {_f(fig['p95_ms'])} |")
    if report["speedup"]:
        lines += ["", "| speedup | mean latency ratio | p50 latency ratio |", "|---|---:|---:|"]
        for name, value in report["speedup"].items():
            slow, fast = name.split("_vs_")
            lines.append(f"| {_label(fast, report)} over {_label(slow, report)} | {_f(value['mean'], 1)}x | {_f(value['p50'], 1)}x |")

    if report.get("engines"):
        from engines.measure import format_table

        lines += ["", "## Latency per engine", "",
                  f"Each variant in each inference engine on this machine, batch 1 at {report['entry']['input_size'][0]}x"
                  f"{report['entry']['input_size'][1]}: median ms, and PSNR against ONNX Runtime fp32 on the timing inputs "
                  f"(the service serves the fastest within 35 dB). Measured on {report['engines'][0]['measured_on']}.",
                  "", *format_table(report["engines"])]
    lines += ["", "## Artifacts against the teacher's edit", "",
              f"On the first {report['artifacts']['n']} held-out seeds; the region is {report['artifacts']['region']}.", "",
              *artifact_markdown(report["artifacts"], report)]
    if report.get("clean_renders"):
        lines += clean_markdown(report["clean_renders"], report)
    if report.get("strengths"):
        from training.evaluate_strength import strength_markdown

        lines += strength_markdown(report["strengths"])
    g = report["grid"]
    lines += ["", "## Images", "", f"Seeds {', '.join(map(str, g['seeds']))}, one per row; columns: "
              f"{' | '.join(g['columns'])}.", "", f"![{' | '.join(g['columns'])}]({g['file']})", "",
              "Per-image figures: [per_image.csv](per_image.csv); every figure: [report.json](report.json).", ""]
    return "\n".join(lines)


def artifact_markdown(a: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """An artifact block of report.json as a table (the reference's own figures first), what each figure means, and
    its pictures."""
    labels = {"teacher": "teacher edit (reference)", "true_edit": "true edit (renderer, reference)"}
    region = "hair" if a["reference"] == "true_edit" else "edit region"
    lines = [f"| path | HF energy | HF energy, {region} | blemish peak (y, x) | error peak (y, x) | HF, {region} / reference "
             "| blemish / reference |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = dict(a["paths"])
    if a.get("teacher_samples"):
        rows = {a["reference"]: rows.pop(a["reference"]), "teacher_samples": a["teacher_samples"], **rows}
        labels["teacher_samples"] = f"teacher's own edit (its samples, {a['teacher_samples']['n']} held-out seeds)"
    for name, f in rows.items():
        r = a["ratio_to_reference"].get(name, {})
        hf, blemish = ("-" if r.get(k) is None else f"{r[k]:.2f}x" for k in ("hf_energy_region", "blemish_peak"))
        lines.append(f"| {labels.get(name) or _label(name, report)} | {_f(f['hf_energy'], 1)} | {_f(f['hf_energy_region'], 1)} | "
                     f"{_f(f['blemish_peak'], 1)} ({f['blemish_at'][0]}, {f['blemish_at'][1]}) | {_f(f['error_peak'], 1)} "
                     f"({f['error_at'][0]}, {f['error_at'][1]}) | {hf} | {blemish} |")
    m, z = a["maps"], a["zoom"]
    lines += ["", "- HF energy: the mean squared 4-neighbour Laplacian in 8-bit levels, over the whole picture and over the "
              f"{region}: flat areas score ~0, edges and speckle a lot; the reference's own figure is the level to match.",
              f"- Blemish peak: per pixel the median over the faces of the output's |Laplacian|, at its worst pixel where the "
              f"{region} holds on at least half the faces: a blemish drawn at the same place on every face survives the median, "
              "content that moves does not.",
              "- Error peak: per pixel the median over the faces of |output - reference|, at its worst pixel: a fixed-place "
              "error of the path (the reference's own is 0).",
              "", f"Fixed-pattern maps ({', '.join(m['columns'])}; one row per {', '.join(m['rows'])}), heat scale "
              f"{m['scale_levels'][0]:g} (black) .. {m['scale_levels'][1]:g} levels (white):", "",
              f"![fixed-pattern maps]({m['file']})", "",
              f"The first {z['faces']} faces cropped to y {z['crop']['y']}..{z['crop']['y'] + z['crop']['h'] - 1}, x "
              f"{z['crop']['x']}..{z['crop']['x'] + z['crop']['w'] - 1} (where the {region} holds most often), {z['factor']}x "
              f"nearest neighbour; columns: {' | '.join(z['columns'])}:", "", f"![{' | '.join(z['columns'])}]({z['file']})", ""]
    return lines


def clean_markdown(c: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """The clean-render section of report.md."""
    lines = ["", "## Clean renders against the renderer's true edit", "",
             f"{c['n']} held-out clean renders of ageable adults (age {_f(c['ages']['min'], 2)}..{_f(c['ages']['max'], 3)}, "
             f"seeds {c['seeds']['start']}..{c['seeds']['stop'] - 1}, "
             f"{'aligned' if c['aligned'] else 'unaligned'} domain): the toy domain's photographs, which no teacher drew. "
             f"The truth is the renderer's picture of the same face with age raised by {c['age_change']:+.3f} "
             f"({c['age_change_source']}). Gain: mean of the per-image PSNR difference to the identity.", "",
             "| path | n | PSNR vs true edit | gain over identity (dB) | beats identity | SSIM |",
             "|---|---:|---:|---:|---:|---:|"]
    for path, fig in c["paths"].items():
        gain = fig.get("gain_over_identity_db")
        label = (f"{_label(path.replace('_on_legacy_seeds', ''), report).split(' (')[0]}, first {fig['psnr']['n']} clean renders"
                 if path.endswith("_on_legacy_seeds") else _label(path, report))
        lines.append(f"| {label} | {fig['psnr']['n']} | {_f(fig['psnr']['mean'])} | "
                     f"{_f(gain['mean']) if gain else '-'} | {_f(fig['beats_identity'] * 100, 1) + '%' if gain else '-'} | "
                     f"{_f(fig['ssim']['mean'], 4)} |")
    if c["age_judge"]:
        lines += ["", f"Age judge (the scorer): share of images whose age rises by at least {c['success_fraction']:g} of the "
                  "rise it reads between the input and the true edit; preservation: mean absolute change of the other "
                  "attributes.", "", "| path | n | age rise seen | mean rise | preservation |", "|---|---:|---:|---:|---:|"]
        for path, fig in c["age_judge"].items():
            lines.append(f"| {_label(path, report)} | {fig['n']} | {_f(fig['edit_success'] * 100, 1)}% | "
                         f"{_f(fig['mean_change'], 4)} | {_f(fig['preservation'], 4)} |")
    g = c["grid"]
    lines += ["", f"![{' | '.join(g['columns'])}]({g['file']})", "",
              "Per-image figures: [clean_per_image.csv](clean_per_image.csv).", "",
              "### Artifacts in the hair against the true edit", "",
              f"On the first {c['artifacts']['n']} clean renders; the region is the {c['artifacts']['region']}"
              + (", and for the teacher's own edit the hair of the faces its held-out samples draw (`params_from_z`)"
                 if c["artifacts"].get("teacher_samples") else "") + ".", "",
              *artifact_markdown(c["artifacts"], report)]
    if c.get("capped"):
        t = c["capped"]
        lines += ["### The top of the age scale, measured apart", "",
                  f"The renderer's age scale ends at 1, so a face older than {_f(t['ages']['min'], 3)} cannot be drawn aged "
                  f"by {c['age_change']:+.3f}: its \"true edit\" is capped, near the top the input itself. The headline set "
                  f"above holds the ageable adults (age {_f(c['ages']['min'], 2)}..{_f(c['ages']['max'], 3)}); these "
                  f"{t['n']} older ones (seeds {t['seeds']['start']}..{t['seeds']['stop'] - 1}, as many as the age scale "
                  "gives them) are scored against the capped truth. Where that truth is the input itself any real edit "
                  "loses many dB: the student ages these faces further, as the teacher does.", "",
                  "| path | n | PSNR vs capped truth | gain over identity (dB) | beats identity |", "|---|---:|---:|---:|---:|"]
        for path, fig in t["paths"].items():
            gain = fig.get("gain_over_identity_db")
            lines.append(f"| {_label(path, report)} | {fig['psnr']['n']} | {_f(fig['psnr']['mean'])} | "
                         f"{_f(gain['mean']) if gain else '-'} | {_f(fig['beats_identity'] * 100, 1) + '%' if gain else '-'} |")
        lines.append("")
    return lines


# ----------------------------------------------------------------------------------------------
# The command.


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="measure a model-zoo student against its teacher's edit and the legacy projection",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("entry", metavar="ENTRY_OR_PATH", help="model-zoo entry name or entry folder (with teacher and direction)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.json, grid.png, per_image.csv)")
    p.add_argument("--model-zoo", help="zoo root for an entry name (default $DISTILL_MODEL_ZOO or the model_zoo package)")
    p.add_argument("--dataset", help="the student's pair dataset, to check the seeds are held out (default: the manifest's)")
    p.add_argument("--seeds", type=parse_seeds, metavar="START:STOP",
                   help=f"held-out teacher seeds [START, STOP) (default: --num seeds from {HELD_OUT_SEED0:,}, above the training seeds)")
    p.add_argument("--num", type=int, help=f"number of seeds (default {DEFAULT_NUM}, or all of --seeds)")
    p.add_argument("--truncation", type=float, help="truncation psi (default: the entry's)")
    p.add_argument("--scorer", metavar="MODEL.onnx", help="ONNX attribute model for edit success and preservation")
    p.add_argument("--attribute", metavar="NAME=INDEX", help="scorer output the edit changes, e.g. age=0")
    p.add_argument("--other", metavar="NAME=INDEX", action="append", default=[],
                   help="another scorer output that the edit should preserve (repeatable)")
    add_scorer_input_arguments(p)
    p.add_argument("--legacy-num", type=int, default=20, help="seeds also edited the legacy way (default 20; 0: skip)")
    p.add_argument("--legacy-steps", type=int, default=200, help="projection steps of the legacy path (default 200)")
    p.add_argument("--variants", default="fp32,int8", help="student variants to run when the entry has them (default fp32,int8)")
    p.add_argument("--timing-num", type=int, default=100,
                   help="inputs (the first seeds' originals) timed per student variant (default 100)")
    p.add_argument("--clean-renders", type=int, default=0, metavar="N",
                   help="toy-face teachers only: also run every path on N held-out adult clean renders and compare with "
                        "the renderer's truly aged face (default 0: skip)")
    p.add_argument("--clean-legacy-num", type=int, default=10, metavar="N",
                   help="of the clean renders, how many also go the legacy way (default 10; 0: skip)")
    p.add_argument("--clean-age-change", type=float, default=None, metavar="X",
                   help="age rise of the true edit (default: the teacher's mean change read by --scorer)")
    p.add_argument("--vgg16", help="torchvision VGG16 weights for the projector's perceptual distance (default: pixel pyramid)")
    p.add_argument("--device", default="cpu",
                   help="torch device of the teacher and the legacy path: cpu (default, beside ONNX Runtime's CPU "
                        "provider), cuda or auto")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime and torch threads (default 0: their defaults)")
    p.add_argument("--strengths", type=_strength_list, default=None, metavar="S,S,...",
                   help="strength-conditioned entries: the strengths of the strength section, relative (1 = the "
                        "entry's alpha), written --strengths=-1,-0.5,0.5,1 (default: those within the trained range)")
    p.add_argument("--strength-num", type=int, default=100, help="seeds of the strength section (default 100)")
    p.set_defaults(func=run)


def _strength_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of numbers, e.g. -1,-0.5,0.5,1") from None


def run(args: argparse.Namespace) -> int:
    """``distill evaluate``: the options from the flags."""
    report = evaluate(options_from_args(EvaluateOptions, args, variants=[v.strip() for v in args.variants.split(",") if v.strip()]))
    out = Path(args.out)
    fp32 = report["fidelity"]["student_fp32"]["psnr"]["mean"]
    print(f"wrote {out / 'report.md'}: {report['seeds']['count']} seeds, student fp32 PSNR {fp32:.2f} dB vs the teacher's edit, "
          f"{report['latency']['student_fp32']['mean_ms']:.1f} ms/img"
          + (f", legacy {report['latency']['legacy']['mean_ms'] / 1e3:.2f} s/img" if "legacy" in report["latency"] else ""))
    if report.get("clean_renders"):
        c = report["clean_renders"]["paths"]
        print(f"clean renders: student fp32 {c['student_fp32']['psnr']['mean']:.2f} dB vs identity {c['identity']['psnr']['mean']:.2f} dB "
              "against the renderer's true edit")
    return 0

