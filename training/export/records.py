"""What an export reads from the training run: dataset, split, native size, metrics, and the data views for
calibration, variant error and the preview."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.errors import DistillError
from core.runfiles import METRICS, PAIRS_MANIFEST, read_jsonl
from model_zoo.registry import (
    sha256_file,
)
from model_zoo.schema import provenance
from training.dataset import ImageGeometry, PairDataset, edit_names, kept_rows, split_rows
from training.export.graph import PREVIEW_ROWS, StudentSource
from training.manifest import METADATA, read_manifest, read_metadata


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
        raise DistillError(
            f"{flag}: {path} is not a pair dataset (no manifest.jsonl); pass --calibration DATASET"
        )
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
        raise DistillError(
            f"input size {size[0]}x{size[1]} ({origin}) is not a multiple of the generator stride {stride}"
        )
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
    init = (meta.get("options") or {}).get("init")
    if init:
        record["init"] = provenance(init)
    heldout = dict(meta.get("metrics") or {})
    metrics = source.run_dir / METRICS if source.run_dir else None
    if metrics is not None and metrics.is_file():
        heldout = next((row for row in reversed(read_jsonl(metrics)) if "val_psnr" in row), heldout)
    record["heldout"] = {
        k: heldout[k] for k in ("val_psnr", "val_ssim", "val_l1", "n_val", "epoch", "step") if k in heldout
    }
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
    # pairs over a range of strengths: each image's own (a list of K for a multi-edit dataset)
    calibration_strengths: list[float | list[float]] | None = None
    eval_strengths: np.ndarray | None = None


def _data_views(
    dataset: Path, source: StudentSource, size: tuple[int, int], n_calib: int, n_eval: int
) -> DataViews:
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
        eval_rows, eval_source = (
            val_rows[:n_eval],
            f"held-out split (val_fraction {val_fraction}, seed {split_seed})",
        )
    else:
        eval_rows = train_rows[n_calib : n_calib + n_eval] or train_rows[-n_eval:]
        eval_source = "training pairs not used for calibration (the run has no held-out split)"
    edits = edit_names(dataset)
    calib = PairDataset(dataset, calib_rows, geometry, edits=edits)
    evals = PairDataset(dataset, eval_rows, geometry, edits=edits)
    calibration = [
        calib[i]["a"].numpy() for i in tqdm(range(len(calib)), desc="calibration images", leave=False)
    ]
    items = [evals[i] for i in range(len(evals))]
    ranged = bool(edits) or any(r.strength is not None for r in rows)
    return DataViews(
        calibration_strengths=[calib[i]["strength"].tolist() for i in range(len(calib))] if ranged else None,
        eval_strengths=torch.stack([it["strength"] for it in items]).numpy() if ranged and items else None,
        dataset=dataset,
        meta=meta,
        calibration=calibration,
        eval_inputs=torch.stack([it["a"] for it in items]).numpy(),
        eval_targets=torch.stack([it["b"] for it in items]).numpy(),
        eval_source=eval_source,
        counts={
            "pairs_total": n_total,
            "pairs_kept": len(rows),
            "train_pairs": len(train_rows),
            "heldout_pairs": len(val_rows),
        },
        sample_files=[dataset / r.a for r in eval_rows[:PREVIEW_ROWS]],
    )
