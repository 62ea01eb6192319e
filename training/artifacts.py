"""Artifact figures: what PSNR forgives and a person sees first.

A student can sit close to its teacher in PSNR and still carry speckle (fine high-frequency noise), colour
fringes and a blemish at a fixed pixel, none of which the teacher drew. These figures measure them on
uint8 RGB pictures, always beside the same figure of the reference (the teacher's edit, or a true edit):

- **HF energy**: the mean over pixels (and channels) of the squared 4-neighbour Laplacian, in 8-bit levels.
  Flat regions score ~0, a sharp edge a lot, speckle everywhere it lies. Measured over the whole picture
  and inside a region mask (where the edit acts, or the hair of a toy face).
- **Fixed-pattern maps**: per pixel, the median over the evaluated faces of (a) the output's |Laplacian|
  and (b) its absolute error against the reference. A blemish the network puts at the same place on every
  face survives the median; content that moves from face to face does not. The peak of map (a) inside the
  region, beside the reference's own peak, is the "blemish" figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EDIT_REGION_LEVELS = (
    8.0  # a pixel is in the edit region where the reference edit moved it by more than this (8-bit)
)


def laplacian(images: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of uint8/float [N,H,W,C] (or [H,W,C]) pictures in 8-bit levels, edges replicated."""
    x = np.asarray(images, np.float32)
    squeeze = x.ndim == 3
    x = x[None] if squeeze else x
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * x
    return lap[0] if squeeze else lap


def hf_energy(images: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per picture: the mean squared Laplacian over the pixels of ``mask`` ([N,H,W] or [H,W] bool; all pixels if
    None), averaged over channels. NaN for a picture whose mask is empty."""
    lap2 = laplacian(images).astype(np.float64) ** 2
    lap2 = lap2[None] if lap2.ndim == 3 else lap2
    per_pixel = lap2.mean(-1)
    if mask is None:
        return per_pixel.reshape(len(per_pixel), -1).mean(1)
    m = np.broadcast_to(np.asarray(mask, bool), per_pixel.shape)
    counts = m.reshape(len(m), -1).sum(1)
    sums = np.where(m, per_pixel, 0.0).reshape(len(m), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def edit_region(inputs: np.ndarray, edits: np.ndarray, levels: float = EDIT_REGION_LEVELS) -> np.ndarray:
    """[N,H,W] bool: where the reference edit changed the input by more than ``levels`` in some channel."""
    diff = np.abs(np.asarray(edits, np.float32) - np.asarray(inputs, np.float32)).max(-1)
    return diff > levels


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """[..., H, W] bool: ``mask`` shrunk by ``steps`` pixels (4-neighbour), so a region's outline, where the Laplacian
    measures the drawing's own edges rather than texture, is left out."""
    m = np.asarray(mask, bool)
    for _ in range(steps):
        p = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)])
        m = m & p[..., :-2, 1:-1] & p[..., 2:, 1:-1] & p[..., 1:-1, :-2] & p[..., 1:-1, 2:]
    return m


def median_map(values: np.ndarray) -> np.ndarray:
    """Per-pixel median over the first axis of [N,H,W(,C)] values (channels averaged first)."""
    v = np.asarray(values, np.float32)
    if v.ndim == 4:
        v = v.mean(-1)
    return np.median(v, axis=0)


def blemish_map(images: np.ndarray) -> np.ndarray:
    """[H,W]: per pixel, the median over the pictures of |Laplacian| (channels averaged)."""
    return median_map(np.abs(laplacian(images)))


def error_map(outputs: np.ndarray, references: np.ndarray) -> np.ndarray:
    """[H,W]: per pixel, the median over the pictures of |output - reference| in 8-bit levels (channels averaged)."""
    return median_map(np.abs(np.asarray(outputs, np.float32) - np.asarray(references, np.float32)))


def peak(values: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, tuple[int, int]]:
    """(largest value, its (y, x)) of an [H,W] map, inside ``mask`` ([H,W] bool) when given."""
    v = np.where(mask, values, -np.inf) if mask is not None else values
    y, x = np.unravel_index(int(np.argmax(v)), v.shape)
    return float(values[y, x]), (int(y), int(x))


@dataclass
class ArtifactFigures:
    """One path's artifact figures against one reference (see the module docstring)."""

    hf_energy: float  # whole picture, mean over pictures
    hf_energy_region: float  # inside the region mask, mean over pictures that have one
    blemish_peak: float  # peak of the median |Laplacian| map inside the region (or anywhere without one)
    blemish_at: tuple[int, int]
    error_peak: float  # peak of the median |error| map against the reference
    error_at: tuple[int, int]

    def as_dict(self) -> dict[str, float | list[int] | None]:
        """The figures rounded for report.json (None for an empty region: strict JSON has no NaN)."""
        return {
            "hf_energy": round(self.hf_energy, 3),
            "hf_energy_region": round(self.hf_energy_region, 3)
            if np.isfinite(self.hf_energy_region)
            else None,
            "blemish_peak": round(self.blemish_peak, 3),
            "blemish_at": list(self.blemish_at),
            "error_peak": round(self.error_peak, 3),
            "error_at": list(self.error_at),
        }


