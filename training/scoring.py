"""The scorer interface and the keep rules (used by `distill filter`, `distill fit` and `distill evaluate`).

A :class:`Scorer` turns a batch of uint8 images into named numbers (``face_count``, ``age``, ...).
A :class:`KeepRule` turns one number into a reason to reject (``"no face"``, ``"age < 18"``). New
scorers subclass :class:`Scorer` and register a constructor in ``training.filters.SCORERS``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from core.errors import DistillError


class Scorer(ABC):
    """Scores images. ``keys`` names the scores it returns for every image; ``rules`` its built-in checks."""

    name: str = "scorer"

    @property
    @abstractmethod
    def keys(self) -> tuple[str, ...]: ...

    @abstractmethod
    def score(self, images: np.ndarray) -> list[dict[str, float]]:
        """uint8 RGB images [N,H,W,3] -> one dict (``keys`` -> float) per image."""

    def rules(self) -> list[KeepRule]:
        """Checks that come with the scorer (e.g. the face detector's "at least one face")."""
        return []


@dataclass(frozen=True)
class KeepRule:
    """Keep an image when ``low <= scores[key] <= high`` (either bound may be None); else say why not."""

    key: str
    low: float | None = None
    high: float | None = None
    reason_low: str | None = None  # default "<key> < <low>"
    reason_high: str | None = None  # default "<key> > <high>"

    def check(self, scores: dict[str, float]) -> str | None:
        """None when the value is in range, else the reason (categorical, so reports can count it)."""
        value = scores.get(self.key)
        if value is None or math.isnan(value):
            return f"{self.key} missing"
        if self.low is not None and value < self.low:
            return self.reason_low or f"{self.key} < {self.low:g}"
        if self.high is not None and value > self.high:
            return self.reason_high or f"{self.key} > {self.high:g}"
        return None


def parse_keep(text: str) -> KeepRule:
    """``age=18:65`` / ``age=18:`` / ``age=:65`` -> KeepRule (bounds inclusive)."""
    key, sep, rng = text.partition("=")
    lo, colon, hi = rng.partition(":")
    if not sep or not colon or not key:
        raise DistillError(
            f"--keep {text!r}: expected NAME=LOW:HIGH (either bound may be empty), e.g. age=18:65"
        )
    try:
        low = float(lo) if lo.strip() else None
        high = float(hi) if hi.strip() else None
    except ValueError:
        raise DistillError(f"--keep {text!r}: bounds must be numbers") from None
    if low is not None and high is not None and low > high:
        raise DistillError(f"--keep {text!r}: LOW is above HIGH")
    return KeepRule(key.strip(), low, high)
