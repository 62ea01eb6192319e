"""The training view of a pair dataset: kept rows only, a stable held-out split, paired augmentation.

Everything random here is a pure function of explicit integers, so a resumed run (or another DDP
rank) sees exactly the same data as an uninterrupted one:

* the held-out split hashes ``(split_seed, pair seed)``: a pair's side never changes when the
  dataset grows, and no pair is ever on both sides;
* the horizontal flip of item ``index`` in epoch ``epoch`` hashes ``(seed, epoch, index)`` and is
  applied to A and B together (the edit must stay aligned with its input);
* the other augmentations (:mod:`training.augment`) draw from a generator seeded the same way.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from core.errors import DistillError
from editing.images import from_uint8, load_image
from training.augment import Augmentation
from training.manifest import METADATA, PairRecord, kept, read_manifest, read_metadata

_warned_unfiltered: set[str] = set()


def unit_hash(*keys: int | str) -> float:
    """A uniform number in [0, 1) determined only by ``keys`` (blake2b; stable across runs and machines)."""
    digest = hashlib.blake2b(":".join(str(k) for k in keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def kept_rows(root: str | os.PathLike) -> list[PairRecord]:
    """The rows of ``root``'s manifest that training may use; warns once if no filter has run."""
    rows = read_manifest(root)
    if rows and all(r.keep is None for r in rows) and str(root) not in _warned_unfiltered:
        _warned_unfiltered.add(str(root))
        warnings.warn(
            f"{root}: no filter has run on this dataset (every row has keep=None); training on all "
            f"{len(rows)} pairs. Run `distill filter {root}` first to drop broken pairs.",
            UserWarning,
            stacklevel=2,
        )
    rows = kept(rows)
    if not rows:
        raise DistillError(
            f"{root}: no kept pairs to train on (the filter rejected every row); relax the filter"
        )
    return rows


def edit_names(root: str | os.PathLike) -> list[str]:
    """The named edits of a multi-edit dataset in dataset.json's order (the strength vector's); [] otherwise."""
    path = Path(root) / METADATA
    meta = read_metadata(root) if path.is_file() else {}
    return [str(e["name"]) for e in meta.get("edits") or []]


def split_rows(
    rows: list[PairRecord], val_fraction: float, seed: int = 0
) -> tuple[list[PairRecord], list[PairRecord]]:
    """Deterministic (train, held-out) split by pair seed.

    A row is held out when ``unit_hash("val", seed, row.seed) < val_fraction``, so its side depends on
    nothing but its own seed. If that leaves the held-out side empty on a tiny dataset, the row with
    the smallest hash is held out (still a function of the seeds alone).
    """
    if not 0 <= val_fraction < 1:
        raise DistillError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    scored = [(unit_hash("val", seed, r.seed), r) for r in rows]
    val = [r for u, r in scored if u < val_fraction]
    if val_fraction > 0 and not val and len(rows) >= 2:
        val = [min(scored, key=lambda t: t[0])[1]]
    held = {r.seed for r in val}
    train = [r for r in rows if r.seed not in held]
    return train, val


@dataclass(frozen=True)
class ImageGeometry:
    """The (height, width) images are trained at, and the stride they must divide by."""

    height: int
    width: int
    stride: int


def resolve_geometry(native: tuple[int, int], stride: int, load_size: int | None) -> ImageGeometry:
    """Training size: the native (H, W), or width ``load_size`` with the aspect kept (pix2pixHD's scale_width).

    Raises DistillError if the result is not a multiple of the generator stride.
    """
    h, w = native
    if load_size is not None:
        if load_size <= 0 or load_size % stride:
            raise DistillError(
                f"--load-size {load_size} must be a positive multiple of the generator stride {stride} "
                f"(e.g. {max(stride, load_size // stride * stride)})"
            )
        h, w = max(stride, round(h * load_size / w / stride) * stride), load_size
    elif h % stride or w % stride:
        raise DistillError(
            f"the dataset's images are {h}x{w} (HxW) but the generator stride is {stride}: pass "
            f"--load-size {max(stride, w // stride * stride)} (a multiple of {stride}) or use a preset with fewer downsamplings"
        )
    return ImageGeometry(h, w, stride)


