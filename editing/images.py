"""Conversions between network tensors in [-1, 1] and uint8 pictures, and PNG/JPEG grids."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.atomic import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] (or [3,H,W]) float in [-1,1] -> uint8 NHWC (or HWC), as NVlabs' generate.py rounds."""
    x = images.detach().float().cpu()
    x = (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy() if x.ndim == 4 else x.permute(1, 2, 0).numpy()


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HWC (or NHWC) -> float [N,3,H,W] in [-1,1] (the pix2pixHD normalisation, (x/255-0.5)/0.5)."""
    if not pixels.flags.writeable:  # torch warns on read-only arrays (np.asarray of a PIL image is one)
        pixels = pixels.copy()
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float().div(127.5).sub(1.0)
    return x.permute(2, 0, 1)[None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


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
                im = np.asarray(Image.fromarray(im).resize((w, h), Image.BICUBIC))
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = im[..., :3]
    return grid
