"""`distill evaluate`'s inputs: the entry and its edit, the held-out seeds, the scorer, the options; the
statistics every figure is written in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DistillError, FieldError
from core.runfiles import PAIRS_MANIFEST
from model_zoo.registry import MANIFEST, ModelEntry, get_entry, load_entry
from model_zoo.schema import provenance, resolve_provenance
from training.manifest import read_manifest
from training.onnx_scorer import OnnxScorer
from training.options import parse_name_index

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
        raise FieldError(
            (),
            f"{where}: no 'truncation' recorded; pass the psi the pairs were made with ({{truncation}} 0.7)",
            refs=("truncation",),
        )
    return EditSpec(
        teacher=entry.teacher_path,
        direction=entry.direction_path,
        alpha=alpha,
        layers=layers,
        normalize=normalize,
        truncation=float(psi),
        attribute=m.edit.attribute,
    )


def dataset_seeds(entry: ModelEntry, override: str | None = None) -> tuple[list[int] | None, str]:
    """The seeds of the pair dataset the student was trained on (None when unknown), and where they came from."""
    text = override or entry.spec.data.dataset
    if not text:
        return None, "unknown: the manifest names no dataset (pass --dataset DATASET to check the seeds)"
    # the project's relative path (or an older manifest's bare name), or one relative to the entry's folder
    candidates = [Path(text)] if override else [resolve_provenance(text), entry.path / text]
    root = next((c for c in candidates if (c / PAIRS_MANIFEST).is_file()), candidates[0])
    if not (root / PAIRS_MANIFEST).is_file():
        if override:
            raise FieldError("dataset", f"{root}: not a pair dataset (no manifest.jsonl)")
        return None, f"unknown: the training dataset {root} is not on this machine (pass --dataset DATASET)"
    return sorted(r.seed for r in read_manifest(root)), provenance(root.resolve())


def choose_seeds(requested: tuple[int, int] | None, num: int | None, trained: list[int] | None) -> list[int]:
    """The evaluation seeds: the first ``num`` of ``requested`` (all of it when ``num`` is None), or by default
    ``num`` seeds from :data:`HELD_OUT_SEED0` (above every training seed). Refuses any overlap with ``trained``."""
    if num is not None and num < 1:
        raise FieldError("num", f"{num}: need at least one seed")
    if requested is None:
        start = HELD_OUT_SEED0
        if trained and trained[-1] >= start:
            start = (trained[-1] // HELD_OUT_SEED0 + 1) * HELD_OUT_SEED0
        seeds = list(range(start, start + (num or DEFAULT_NUM)))
    else:
        seeds = list(range(*requested))
        if num is not None:
            if num > len(seeds):
                raise FieldError(
                    "seeds",
                    f"{requested[0]}:{requested[1]} holds {len(seeds)} seeds, fewer than {{num}} {num}",
                    refs=("num",),
                )
            seeds = seeds[:num]
    if trained:
        used = sorted(set(seeds).intersection(trained))
        if used:
            raise FieldError(
                (),
                f"{{seeds}}: {len(used)} of the evaluation seeds (e.g. {used[0]}) made the student's training "
                f"pairs (dataset seeds {trained[0]}..{trained[-1]}); choose a held-out range, e.g. "
                f"{{seeds}} {trained[-1] + 1}:{trained[-1] + 1 + len(seeds)}",
                refs=("seeds",),
            )
    return seeds


# ----------------------------------------------------------------------------------------------
# Scoring and statistics.


def spread(values: list[float] | np.ndarray) -> dict[str, float]:
    """n, mean and the 10th/50th/90th percentiles."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "p10": float(np.percentile(v, 10)),
        "p50": float(np.percentile(v, 50)),
        "p90": float(np.percentile(v, 90)),
    }


def latency(seconds: list[float]) -> dict[str, float]:
    """Per-image wall time: n, mean, p50 and p95 in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "n": int(ms.size),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def edit_figures(
    orig: np.ndarray,
    teacher: np.ndarray,
    out: np.ndarray,
    sign: float,
    others: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
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
        "n": int(orig.size),
        "edit_success": float(success.mean()),
        "mean_change": float(rise.mean()),
        "preservation": float(np.mean(list(changes.values()))) if changes else None,
        "other_changes": changes,
    }


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
    """The scorer options -> Scoring, or None without a scorer."""
    if not opts.scorer:
        if opts.attribute or opts.other:
            raise FieldError(
                ("attribute", "other"),
                "need {scorer} MODEL.onnx (the model that reads the attributes)",
                refs=("scorer",),
            )
        return None
    if not opts.attribute:
        raise FieldError(
            "scorer",
            "needs {attribute} NAME=INDEX: the scorer output the edit should change, e.g. age=0",
            refs=("attribute",),
        )
    named = [parse_name_index(opts.attribute, "attribute")] + [
        parse_name_index(t, "other") for t in opts.other
    ]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise FieldError((), f"{{attribute}}/{{other}}: repeated names {names}", refs=("attribute", "other"))
    scorer = OnnxScorer(
        opts.scorer,
        dict(named),
        input_size=opts.input_size,
        mean=opts.mean,
        std=opts.std,
        activation=opts.activation,
        providers=["CPUExecutionProvider"],
    )
    return Scoring(scorer, names[0], names[1:], Path(opts.scorer))


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
    strengths: list[float] | None = (
        None  # a strength-conditioned entry: None = -1, -0.5, 0.5, 1 within its range
    )
    strength_num: int = 100  # seeds of the strength section
    photos: str | None = None  # a folder of photographs: the photos section (training/evaluate/photos.py)
    photos_legacy_num: int = 3  # of the photos with a face, how many also go the legacy way
    photos_only: bool = False  # the photos section alone, without the seed evaluation

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in ("fp32", "fp16", "int8")]
        if unknown or "fp32" not in self.variants:
            raise FieldError(
                "variants", f"{','.join(self.variants)!r}: a comma list of fp32 (required), int8, fp16"
            )
        if (
            min(self.legacy_num, self.clean_legacy_num, self.photos_legacy_num) < 0
            or self.legacy_steps < 1
            or self.timing_num < 1
        ):
            raise FieldError(
                ("legacy_num", "clean_legacy_num", "photos_legacy_num"),
                "must be >= 0, {legacy_steps} and {timing_num} >= 1",
                refs=("legacy_steps", "timing_num"),
            )
        if self.photos_only and not self.photos:
            raise FieldError("photos_only", "needs {photos} DIR, the folder of photographs", refs=("photos",))
