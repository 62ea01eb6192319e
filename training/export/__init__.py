"""`distill export`: a trained Pix2PixHD student -> ONNX (+ fp16/int8 variants) -> a model-zoo entry.

The ONNX graph takes ``input`` [N,3,H,W] float32 in [-1,1] and returns ``output`` of the same shape,
with batch, height and width dynamic (H and W multiples of the generator's stride). Every export is
checked against PyTorch on fresh random inputs at two sizes (one non-square) and batch 2; the max
abs difference goes into the manifest and an export above 1e-3 fails.

A strength-conditioned student (issue 14, ``--condition``) takes a second input, ``strength`` [N] float32
(relative: 1.0 = the edit's alpha); the manifest's ``strength`` records its trained range (the pair
dataset's ``alpha_range``) and default, and parity, variants' calibration and error use strengths over it.

The entry is assembled in a staging folder beside ``--out`` and moved into place at the end, so an
interrupted export never leaves a half-written entry (re-run the same command to start over), and a
re-export replaces the old entry in one rename.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.atomic import atomic_write_bytes
from core.errors import DistillError
from core.runfiles import CHECKPOINT, METRICS, PAIRS_MANIFEST, RUN_JSON, read_jsonl
from core.versions import versions as core_versions
from editing.images import make_grid, save_image, to_uint8
from engines.ort import cpu_session
from engines.select import MIN_PSNR_DB
from model_zoo.registry import (
    _NAME_RE,
    ALIGNMENTS,
    MANIFEST,
    ModelEntry,
    file_records,
    sha256_file,
    write_entry,
)
from model_zoo.schema import EntryManifest, FileRecord, StrengthSpec, provenance
from networks.pix2pixhd.conditional import is_conditional
from training.dataset import ImageGeometry, PairDataset, kept_rows, split_rows
from training.directions import parse_layers
from training.manifest import METADATA, read_manifest, read_metadata
from training.options import options_from_args
from training.variants import (
    VARIANT_FILES,
    VARIANT_PROVIDERS,
    VariantRefused,
    build_variant,
    run_session,
    timing_record,
)

OPSET = 17
PARITY_TOL = 1e-3
ONNX_SIZE_LIMIT = 2_000_000_000  # protobuf's 2 GiB ceiling on a single .onnx file, with margin
PREVIEW_ROWS = 4


@dataclass
class StudentSource:
    """What `distill export` starts from: the generator, where it came from, and the run's records."""

    generator: nn.Module
    checkpoint: Path
    run_dir: Path | None = None
    run_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> int:
        return int(self.generator.config.stride)


