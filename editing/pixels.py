"""Pixels <-> network arrays: uint8 pictures and float32 [N,3,H,W] in [-1, 1], the one conversion the pipeline
(through ``editing.images``) and the service share, and any decoded picture -> 8-bit RGB, the one the service's
uploads and ``distill align``'s photos share. numpy and Pillow only, so the web worker imports it without torch."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H,W,C] (or [N,H,W,C]) -> float32 [N,C,H,W] in [-1,1] (pix2pixHD's normalisation, x/127.5 - 1),
    C-contiguous.

    Written in one pass into a contiguous array: arithmetic on the transposed view instead costs 8x more at
    512 px (2.4 ms against 0.3), and the engine would copy the strided result once more. A division, as
    torch's ``x.div(127.5)`` that the students were trained on: a multiplication by 1/127.5 rounds 111 of the
    256 values differently."""
    batch = pixels[None] if pixels.ndim == 3 else pixels
    x = np.empty((batch.shape[0], batch.shape[3], *batch.shape[1:3]), np.float32)
    np.divide(batch.transpose(0, 3, 1, 2), np.float32(127.5), out=x, casting="unsafe")
    x -= np.float32(1.0)
    return x


def from_output(y: np.ndarray) -> np.ndarray:
    """float [C,H,W] (or [N,C,H,W]) in [-1,1] -> uint8 [H,W,C] (or [N,H,W,C]; a transposed view), rounded as
    NVlabs' generate.py does (x * 127.5 + 128, clipped, truncated); the arithmetic runs in place on one float32
    temporary."""
    z = np.multiply(y, np.float32(127.5), dtype=np.float32)
    z += np.float32(128.0)
    np.clip(z, 0, 255, out=z)
    u = z.astype(np.uint8)
    return u.transpose(1, 2, 0) if u.ndim == 3 else u.transpose(0, 2, 3, 1)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16/32-bit greys rescaled, alpha composited over white, CMYK/palette converted."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        peak = a.max(initial=0.0)
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
        im = Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")