def artifact_figures(
    outputs: np.ndarray, references: np.ndarray, region: np.ndarray | None = None
) -> ArtifactFigures:
    """Figures of uint8 ``outputs`` [N,H,W,3] against ``references`` (same shape); ``region`` [N,H,W] bool.

    The blemish peak is looked for where the region holds on at least half of the pictures (a fixed place the
    edit usually acts on), anywhere when no region is given."""
    outputs, references = np.asarray(outputs), np.asarray(references)
    if outputs.shape != references.shape or outputs.ndim != 4:
        raise ValueError(
            f"artifact_figures: outputs {outputs.shape} and references {references.shape} must both be [N,H,W,C]"
        )
    usual = None if region is None else np.asarray(region, bool).mean(0) >= 0.5
    if usual is not None and not usual.any():
        usual = None
    blemish, b_at = peak(blemish_map(outputs), usual)
    err, e_at = peak(error_map(outputs, references))
    region_hf = hf_energy(outputs, region) if region is not None else hf_energy(outputs)
    return ArtifactFigures(
        float(np.mean(hf_energy(outputs))),
        float(np.nanmean(region_hf)) if np.isfinite(region_hf).any() else float("nan"),
        blemish,
        b_at,
        err,
        e_at,
    )


# ----------------------------------------------------------------------------------------------
# The report's block and pictures.

ARTIFACT_FACES = 200  # faces the figures and maps are measured on: enough for a stable median, bounded memory
MAP_LEVELS = 32.0  # the heat maps' fixed scale: 0 (black) .. this many 8-bit levels (white) and above
ZOOM = 4
MAP_MIN_SIDE = 256  # heat maps are upscaled (nearest) to at least this many pixels a side, to be seen


def artifact_block(
    references: np.ndarray, paths: dict[str, np.ndarray], region: np.ndarray | None, reference_name: str
) -> dict[str, object]:
    """report.json's artifact figures: the reference's own (``reference_name``), then each of ``paths`` (name ->
    uint8 [N,H,W,3] outputs, the identity among them) against it; ratios of each path's HF energy and blemish
    peak to the reference's own (above 1: noisier than the reference)."""
    own = artifact_figures(references, references, region)
    figures = {reference_name: own, **{k: artifact_figures(v, references, region) for k, v in paths.items()}}
    ratios = {
        k: {
            "hf_energy": ratio_of(f.hf_energy, own.hf_energy),
            "hf_energy_region": ratio_of(f.hf_energy_region, own.hf_energy_region),
            "blemish_peak": ratio_of(f.blemish_peak, own.blemish_peak),
        }
        for k, f in figures.items()
        if k != reference_name
    }
    share = None if region is None else float(np.asarray(region, bool).mean())
    return {
        "n": int(len(references)),
        "reference": reference_name,
        "region_share": None if share is None else round(share, 4),
        "paths": {k: f.as_dict() for k, f in figures.items()},
        "ratio_to_reference": ratios,
    }


def ratio_of(a: float | None, b: float | None) -> float | None:
    """a / b rounded, None where b is 0 or either is missing or not finite."""
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)) or b <= 0:
        return None
    return round(a / b, 3)


def heat_map(values: np.ndarray, vmax: float = MAP_LEVELS) -> np.ndarray:
    """uint8 [H,W,3] picture of an [H,W] map on a fixed scale 0..``vmax``: black, red, yellow, white."""
    t = np.clip(np.asarray(values, np.float32) / vmax, 0.0, 1.0) * 3.0
    rgb = np.stack([np.clip(t, 0, 1), np.clip(t - 1, 0, 1), np.clip(t - 2, 0, 1)], -1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of an [H,W(,C)] picture: every pixel becomes a ``factor`` x ``factor`` block."""
    return np.repeat(np.repeat(image, factor, 0), factor, 1)


def map_tiles(maps: list[np.ndarray], vmax: float = MAP_LEVELS) -> list[np.ndarray]:
    """Heat maps of ``maps`` upscaled (nearest) to at least :data:`MAP_MIN_SIDE` pixels a side."""
    factor = max(1, -(-MAP_MIN_SIDE // max(maps[0].shape)))
    return [upscale(heat_map(m, vmax), factor) for m in maps]


def busiest_window(region: np.ndarray) -> tuple[int, int, int, int]:
    """(y, x, h, w) of the crop where an edit acts most: the bounding box of the pixels the ``region`` ([N,H,W] bool)
    holds on at least half the faces (any face when none), at most half the picture a side, placed where the
    region holds most often."""
    freq = np.asarray(region, bool).mean(0)
    usual = freq >= 0.5 if (freq >= 0.5).any() else freq > 0
    height, width = freq.shape
    if not usual.any():
        return 0, 0, height, width
    ys, xs = np.nonzero(usual)
    h = min(int(ys.max() - ys.min() + 1), max(1, height // 2))
    w = min(int(xs.max() - xs.min() + 1), max(1, width // 2))
    total = np.pad(freq.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        total[h:, w:] - total[:-h, w:] - total[h:, :-w] + total[:-h, :-w]
    )  # sum of freq over each h x w window
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), h, w


def zoom_rows(
    columns: list[list[np.ndarray]], window: tuple[int, int, int, int], faces: int, factor: int = ZOOM
) -> list[list[np.ndarray]]:
    """Grid rows for the first ``faces`` faces: each column's picture cropped to ``window`` and upscaled ``factor``x
    (nearest neighbour, so every pixel the network drew stays visible)."""
    y, x, h, w = window
    return [[upscale(col[i][y : y + h, x : x + w], factor) for col in columns] for i in range(faces)]
