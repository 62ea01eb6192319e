"""The pair dataset's manifest: one JSON row per pair, shared by `pairs`, `filter`, `train`, `evaluate`.

Layout of a dataset folder (the pix2pixHD one, plus metadata)::

    DATASET/dataset.json    generation settings: teacher, direction, alpha, alpha_range (or the named edits), ...
    DATASET/manifest.jsonl  one row per pair (see PairRecord), sorted by seed
    DATASET/train_A/        originals  (<seed:08d>.png)
    DATASET/train_B/        edited     (<seed:08d>.png)

Filtering never deletes images: it sets ``keep``, ``reason`` and ``scores`` on the rows and rewrites
the manifest atomically. ``keep`` is None until a filter has run; training reads rows whose
``keep`` is not False.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import DistillError
from core.runfiles import PAIRS_MANIFEST, PAIRS_METADATA

MANIFEST = PAIRS_MANIFEST
METADATA = PAIRS_METADATA


@dataclass
class PairRecord:
    """One (original, edited) pair; paths are relative to the dataset folder."""

    seed: int
    a: str
    b: str
    alpha: float | None  # the absolute strength along ``direction``; None on multi-edit rows (see ``edits``)
    truncation: float
    direction: str | None  # the direction's file name; None on multi-edit rows
    keep: bool | None = None
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    # Relative edit strength of a pair drawn by ``distill pairs --alpha-range`` (alpha = strength * the dataset's
    # --alpha; training/strength.py); None on fixed-strength datasets, whose rows stay as they were.
    strength: float | None = None
    # Relative strength per named edit of a multi-edit dataset (``distill pairs --direction NAME=FILE ...``), every
    # edit of dataset.json's ``edits`` in its order, 0 when inactive: ``w + sum_k s_k alpha_k d_k``; else None.
    edits: dict[str, float] | None = None

    def to_json(self) -> str:
        row = asdict(self)
        for key in ("strength", "edits"):
            if row[key] is None:
                del row[key]
        return json.dumps(row, sort_keys=False)

    def active_edits(self) -> list[str]:
        """The names of the edits this pair applies (non-zero strength); [] on one-edit rows."""
        return [name for name, s in (self.edits or {}).items() if s != 0]


def read_manifest(root: str | os.PathLike) -> list[PairRecord]:
    """All rows of ``root/manifest.jsonl`` (sorted by seed); a clear error if missing or corrupt."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DistillError(
            f"{path}: no pair manifest here; create the dataset with `distill pairs --out {root}`"
        )
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(PairRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise DistillError(
                    f"{path}:{lineno}: not a pair record ({e}); re-run `distill pairs` to repair"
                ) from e
    return sorted(rows, key=lambda r: r.seed)


def write_manifest(root: str | os.PathLike, rows: list[PairRecord]) -> Path:
    """Atomically replace ``root/manifest.jsonl`` with ``rows`` (sorted by seed)."""
    text = "".join(r.to_json() + "\n" for r in sorted(rows, key=lambda r: r.seed))
    return atomic_write_text(Path(root) / MANIFEST, text)


def kept(rows: list[PairRecord]) -> list[PairRecord]:
    """The rows training may use: everything a filter did not reject."""
    return [r for r in rows if r.keep is not False]


def read_metadata(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / METADATA
    if not path.is_file():
        raise DistillError(
            f"{path}: missing dataset metadata; create the dataset with `distill pairs --out {root}`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def write_metadata(root: str | os.PathLike, meta: dict[str, Any]) -> Path:
    return atomic_write_json(Path(root) / METADATA, meta)
