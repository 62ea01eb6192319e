"""Draw docs/alignment.png: a real photo, its FFHQ-aligned crop, and the edit pasted back.

No trained FFHQ student ships with this repository (nothing can be downloaded here), so the "edits" are
stand-ins: an identity model (the paste-back must return the photo) and a sepia tone applied to the aligned
crop (it shows where the edit lands and how its edge fades). The photo is scikit-image's astronaut (inside the
scikit-image wheel; NASA, public domain). Run from the repository root::

    .venv/bin/python docs/alignment_figure.py        # writes docs/alignment.png
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data

from core.atomic import atomic_write
from editing.alignment.ffhq import align_face
from editing.alignment.landmarks import default_finder
from editing.alignment.pasteback import face_mask, paste_faces

OUT = Path(__file__).resolve().parent / "alignment.png"
PANEL = 240
CAPTION = 34


def sepia(pixels: np.ndarray) -> np.ndarray:
    """A stand-in edit: a sepia tone."""
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return np.clip(pixels.astype(np.float64) @ m.T, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def panel(pixels: np.ndarray, caption: str) -> np.ndarray:
    """``pixels`` scaled to PANEL px high, with a two-line caption below."""
    im = Image.fromarray(pixels)
    im = im.resize((round(im.width * PANEL / im.height), PANEL), Image.LANCZOS)
    out = Image.new("RGB", (im.width, PANEL + CAPTION), (255, 255, 255))
    out.paste(im, (0, 0))
    ImageDraw.Draw(out).multiline_text(
        (4, PANEL + 3), caption, fill=(0, 0, 0), font=ImageFont.load_default(size=12), spacing=2
    )
    return np.asarray(out)


def main() -> Path:
    photo = data.astronaut()
    face = default_finder().find(photo)[0]
    crop, alignment = align_face(photo, face.landmarks, PANEL)

    marked = photo.copy()
    left, top, right, bottom = (round(v) for v in face.box)
    cv2.rectangle(marked, (left, top), (right, bottom), (40, 220, 40), 2)
    cv2.polylines(marked, [np.rint(alignment.quad).astype(np.int32)], True, (230, 40, 40), 2)
    for x, y in np.rint(face.landmarks).astype(int):
        cv2.circle(marked, (x, y), 1, (255, 255, 0), -1)

    landmarks = [face.landmarks]
    identity = paste_faces(photo, [crop], [alignment], landmarks)
    weight = paste_faces(np.zeros_like(photo), [np.full_like(crop, 255)], [alignment], landmarks)[..., 0] > 0
    edited = paste_faces(photo, [sepia(crop)], [alignment], landmarks)
    mask = face_mask(alignment.to_aligned(face.landmarks, PANEL), PANEL)
    masked_crop = (sepia(crop) * mask[..., None] + crop * (1 - mask[..., None])).astype(np.uint8)

    panels = [
        panel(marked, "photo (512x512): detected box (green),\n68 landmarks, FFHQ quad (red)"),
        panel(crop, f"FFHQ-aligned crop ({PANEL} px)"),
        panel(
            identity,
            f"pasted back, identity model:\n{psnr(identity[weight], photo[weight]):.1f} dB in the mask, "
            "exact outside",
        ),
        panel(masked_crop, "stand-in edit (sepia) through\nthe feathered face mask"),
        panel(edited, "pasted back: only the face\nchanged, no seam"),
    ]
    gap = np.full((PANEL + CAPTION, 6, 3), 255, np.uint8)
    row = np.concatenate([p for item in panels for p in (item, gap)][:-1], axis=1)
    return atomic_write(OUT, lambda f: Image.fromarray(row).save(f, format="PNG", optimize=True))


if __name__ == "__main__":
    print(f"wrote {main()}")
