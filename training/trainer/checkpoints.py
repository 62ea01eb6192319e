"""Checkpoints of a run: RNG states, loading latest.pt (or previous.pt), the metrics window and the progress counters."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import DistillError
from core.runfiles import (
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
)
from networks.pix2pixhd import (
    CHECKPOINT_FORMAT,
)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors/lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a trainer checkpoint (tensors and plain containers only: ``weights_only=True``)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DistillError(
            f"{path}: cannot read this checkpoint ({type(e).__name__}); delete it and train again without --resume"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "D" not in ckpt:
        raise DistillError(
            f"{path}: not a `distill train` checkpoint ({CHECKPOINT_FORMAT} with G, D and optimiser state)"
        )
    return ckpt


def load_resumable(run_dir: Path, note: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest readable checkpoint of a run: latest.pt, else previous.pt (saying why through ``note``, and
    moving the unreadable latest.pt aside to ``latest.pt.unreadable`` so the next save cannot rotate it over
    the good one); None when the run has none; latest.pt's DistillError when neither can be read."""
    latest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    if not latest.is_file():
        return load_checkpoint(previous) if previous.is_file() else None
    try:
        return load_checkpoint(latest)
    except DistillError as e:
        if not previous.is_file():
            raise
        ckpt = load_checkpoint(previous)
        aside = latest.with_name(latest.name + ".unreadable")
        os.replace(latest, aside)
        note(
            f"--resume: {e}; resuming from {previous} (step {ckpt['global_step']}) instead; the unreadable "
            f"file is now {aside}"
        )
        return ckpt


@dataclass
class LogWindow:
    """The loss sums and training seconds of the steps since the last metrics row (kept in checkpoints, so a
    resumed run's first row averages the same steps as an uninterrupted run's)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # tensors: no device sync at every step
    steps: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": {k: float(v) for k, v in self.sums.items()},
            "steps": self.steps,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device) -> LogWindow:
        sums = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in state["sums"].items()}
        return cls(sums, int(state["steps"]), float(state["seconds"]))


@dataclass
class Progress:
    """Where the run stands: ``epoch`` (0-based) and the batches of it done, and optimiser steps in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
