"""Applying a latent direction in StyleGAN2's W space: read a direction file, add it to W+ layers.

A direction ``d`` edits an image by ``w' = w + alpha * d`` on the W+ layers ``[start, stop)`` (default 0-7:
coarse and middle styles, as the StyleGAN2-distillation code did); several edits add up,
``w + sum_k alpha_k * d_k`` each on its own layers (:func:`apply_edits`). The pipeline (pairs, evaluation) and the
service's legacy endpoint edit this one way; fitting a direction is a pipeline stage (``training.directions``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.errors import DistillError

DEFAULT_LAYERS = (0, 8)


def load_direction(path: str | os.PathLike, num_ws: int, w_dim: int) -> torch.Tensor:
    """Read a ``.npy``/``.pt`` direction of shape (w_dim,), (1, w_dim) or (num_ws, w_dim) -> [num_ws, w_dim]."""
    path = Path(path)
    expected = f"({w_dim},), (1, {w_dim}) or ({num_ws}, {w_dim})"
    if not path.is_file():
        raise DistillError(f"{path}: direction file not found (expected .npy or .pt of shape {expected})")
    try:
        if path.suffix == ".npy":
            d = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix in (".pt", ".pth"):
            d = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(d, dict) and len(d) == 1:
                d = next(iter(d.values()))
            if not isinstance(d, torch.Tensor):
                raise ValueError(f"holds a {type(d).__name__}, not a tensor")
        else:
            raise ValueError("unknown suffix")
    except Exception as e:
        raise DistillError(
            f"{path}: not a readable direction ({e}); expected .npy or .pt of shape {expected}"
        ) from e
    d = d.detach().to(torch.float32)
    if d.ndim == 1 and d.shape[0] == w_dim:
        d = d[None]
    if d.ndim != 2 or d.shape[1] != w_dim or d.shape[0] not in (1, num_ws):
        raise DistillError(
            f"{path}: direction has shape {tuple(d.shape)}, expected {expected} for this generator"
        )
    if not torch.isfinite(d).all():
        raise DistillError(f"{path}: direction contains NaN or infinite values")
    return d.expand(num_ws, w_dim).clone()


def apply_direction(
    ws: torch.Tensor,
    direction: torch.Tensor,
    alpha: float,
    layers: tuple[int, int] = DEFAULT_LAYERS,
    normalize: bool = False,
) -> torch.Tensor:
    """``ws + alpha * direction`` on W+ layers [start, stop) (clipped to num_ws); other layers unchanged.

    ``direction`` is [num_ws, w_dim] or [w_dim]; ``normalize`` scales each layer's vector to unit length.
    """
    assert ws.ndim == 3, f"ws must be [N, num_ws, w_dim], got {tuple(ws.shape)}"
    num_ws, w_dim = ws.shape[1:]
    d = direction.to(device=ws.device, dtype=ws.dtype)
    if d.ndim == 1:
        d = d[None].expand(num_ws, w_dim)
    assert d.shape == (num_ws, w_dim), f"direction {tuple(d.shape)} does not match ws {tuple(ws.shape)}"
    if normalize:
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    start, stop = layers[0], min(layers[1], num_ws)
    if not 0 <= start < stop:
        raise DistillError(f"layers {layers[0]}:{layers[1]}: empty for a generator with {num_ws} W+ layers")
    out = ws.clone()
    out[:, start:stop] += alpha * d[start:stop]
    return out


@dataclass(frozen=True)
class LatentEdit:
    """One edit of several applied together: a loaded direction, its latent strength and its W+ layers."""

    direction: torch.Tensor
    alpha: float
    layers: tuple[int, int] = DEFAULT_LAYERS


def apply_edits(ws: torch.Tensor, edits: Sequence[LatentEdit], normalize: bool = False) -> torch.Tensor:
    """``ws + sum_k alpha_k * d_k``, each edit on its own W+ layers (as :func:`apply_direction`, one after the
    other: the sum the multi-edit pairs are made with)."""
    out = ws
    for e in edits:
        out = apply_direction(out, e.direction, e.alpha, e.layers, normalize)
    return out