def load_source(path: str | os.PathLike) -> StudentSource:
    """A training run folder (``RUN/checkpoints/latest.pt`` + ``RUN/run.json``) or a generator checkpoint file."""
    from networks.pix2pixhd import load_generator

    path = Path(path)
    if path.is_dir():
        ckpt = path / CHECKPOINT
        if not ckpt.is_file():
            raise DistillError(
                f"{path}: not a training run (no checkpoints/latest.pt); train one with `distill train DATASET --out {path}` "
                "or pass a generator checkpoint file (e.g. latest_net_G.pth)"
            )
        meta: dict[str, Any] = {}
        run_json = path / RUN_JSON
        if run_json.is_file():
            try:
                meta = json.loads(run_json.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DistillError(f"{run_json}: not valid JSON ({e}); restore it or export {ckpt} directly") from e
        return StudentSource(load_generator(ckpt), ckpt, path, meta)
    if not path.exists():
        raise DistillError(f"{path}: no such run folder or checkpoint file")
    return StudentSource(load_generator(path), path)


def export_onnx(model: nn.Module, path: str | os.PathLike, example_size: tuple[int, int], opset: int = OPSET) -> Path:
    """Trace ``model`` (eval, CPU, float32) to ONNX at ``path`` with dynamic batch/height/width; atomic write."""
    model = model.eval().float().cpu()
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if n_bytes > ONNX_SIZE_LIMIT:
        raise DistillError(
            f"the generator has {n_bytes / 1e9:.2f} GB of weights, over ONNX's 2 GB single-file limit; "
            "export a smaller configuration (e.g. netG local with --ngf 32, as NVIDIA's 1024p recipe)"
        )
    example = torch.zeros(1, 3, *example_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    inputs, names, dynamic = (example,), ["input"], {"input": axes, "output": axes}
    if is_conditional(model):  # the strength-conditioned student: a second input, strength [N]
        inputs, names, dynamic = (example, torch.ones(1)), ["input", "strength"], {**dynamic, "strength": {0: "batch"}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, inputs, buf, dynamo=False, opset_version=opset, input_names=names,
            output_names=["output"], dynamic_axes=dynamic, do_constant_folding=True,
        )
    return atomic_write_bytes(path, buf.getvalue())


def parity_sizes(native: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """The native size and a small non-square size (both multiples of ``stride``) for the parity check."""
    h = stride * max(2, -(-64 // stride))
    other = (h, h + 2 * stride)
    return [tuple(native), other] if tuple(native) != other else [tuple(native), (h + stride, h)]


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, sizes: list[tuple[int, int]], *,
                 batch: int = 2, seed: int = 20240917, tol: float = PARITY_TOL,
                 strength_range: tuple[float, float] = (-1.0, 1.0)) -> dict[str, Any]:
    """Max |ONNX Runtime - PyTorch| on random [batch,3,H,W] inputs at each size (a conditional model with random
    strengths in ``strength_range``); DistillError above ``tol``."""
    session = cpu_session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    conditional = is_conditional(model)
    per_size = {}
    with torch.no_grad():
        for h, w in sizes:
            x = torch.rand(batch, 3, h, w, generator=gen) * 2 - 1
            s = strength_range[0] + torch.rand(batch, generator=gen) * (strength_range[1] - strength_range[0])
            ref = (model(x, s) if conditional else model(x)).numpy()
            out = run_session(session, x.numpy(), batch=batch, strengths=s.numpy() if conditional else None)
            assert out.shape == ref.shape, (out.shape, ref.shape)
            per_size[f"{h}x{w}"] = float(np.abs(out - ref).max())
    worst = max(per_size.values())
    if not worst <= tol:
        raise DistillError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch by {worst:.3g} (> {tol:g}) at {per_size}; "
            "the export is broken for this network (please report it with the checkpoint's config)"
        )
    return {"parity_max_abs_diff": worst, "parity_per_size": per_size, "parity_batch": batch, "parity_seed": seed,
            "parity_tolerance": tol, "parity_provider": "CPUExecutionProvider"}


def versions() -> dict[str, str]:
    """Library versions the export ran with (recorded in the manifest)."""
    return core_versions("torch", "onnx", "onnxruntime", "onnxconverter_common", "numpy")


# ----------------------------------------------------------------------------------------------------------
# The run's records: dataset, split, native size, metrics.


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x")) if "x" in text.lower() else (int(text), int(text))
    except ValueError:
        raise DistillError(f"--size {text!r}: expected HxW or one number, e.g. 512 or 512x384") from None
    return h, w


def _run_dataset(source: StudentSource, override: str | None) -> Path | None:
    """The pair dataset: --calibration, else the one run.json names (resolved against the run folder)."""
    if override:
        path = Path(override)
    elif source.run_meta.get("dataset"):
        path = Path(source.run_meta["dataset"])
        if not path.is_absolute() and source.run_dir is not None and not path.exists():
            path = source.run_dir / path
    else:
        return None
    if not (path / PAIRS_MANIFEST).is_file():
        flag = "--calibration" if override else f"{source.run_dir}/run.json's dataset"
        raise DistillError(f"{flag}: {path} is not a pair dataset (no manifest.jsonl); pass --calibration DATASET")
    return path


def _native_size(source: StudentSource, size_flag: str | None) -> tuple[tuple[int, int], str]:
    """(H, W) the student was trained at, and where that figure came from."""
    stride = source.stride
    if size_flag:
        size, origin = _parse_size(size_flag), "--size"
    elif _run_size(source.run_meta) is not None:
        size, origin = _run_size(source.run_meta), "run.json"
    else:
        size, origin = (512, 512), "assumed (no run.json; pass --size HxW)"
    if size[0] % stride or size[1] % stride or min(size) <= 0:
        raise DistillError(f"input size {size[0]}x{size[1]} ({origin}) is not a multiple of the generator stride {stride}")
    return size, origin


def _run_size(meta: dict[str, Any]) -> tuple[int, int] | None:
    """The training (H, W) recorded in run.json's ``data``, or None."""
    data = meta.get("data") or {}
    if "height" in data and "width" in data:
        return int(data["height"]), int(data["width"])
    return None


def _training_record(source: StudentSource) -> dict[str, Any]:
    """Manifest ``training``: checkpoint, config, progress and the last held-out PSNR/SSIM of the run."""
    cfg = source.generator.config
    meta = source.run_meta
    record: dict[str, Any] = {
        "checkpoint": provenance(source.checkpoint),
        "checkpoint_sha256": sha256_file(source.checkpoint),
        "config": dataclasses.asdict(cfg),
        "parameters": sum(p.numel() for p in source.generator.parameters()),
    }
    for key in ("preset", "status", "epoch", "global_step", "total_epochs"):
        if key in meta:
            record[key] = meta[key]
    heldout = dict(meta.get("metrics") or {})
    metrics = source.run_dir / METRICS if source.run_dir else None
    if metrics is not None and metrics.is_file():
        heldout = next((row for row in reversed(read_jsonl(metrics)) if "val_psnr" in row), heldout)
    record["heldout"] = {k: heldout[k] for k in ("val_psnr", "val_ssim", "val_l1", "n_val", "epoch", "step")
                         if k in heldout}
    return record


@dataclass
class DataViews:
    """Images drawn from the pair dataset for calibration (train inputs) and evaluation (held-out pairs)."""

    dataset: Path
    meta: dict[str, Any]
    calibration: list[np.ndarray]
    eval_inputs: np.ndarray
    eval_targets: np.ndarray
    eval_source: str
    counts: dict[str, int]
    sample_files: list[Path] = field(default_factory=list)
    calibration_strengths: list[float] | None = None  # pairs over a range of strengths: each image's own
    eval_strengths: np.ndarray | None = None


def _data_views(dataset: Path, source: StudentSource, size: tuple[int, int], n_calib: int, n_eval: int) -> DataViews:
    """Calibration images from the training side of the run's split and evaluation pairs from its held-out side."""
    meta = read_metadata(dataset) if (dataset / METADATA).is_file() else {}
    n_total = len(read_manifest(dataset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = kept_rows(dataset)
    options = source.run_meta.get("options") or {}
    val_fraction = float(options.get("val_fraction", 0.05))
    split_seed = int(options.get("seed", 0))
    train_rows, val_rows = split_rows(rows, val_fraction, split_seed)
    geometry = ImageGeometry(size[0], size[1], source.stride)
    calib_rows = train_rows[:n_calib]
    if val_rows:
        eval_rows, eval_source = val_rows[:n_eval], f"held-out split (val_fraction {val_fraction}, seed {split_seed})"
    else:
        eval_rows = train_rows[n_calib : n_calib + n_eval] or train_rows[-n_eval:]
        eval_source = "training pairs not used for calibration (the run has no held-out split)"
    calib = PairDataset(dataset, calib_rows, geometry)
    evals = PairDataset(dataset, eval_rows, geometry)
    calibration = [calib[i]["a"].numpy() for i in tqdm(range(len(calib)), desc="calibration images", leave=False)]
    items = [evals[i] for i in range(len(evals))]
    ranged = any(r.strength is not None for r in rows)
    return DataViews(
        calibration_strengths=[float(calib[i]["strength"]) for i in range(len(calib))] if ranged else None,
        eval_strengths=torch.stack([it["strength"] for it in items]).numpy() if ranged and items else None,
        dataset=dataset, meta=meta, calibration=calibration,
        eval_inputs=torch.stack([it["a"] for it in items]).numpy(),
        eval_targets=torch.stack([it["b"] for it in items]).numpy(),
        eval_source=eval_source,
        counts={"pairs_total": n_total, "pairs_kept": len(rows), "train_pairs": len(train_rows),
                "heldout_pairs": len(val_rows)},
        sample_files=[dataset / r.a for r in eval_rows[:PREVIEW_ROWS]],
    )


# ----------------------------------------------------------------------------------------------------------
# Teacher, direction, preview.


def _copy_into(src: Path, staging: Path, stem: str, what: str, flag: str) -> str:
    if not src.is_file():
        raise DistillError(f"{flag} {src}: the {what} file does not exist; pass its current path with {flag}")
    name = stem + "".join(src.suffixes[-1:])
    shutil.copyfile(src, staging / name)
    return name


def _portable(value: Any) -> Any:
    """``value`` with every absolute path string in it rewritten by :func:`provenance` (nested dicts and lists)."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return provenance(value)
    return value


def _copy_portable_json(src: Path, dst: Path) -> None:
    """Copy a JSON sidecar (the direction fit's record) into the entry, its build-machine paths made portable:
    a fit run before provenance paths existed records absolute ones, and an entry never carries those."""
    try:
        record = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DistillError(f"{src}: the direction's JSON record cannot be read ({e}); fix or remove it") from e
    dst.write_text(json.dumps(_portable(record), indent=2) + "\n", encoding="utf-8")


def _teacher_and_direction(opts: ExportOptions, views: DataViews | None, staging: Path) -> dict[str, Any]:
    """Copy the teacher and direction into the entry; their manifest records, the edit and the truncation."""
    meta = views.meta if views else {}
    t_meta, d_meta = (m if isinstance(m, dict) else {} for m in (meta.get("teacher"), meta.get("direction")))
    teacher_src = Path(opts.teacher) if opts.teacher else (Path(t_meta["path"]) if t_meta.get("path") else None)
    direction_src = Path(opts.direction) if opts.direction else (Path(d_meta["path"]) if d_meta.get("path") else None)
    alpha = opts.alpha if opts.alpha is not None else meta.get("alpha")
    layers = list(opts.layers) if opts.layers is not None else meta.get("layers")
    normalize = bool(opts.normalize or meta.get("normalize", False))
    attribute = opts.attribute or d_meta.get("attribute") or (direction_src.stem if direction_src else None)
    files: list[str] = []
    teacher = direction = None
    if teacher_src is not None:
        if not opts.teacher and t_meta.get("sha256") and teacher_src.is_file() and sha256_file(teacher_src) != t_meta["sha256"]:
            raise DistillError(
                f"{teacher_src}: this teacher changed since the pairs were generated (sha256 differs from {METADATA}); "
                "pass the original with --teacher PATH"
            )
        name = _copy_into(teacher_src, staging, "teacher", "teacher", "--teacher")
        files.append(name)
        teacher = {"file": name, "source": provenance(teacher_src)}
        teacher.update({k: t_meta[k] for k in ("z_dim", "w_dim", "num_ws") if k in t_meta})
    if direction_src is not None:
        if alpha is None or layers is None:
            raise DistillError("--direction needs the edit strength and layers: pass --alpha A --layers START:STOP")
        name = _copy_into(direction_src, staging, "direction", "direction", "--direction")
        files.append(name)
        sidecar = direction_src.with_suffix(".json")
        if sidecar.is_file() and sidecar != direction_src:
            _copy_portable_json(sidecar, staging / "direction.json")
            files.append("direction.json")
        direction = {"file": name, "normalize": normalize, "source": provenance(direction_src)}
        if d_meta.get("method"):
            direction["method"] = d_meta["method"]
    edit = {"attribute": attribute, "alpha": None if alpha is None else float(alpha),
            "layers": None if layers is None else [int(v) for v in layers]}
    return {"files": files, "teacher": teacher, "direction": direction, "edit": edit,
            "truncation": meta.get("truncation")}


def _copy_samples(views: DataViews | None, staging: Path, extra: list[str] | None = None) -> list[str]:
    """samples/: a few held-out input images (teacher originals, and ``extra`` pictures) for the service's demo page."""
    sources = ([] if views is None else list(views.sample_files)) + [Path(p) for p in extra or []]
    if not sources:
        return []
    for src in sources:
        if not src.is_file():
            raise DistillError(f"--samples {src}: no such image file")
    (staging / "samples").mkdir()
    names = []
    for src in sources:
        name = f"samples/{src.name}"
        shutil.copyfile(src, staging / name)
        names.append(name)
    return names


def _write_preview(onnx_path: Path, staging: Path, views: DataViews | None, size: tuple[int, int]) -> dict[str, Any]:
    """preview.png: input | student | teacher target on held-out pairs, else input | student on random inputs."""
    session = cpu_session(onnx_path)
    if views is not None:
        inputs, targets = views.eval_inputs[:PREVIEW_ROWS], views.eval_targets[:PREVIEW_ROWS]
        columns, origin = ["input", "student", "teacher target"], views.eval_source
    else:
        gen = torch.Generator().manual_seed(0)
        low = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
        inputs = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(-1, 1).numpy()
        targets = None
        columns, origin = ["input", "student"], "random smooth-noise inputs: no dataset was known (pass --calibration DATASET)"
    strengths = views.eval_strengths[:PREVIEW_ROWS] if views is not None and views.eval_strengths is not None else None
    outputs = run_session(session, inputs.astype(np.float32), strengths=strengths)
    grids = [to_uint8(torch.from_numpy(a)) for a in (inputs, outputs) + ((targets,) if targets is not None else ())]
    save_image(staging / "preview.png", make_grid([[g[i] for g in grids] for i in range(len(inputs))]))
    return {"file": "preview.png", "columns": columns, "rows": len(inputs), "inputs": origin}


# ----------------------------------------------------------------------------------------------------------
# The command.


@dataclass
class ExportOptions:
    """What ``distill export`` does (one field per flag; ``layers`` as (START, STOP), ``variants`` as a list)."""

    run: str | os.PathLike
    out: str | os.PathLike
    name: str | None = None
    description: str | None = None
    variants: list[str] = field(default_factory=list)  # extra variants beside fp32: fp16, int8
    calibration: str | os.PathLike | None = None
    num_calibration: int = 64
    num_eval: int = 16
    min_variant_psnr: float = MIN_PSNR_DB
    teacher: str | os.PathLike | None = None
    direction: str | os.PathLike | None = None
    alpha: float | None = None
    layers: tuple[int, int] | None = None
    normalize: bool = False
    attribute: str | None = None
    size: str | None = None  # HxW or one number; None: the training size from run.json
    alignment: str = "none"
    samples: list[str] | None = None
    opset: int = OPSET
    timing_repeats: int = 5
    overwrite: bool = False

    def __post_init__(self) -> None:
        for v in self.variants:
            if v not in ("fp16", "int8"):
                raise DistillError(f"--variants: unknown variant {v!r}; choose from fp16, int8 (fp32 is always written)")
        if self.alignment not in ALIGNMENTS:
            raise DistillError(f"--alignment {self.alignment!r}: choose from {', '.join(ALIGNMENTS)}")


def export_entry(opts: ExportOptions) -> ModelEntry:
    """Run the whole export ``opts`` describes; returns the written entry."""
    out = Path(opts.out)
    name = opts.name or out.name
    if not _NAME_RE.match(name) or not _NAME_RE.match(out.name):
        raise DistillError(f"--out {out}: entry names use letters, digits, '.', '_', '-' (got {out.name!r})")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise DistillError(f"--out {out}: exists and is not a model-zoo entry; choose another folder")
    if (out / MANIFEST).is_file() and not opts.overwrite:
        raise DistillError(f"--out {out}: an entry already exists; pass --overwrite to replace it")
    variants = list(opts.variants)

    source = load_source(opts.run)
    size, size_origin = _native_size(source, opts.size)
    if opts.alignment == "ffhq" and size[0] != size[1]:
        raise DistillError(f"--alignment ffhq: FFHQ crops are square, the input size is {size[0]}x{size[1]} "
                           f"({size_origin}); pass a square --size")
    dataset = _run_dataset(source, opts.calibration)
    if "int8" in variants and dataset is None:
        raise DistillError("--variants int8 needs calibration images from the training data: pass --calibration DATASET")
    cfg = source.generator.config
    strength = _strength_spec(source, dataset)
    print(f"exporting {source.checkpoint} ({cfg.netG}, stride {source.stride}) at {size[0]}x{size[1]} -> {out}")

    staging = out.parent / f".{out.name}.export-tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        onnx_path = export_onnx(source.generator, staging / VARIANT_FILES["fp32"], size, opts.opset)
        parity = check_parity(source.generator, onnx_path, parity_sizes(size, source.stride),
                              strength_range=tuple(strength["range"]) if strength else (-1.0, 1.0))
        print(f"parity vs PyTorch: max |diff| {parity['parity_max_abs_diff']:.2e} at {list(parity['parity_per_size'])}, batch 2")
        views = _data_views(dataset, source, size, opts.num_calibration, opts.num_eval) if dataset else None
        files = [VARIANT_FILES["fp32"]]
        variant_records = {"fp32": {"file": VARIANT_FILES["fp32"], "providers": VARIANT_PROVIDERS["fp32"]}}
        if opts.timing_repeats:
            variant_records["fp32"].update(timing_record(onnx_path, size, opts.timing_repeats))
        refused: dict[str, Any] = {}
        for v in variants:
            eval_images = views.eval_inputs if views else _random_eval(size, opts.num_eval)
            try:
                record = build_variant(
                    v, onnx_path, staging, eval_images=eval_images,
                    calibration=views.calibration if views else None, native_size=size,
                    min_psnr_db=opts.min_variant_psnr, timing_repeats=max(1, opts.timing_repeats),
                    eval_strengths=views.eval_strengths if views else None,
                    calibration_strengths=views.calibration_strengths if views else None,
                )
            except VariantRefused as e:
                print(f"distill export: {e}")
                refused[v] = {"psnr_vs_fp32_db": e.psnr_db, "min_psnr_db": e.bound_db, "error_images": e.n_images}
                continue
            record["error_inputs"] = views.eval_source if views else "random inputs (no dataset known)"
            variant_records[v] = record
            files.append(record["file"])
            print(f"{v}: PSNR vs fp32 {record['psnr_vs_fp32_db']:.2f} dB, {record['median_ms']:.1f} ms at {size[0]}x{size[1]}")
        engines = _engine_table(staging, variant_records, views, size, opts)
        side = _teacher_and_direction(opts, views, staging)
        files += side["files"]
        preview = _write_preview(onnx_path, staging, views, size)
        files.append(preview["file"])
        files += _copy_samples(views, staging, opts.samples)
        manifest = _manifest(opts, name, source, size, size_origin, views, variant_records, refused, parity, side, preview,
                             file_records(staging, files))
        if strength:
            if manifest.edit.alpha is None:
                raise DistillError("a strength-conditioned student needs the edit's alpha (what strength 1.0 means): "
                                   "pass --alpha A")
            manifest.strength = StrengthSpec.model_validate(strength)
        if engines:
            from model_zoo.schema import EngineTiming

            manifest.engines = [EngineTiming.model_validate(row) for row in engines]
        entry = write_entry(staging, manifest)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    entry = ModelEntry(name=out.name, path=out, spec=entry.spec)
    print(f"wrote {out} ({', '.join(variant_records)}); list it with `distill models --root {out.parent} list`")
    if refused:
        figures = "; ".join(f"{v}: {r['psnr_vs_fp32_db']:.2f} dB < {r['min_psnr_db']:g} dB" for v, r in refused.items())
        raise DistillError(f"variant(s) refused on PSNR against fp32 ({figures}); {out} was written without them")
    return entry


def _engine_table(staging: Path, variant_records: dict[str, Any], views: DataViews | None, size: tuple[int, int],
                  opts: ExportOptions) -> list[dict[str, Any]]:
    """Each variant in each engine this machine has, timed at the native size with its PSNR against fp32 on the
    held-out inputs (manifest ``engines``, see engines/measure.py); none with --timing-repeats 0."""
    if not opts.timing_repeats:
        return []
    from engines.measure import engine_table, format_table

    images = (views.eval_inputs if views else _random_eval(size, opts.num_eval)).astype(np.float32)
    rows = engine_table({v: staging / r["file"] for v, r in variant_records.items()}, size, images,
                        repeats=opts.timing_repeats, variants=variant_records)
    print(f"engines at {size[0]}x{size[1]}, batch 1:\n" + "\n".join(format_table(rows)))
    return rows


def _strength_spec(source: StudentSource, dataset: Path | None) -> dict[str, Any] | None:
    """A conditional student's manifest ``strength``: the range its pairs were drawn over (dataset.json's
    ``alpha_range``) and the default (1.0, the edit's alpha, when inside it); None for a fixed-strength one."""
    if not is_conditional(source.generator):
        return None
    meta = read_metadata(dataset) if dataset is not None and (dataset / METADATA).is_file() else {}
    meta = meta or source.run_meta.get("dataset_metadata") or {}
    trained = meta.get("alpha_range")
    if not trained:
        raise DistillError(f"{source.checkpoint}: a strength-conditioned student, but no trained strength range is "
                           "known; pass --calibration DATASET (its pairs, made with `distill pairs --alpha-range`)")
    low, high = float(trained[0]), float(trained[1])
    return {"range": [low, high], "default": 1.0 if low <= 1.0 <= high else high}


def _random_eval(size: tuple[int, int], n: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (max(1, min(n, 4)), 3, *size)).astype(np.float32)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames (the old entry is removed only once the new one is in place)."""
    old = out.parent / f".{out.name}.export-old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    if old.exists():
        shutil.rmtree(old)


def _manifest(opts: ExportOptions, name: str, source: StudentSource, size: tuple[int, int], size_origin: str,
              views: DataViews | None, variants: dict[str, Any], refused: dict[str, Any], parity: dict[str, Any],
              side: dict[str, Any], preview: dict[str, Any], files: dict[str, FileRecord]) -> EntryManifest:
    cfg = source.generator.config
    data: dict[str, Any] = {}
    if views is not None:
        data = {"dataset": provenance(views.dataset), **views.counts,
                "teacher_resolution": views.meta.get("resolution"), "eval_inputs": views.eval_source}
    description = opts.description or (
        f"Pix2PixHD student ({cfg.netG}, ngf {cfg.ngf}) for the '{side['edit']['attribute']}' edit"
        if side["edit"]["attribute"] else f"Pix2PixHD student ({cfg.netG}, ngf {cfg.ngf})"
    )
    return EntryManifest.model_validate({
        "name": name,
        "description": description,
        "edit": side["edit"],
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32", "size": list(size), "channels": 3,
                  "range": [-1, 1], "stride": source.stride, "size_source": size_origin, "alignment": opts.alignment,
                  "normalization": "x / 127.5 - 1 on uint8 RGB (pix2pixHD's (x/255 - 0.5) / 0.5)"},
        "output": {"name": "output", "layout": "NCHW", "dtype": "float32", "range": [-1, 1],
                   "denormalization": "clip((y + 1) * 127.5, 0, 255) as uint8 RGB"},
        "variants": variants,
        "refused_variants": refused,
        "teacher": side["teacher"],
        "direction": side["direction"],
        "truncation": side["truncation"],
        "data": data,
        "training": _training_record(source),
        "export": {"opset": opts.opset, "exporter": "torch.onnx TorchScript (dynamo=False)",
                   "dynamic_axes": {"batch": 0, "height": 2, "width": 3}, **parity, "versions": versions()},
        "preview": preview,
        "files": files,
    })


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained student to ONNX and write a model-zoo entry",
        description="Export RUN (a `distill train` folder or a generator checkpoint such as NVIDIA's latest_net_G.pth) "
                    "to ONNX, check it against PyTorch, build optional fp16/int8 variants gated on their error, and write "
                    "a checksummed model-zoo entry.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (RUN/checkpoints/latest.pt) or generator checkpoint file")
    p.add_argument("--out", required=True, help="entry folder, e.g. model_zoo/age-slim-256")
    p.add_argument("--name", help="entry name in the manifest (default: the --out folder name)")
    p.add_argument("--description", help="one line for `distill models list` and the service")
    p.add_argument("--variants", default="", help="comma list of extra variants: fp16 (CUDA provider), int8 (CPU provider)")
    p.add_argument("--calibration", metavar="DATASET",
                   help="pair dataset for int8 calibration, variant error and the preview (default: the run's dataset)")
    p.add_argument("--num-calibration", type=int, default=64, help="training inputs used to calibrate int8 (default 64)")
    p.add_argument("--num-eval", type=int, default=16, help="held-out inputs used to measure variant error (default 16)")
    p.add_argument("--min-variant-psnr", type=float, default=MIN_PSNR_DB,
                   help=f"refuse a variant whose PSNR against fp32 is below this (default {MIN_PSNR_DB:g} dB)")
    p.add_argument("--teacher", help="StyleGAN2 teacher to ship for the legacy endpoint (default: the dataset's)")
    p.add_argument("--direction", help="latent direction to ship for the legacy endpoint (default: the dataset's)")
    p.add_argument("--alpha", type=float, help="edit strength (default: the dataset's)")
    p.add_argument("--layers", nargs="+", metavar="START:STOP",
                   help="W+ layers edited, e.g. 0:8, as in distill pairs (default: the dataset's)")
    p.add_argument("--normalize", action="store_true", help="the direction is normalized per layer (default: the dataset's)")
    p.add_argument("--attribute", help="name of the edit, e.g. age (default: the direction's)")
    p.add_argument("--size", help="native input size HxW (default: the training size from run.json)")
    p.add_argument("--alignment", choices=ALIGNMENTS, default="none",
                   help="input framing the student expects: ffhq (a teacher trained on FFHQ-aligned faces: the service "
                        "aligns uploads and pastes the edit back) or none (the upload is centre-cropped; default)")
    p.add_argument("--samples", nargs="+", metavar="IMAGE", default=None,
                   help="more demo-page inputs to ship in samples/ beside the held-out teacher originals (e.g. real photos)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--timing-repeats", type=int, default=5, help="timed runs per variant and engine at the native size (0: skip fp32 timing and the "
                        "engine table)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing entry at --out")
    p.set_defaults(func=run)


def layers_option(values: list[str] | None) -> tuple[int, int] | None:
    """``--layers 0:8``; the old ``--layers 0 8`` still works, with a note on stderr."""
    if values is None:
        return None
    if len(values) == 2 and all(v.lstrip("-").isdigit() for v in values):
        print(f"distill export: --layers {values[0]} {values[1]} is deprecated; write --layers {values[0]}:{values[1]}",
              file=sys.stderr)
        values = [f"{values[0]}:{values[1]}"]
    if len(values) != 1:
        raise DistillError(f"--layers {' '.join(values)}: expected START:STOP, e.g. 0:8")
    try:
        return parse_layers(values[0])
    except argparse.ArgumentTypeError as e:
        raise DistillError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    export_entry(options_from_args(ExportOptions, args, layers=layers_option(args.layers),
                                   variants=[v for v in args.variants.split(",") if v]))
    return 0