class PairDataset(Dataset):
    """(A, B) tensors in [-1, 1], [3,H,W] each, for a list of manifest rows.

    Items are addressed by ``(epoch, index)`` (what the trainer's sampler yields), a bare ``index``
    meaning epoch 0: the dataset holds no epoch state, so persistent DataLoader workers stay correct.
    ``edits`` names a multi-edit dataset's edits in order (:func:`edit_names`): an item's strength is then
    the vector [K] of its row's ``edits`` (a scalar for one named edit).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        rows: list[PairRecord],
        geometry: ImageGeometry,
        flip: bool = False,
        seed: int = 0,
        augment: Augmentation | None = None,
        edits: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.edits = list(edits or [])
        stray = next((r for r in rows if (r.edits is not None) != bool(self.edits)), None)
        if stray is not None:
            raise DistillError(
                f"{root}: pair {stray.seed} "
                + (
                    "has no 'edits' in a multi-edit dataset"
                    if self.edits
                    else "has 'edits' but dataset.json none"
                )
                + "; re-run `distill pairs` to repair the dataset"
            )
        missing = next((r for r in rows if r.edits is not None and set(r.edits) != set(self.edits)), None)
        if missing is not None:
            raise DistillError(
                f"{root}: pair {missing.seed} has edits {sorted(missing.edits or {})} but dataset.json lists "
                f"{self.edits}; re-run `distill pairs` to repair the dataset"
            )
        self.rows = list(rows)
        self.geometry = geometry
        self.flip = flip
        self.seed = seed
        self.augment = augment or Augmentation()

    def __len__(self) -> int:
        return len(self.rows)

    def flipped(self, index: int, epoch: int = 0) -> bool:
        """Whether item ``index`` is mirrored in ``epoch``: a pure function of (seed, epoch, index)."""
        return self.flip and unit_hash("flip", self.seed, epoch, index) < 0.5

    def _load(self, rel: str) -> np.ndarray:
        path = self.root / rel
        try:
            pixels = load_image(path)
        except (OSError, ValueError) as e:
            raise DistillError(
                f"{path}: cannot read this image ({e}); re-run `distill pairs` to repair the dataset"
            ) from e
        size = (self.geometry.height, self.geometry.width)
        if pixels.shape[:2] != size:
            pixels = np.asarray(Image.fromarray(pixels).resize(size[::-1], Image.BICUBIC))
        return np.array(pixels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        """Item ``index`` of ``epoch``: A, B, the pair's seed, its index and its relative edit strength (a
        scalar, or [K] in :attr:`edits`' order)."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        row = self.rows[index]
        a, b = self._load(row.a), self._load(row.b)
        if self.flipped(index, epoch):
            a, b = a[:, ::-1], b[:, ::-1]
        if self.augment.active:
            a, b = self.augment.apply(
                np.ascontiguousarray(a),
                np.ascontiguousarray(b),
                np.random.default_rng([abs(self.seed), epoch, index]),
            )
        strength: float | list[float] = 1.0 if row.strength is None else float(row.strength)  # fixed: 1
        if (
            row.edits is not None
        ):  # one named edit is the one-edit case: a scalar, as the generator's K = 1 wants
            vector = [float(row.edits[name]) for name in self.edits]
            strength = vector[0] if len(vector) == 1 else vector
        return {
            "a": from_uint8(a)[0],
            "b": from_uint8(b)[0],
            "seed": row.seed,
            "index": index,
            "strength": torch.tensor(strength, dtype=torch.float32),
        }


def native_size(root: str | os.PathLike, rows: list[PairRecord]) -> tuple[int, int]:
    """(H, W) of the first pair; A and B of that pair must agree."""
    root = Path(root)
    sizes = []
    for rel in (rows[0].a, rows[0].b):
        path = root / rel
        try:
            with Image.open(path) as im:
                sizes.append((im.height, im.width))
        except OSError as e:
            raise DistillError(
                f"{path}: cannot read this image ({e}); re-run `distill pairs` to repair the dataset"
            ) from e
    if sizes[0] != sizes[1]:
        raise DistillError(
            f"{root}: pair {rows[0].seed} has A {sizes[0]} and B {sizes[1]} of different sizes"
        )
    return sizes[0]


@dataclass
class PairSplit:
    """The train and held-out datasets built from one pair folder."""

    train: PairDataset
    val: PairDataset
    geometry: ImageGeometry
    n_kept: int
    n_total: int
    edits: list[str]  # a multi-edit dataset's edits in order (the strength vector's); [] otherwise


def load_split(
    root: str | os.PathLike,
    stride: int,
    *,
    val_fraction: float = 0.05,
    load_size: int | None = None,
    flip: bool = True,
    seed: int = 0,
    augment: Augmentation | None = None,
) -> PairSplit:
    """Kept rows of ``root`` split into train (augmented) and held-out (never augmented) datasets."""
    root = Path(root)
    if not root.is_dir():
        raise DistillError(f"{root}: no such dataset folder; create it with `distill pairs --out {root}`")
    n_total = len(read_manifest(root))
    rows = kept_rows(root)
    train_rows, val_rows = split_rows(rows, val_fraction, seed)
    if not train_rows:
        raise DistillError(
            f"{root}: only {len(rows)} kept pair(s), all held out; lower --val-fraction or add pairs"
        )
    geometry = resolve_geometry(native_size(root, rows), stride, load_size)
    edits = edit_names(root)
    return PairSplit(
        train=PairDataset(root, train_rows, geometry, flip=flip, seed=seed, augment=augment, edits=edits),
        val=PairDataset(root, val_rows, geometry, flip=False, seed=seed, edits=edits),
        geometry=geometry,
        n_kept=len(rows),
        n_total=n_total,
        edits=edits,
    )
