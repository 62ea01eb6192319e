"""Network tensors <-> uint8 pictures (torch over :mod:`editing.pixels`), image files and PNG/JPEG grids."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.atomic import atomic_write_bytes
from editing.pixels import from_output, to_input


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] (or [3,H,W]) float tensor in [-1,1] -> uint8 NHWC (or HWC): :func:`editing.pixels.from_output`."""
    return from_output(images.detach().float().cpu().numpy())


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HWC (or NHWC) -> float tensor [N,3,H,W] in [-1,1]: :func:`editing.pixels.to_input`."""
    return torch.from_numpy(to_input(pixels))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB HWC."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def encode_image(pixels: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """Encode uint8 HWC RGB as PNG/JPEG/WEBP bytes."""
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt.upper() in ("JPEG", "WEBP") else {"compress_level": 1}
    Image.fromarray(pixels).save(buf, format=fmt.upper(), **kwargs)
    return buf.getvalue()


def save_image(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Atomically save uint8 HWC RGB; the format follows the file suffix."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(path).suffix.lower(), "PNG")
    return atomic_write_bytes(path, encode_image(pixels, fmt))


def make_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile rows of equally sized uint8 HWC images into one picture with ``pad`` pixels between."""
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one image")
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, ncols * (w + pad) + pad, 3), fill, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            if im.shape[:2] != (h, w):
                im = np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.BICUBIC))
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = im[..., :3]
    return grid
