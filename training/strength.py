"""Edit strength: the units, the range and the per-pair draw of a strength-conditioned edit.

A strength ``s`` is **relative**: the edit applied is ``w' = w + s * alpha * d``, where ``alpha`` is the
dataset's unit (``distill pairs --alpha``; the model-zoo entry's ``edit.alpha``). So ``s = 1`` is the
fixed-strength edit of today, ``s = 0`` the identity, ``s = -1`` the opposite edit ("younger" for an
age direction) and ``s = 0.5`` half of it.

``distill pairs --alpha-range LO:HI`` draws one ``s`` per pair, uniform in ``[LO, HI]``, from the pair's
seed alone (:func:`strength_for_seed`), so a resumed or sharded run draws the same strengths.

With several named edits (``--direction NAME=FILE`` each) a pair gets a strength vector, one ``s_k`` per edit
(``w' = w + sum_k s_k * alpha_k * d_k``), drawn by :func:`edit_strengths_for_seed` from a numpy Generator
seeded by the pair's seed: :data:`ACTIVE_EDITS` gives the chances of 0, 1 or 2 active edits (inactive ones
are 0), which edits are active is uniform, and an active one's strength is uniform in its range.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import DistillError, FieldError

UNITS = "relative"  # strength 1.0 = the entry's edit.alpha (the dataset's --alpha)
UNITS_TEXT = "relative: strength s applies w + s * edit.alpha * d (1.0 = the entry's alpha, 0 = the identity)"
EDITS_UNITS_TEXT = "relative per edit: strengths s_k apply w + sum_k s_k * alpha_k * d_k (1.0 = the edit's alpha, 0 = inactive)"
EVAL_STRENGTHS = (-1.0, -0.5, 0.5, 1.0)


@dataclass(frozen=True)
class StrengthRange:
    """A closed range ``[low, high]`` of relative strengths (``low < high``)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
            raise DistillError(f"strength range {self.low}:{self.high}: need finite LO < HI, e.g. -1.5:1.5")

    def contains(self, s: float, tol: float = 1e-6) -> bool:
        """Whether ``s`` lies in the range (with a small tolerance for float round-off)."""
        return self.low - tol <= s <= self.high + tol

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    def text(self) -> str:
        return f"{self.low:g}:{self.high:g}"


def parse_range(text: str, field: str = "alpha_range") -> StrengthRange:
    """``"LO:HI"`` (e.g. ``-1.5:1.5``) -> StrengthRange; FieldError naming ``field``, with an example, otherwise."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return StrengthRange(float(lo), float(hi))
    except ValueError:
        raise FieldError(field, f"{text!r}: expected LO:HI, e.g. -1.5:1.5") from None
    except DistillError as e:
        raise FieldError(field, str(e)) from None


def unit_uniform(*keys: int | str) -> float:
    """A uniform number in [0, 1) determined only by ``keys`` (blake2b; stable across runs and machines)."""
    digest = hashlib.blake2b(":".join(str(k) for k in keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def strength_for_seed(seed: int, strengths: StrengthRange) -> float:
    """The strength of pair ``seed``: uniform in the range, a pure function of the seed (rounded to 1e-6)."""
    u = unit_uniform("strength", seed)
    return round(strengths.low + u * (strengths.high - strengths.low), 6)


# Chances of 0, 1 and 2 active edits in a multi-edit pair: mostly one or two edits (the combinations a
# multi-edit student must learn), a few identity pairs. With one edit, the chance of two goes to one.
ACTIVE_EDITS = (0.1, 0.5, 0.4)


def edit_strengths_for_seed(seed: int, ranges: Sequence[StrengthRange]) -> list[float]:
    """The strength vector of pair ``seed``, one per edit (0 = inactive; rounded to 1e-6), a pure function of
    the seed and the ranges: the number of active edits from :data:`ACTIVE_EDITS`, then which, then how much."""
    rng = np.random.default_rng(seed)
    chances = list(ACTIVE_EDITS[: len(ranges)]) + [sum(ACTIVE_EDITS[len(ranges) :])]
    count = int(rng.choice(len(chances), p=chances))
    out = [0.0] * len(ranges)
    for k in sorted(rng.choice(len(ranges), size=count, replace=False).tolist()):
        out[k] = round(float(rng.uniform(ranges[k].low, ranges[k].high)), 6)
    return out


def strength_bins(values: Sequence[float], edges: Sequence[float]) -> list[tuple[float, float, int]]:
    """(low, high, count) for consecutive ``edges``; the last bin includes its upper edge."""
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = i == len(edges) - 2
        out.append((lo, hi, sum(1 for v in values if lo <= v < hi or (last and v == hi))))
    return out


def apply_strengths(
    ws: torch.Tensor,
    direction: torch.Tensor,
    alpha: float,
    strengths: torch.Tensor,
    layers: tuple[int, int],
    normalize: bool = False,
) -> torch.Tensor:
    """``ws + strengths[i] * alpha * direction`` per sample on W+ layers [start, stop) (as apply_direction)."""
    from editing.directions import apply_direction

    delta = apply_direction(torch.zeros_like(ws[:1]), direction, 1.0, layers, normalize)
    scale = (strengths.to(device=ws.device, dtype=ws.dtype) * alpha).view(-1, 1, 1)
    return ws + scale * delta
