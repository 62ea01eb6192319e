"""Paired input augmentation for the student: what separates the teacher's samples from users' pictures.

The student learns from teacher pairs, but users send pictures that are sharper or softer, noisier,
JPEG-compressed and framed a few pixels off. Each augmentation here is drawn per item from a
generator seeded by ``(seed, epoch, index)``, so a resumed run sees exactly the same pixels:

* ``shift``: translate input *and* target by up to this many pixels (reflected border);
* ``sharpness``: with this probability, the same Gaussian blur or unsharp mask on input *and*
  target (the edit is taught at other sharpness levels than the teacher's own);
* ``noise``: with this probability, Gaussian noise (sigma up to 6/255) on the input only;
* ``jpeg``: with this probability, JPEG-compress the input only (quality 40-95).

Input-only corruptions teach the student to ignore them (the target stays the teacher's clean edit);
shared ones keep the pair aligned.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter

from core.errors import DistillError

FIELDS = ("shift", "sharpness", "noise", "jpeg")


@dataclass(frozen=True)
class Augmentation:
    """Strengths of each paired augmentation (all 0: none)."""

    shift: int = 0
    sharpness: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.shift, int) or not 0 <= self.shift <= 32:
            raise DistillError(f"--augment shift={self.shift!r}: an integer number of pixels in 0..32")
        for name in ("sharpness", "noise", "jpeg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DistillError(f"--augment {name}={getattr(self, name)!r}: a probability in [0, 1]")

    @property
    def active(self) -> bool:
        return any(asdict(self).values())

    def __str__(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in asdict(self).items() if v) or "none"

    def apply(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment the uint8 HWC pair (input ``a``, target ``b``); returns new arrays."""
        if self.shift:
            dx, dy = (int(v) for v in rng.integers(-self.shift, self.shift + 1, size=2))
            a, b = shift_image(a, dx, dy), shift_image(b, dx, dy)
        if self.sharpness and rng.random() < self.sharpness:
            if rng.random() < 0.5:
                f = ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2)))
            else:
                f = ImageFilter.UnsharpMask(
                    radius=float(rng.uniform(1.0, 2.5)), percent=int(rng.integers(50, 200)), threshold=0
                )
            a, b = _filter(a, f), _filter(b, f)
        if self.noise and rng.random() < self.noise:
            sigma = rng.uniform(1.0, 6.0)
            a = np.clip(a + rng.normal(0.0, sigma, a.shape), 0, 255).astype(np.uint8)
        if self.jpeg and rng.random() < self.jpeg:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=int(rng.integers(40, 96)))
            a = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return a, b


def shift_image(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate HWC ``x`` by (dx, dy) pixels, filling the uncovered border by reflection."""
    h, w = x.shape[:2]
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return x.copy()
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return padded[pad - dy : pad - dy + h, pad - dx : pad - dx + w].copy()


def _filter(x: np.ndarray, f: ImageFilter.Filter) -> np.ndarray:
    return np.asarray(Image.fromarray(x).filter(f))


def parse_augmentation(text: str | None) -> Augmentation:
    """``shift=4,sharpness=0.5,noise=0.3,jpeg=0.3`` (or ``none``/empty) -> Augmentation."""
    if not text or text == "none":
        return Augmentation()
    values: dict[str, float | int] = {}
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        if name not in FIELDS or not eq:
            raise DistillError(
                f"--augment {text!r}: expected NAME=VALUE pairs with NAME in {', '.join(FIELDS)}, "
                "e.g. shift=4,sharpness=0.5,noise=0.3,jpeg=0.3"
            )
        try:
            values[name] = int(value) if name == "shift" else float(value)
        except ValueError:
            raise DistillError(f"--augment {part!r}: {value!r} is not a number") from None
    return Augmentation(**values)
