"""A training run's options (TrainOptions), which of them a resumed run may change, and the epoch schedule."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DistillError, FieldError
from networks.pix2pixhd import (
    Pix2PixHDConfig,
)
from training.augment import parse_augmentation

# Generator / discriminator fields fixed by the weights: a resumed run cannot change them.
STRUCTURAL_FIELDS = (
    "input_nc",
    "output_nc",
    "ngf",
    "netG",
    "n_downsample_global",
    "n_blocks_global",
    "n_local_enhancers",
    "n_blocks_local",
    "residual",
    "condition",
    "n_edits",
    "norm",
    "upsample",
    "ndf",
    "n_layers_D",
    "num_D",
)
# Options that decide the model and which data a step sees: None means "the checkpoint's value" on
# --resume (changing them there is an error) and these defaults on a new run.
RUN_DEFAULTS: dict[str, Any] = {
    "preset": "slim",
    "batch_size": 4,
    "seed": 0,
    "val_fraction": 0.05,
    "load_size": None,
    "flip": True,
    "augment": "none",
}
# Options a resumed run takes from its checkpoint unless given again; a value given again wins and is reported.
RESUMED_OPTIONS = (
    "max_steps",
    "checkpoint_every",
    "sample_every",
    "log_every",
    "vgg19",
    "device",
    "amp",
    "workers",
    "progress",
    "init",
)


@dataclass
class TrainOptions:
    """Everything about a run except the network/loss configuration (that is a Pix2PixHDConfig)."""

    dataset: str
    out: str
    preset: str | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    checkpoint_every: int | None = None  # steps between checkpoints besides those at each epoch's end
    sample_every: int = 500
    log_every: int = 10
    vgg19: str | None = None
    device: str = "auto"
    amp: str = "auto"
    workers: int = 2
    seed: int | None = None
    val_fraction: float | None = None
    load_size: int | None = None
    flip: bool | None = None
    augment: str | None = (
        None  # training.augment spec, e.g. "shift=4,sharpness=0.5"; stored in canonical form
    )
    progress: bool = True
    init: str | None = None  # a new run's generator starts from these weights (networks.pix2pixhd.warmstart)

    def __post_init__(self) -> None:
        for name in ("batch_size", "sample_every", "log_every", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 0:
            raise FieldError("max_steps", f"must be >= 0, got {self.max_steps}")
        if self.workers < 0:
            raise FieldError("workers", f"must be >= 0, got {self.workers}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise FieldError("amp", f"must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.augment is not None:
            self.augment = str(parse_augmentation(self.augment))


def resolve_epochs(
    cfg: Pix2PixHDConfig, epochs: int | None, niter: int | None, niter_decay: int | None
) -> Pix2PixHDConfig:
    """Combine --epochs (total) with --niter/--niter-decay; --epochs alone splits half and half as NVIDIA's 100+100."""
    if epochs is None:
        return cfg.replace(
            **{k: v for k, v in (("niter", niter), ("niter_decay", niter_decay)) if v is not None}
        )
    if epochs < 1:
        raise FieldError("epochs", f"must be >= 1, got {epochs}")
    if niter is not None and niter_decay is not None and niter + niter_decay != epochs:
        raise DistillError(
            f"--epochs {epochs} disagrees with --niter {niter} + --niter-decay {niter_decay}; give two of them"
        )
    if niter is None and niter_decay is None:
        niter_decay = epochs // 2
    niter = epochs - niter_decay if niter is None else niter
    niter_decay = epochs - niter if niter_decay is None else niter_decay
    if niter < 0 or niter_decay < 0:
        raise DistillError(
            f"--epochs {epochs} is smaller than --niter/--niter-decay; give two consistent values"
        )
    return cfg.replace(niter=niter, niter_decay=niter_decay)


def resolve_options(opts: TrainOptions, stored: dict[str, Any] | None, ckpt_path: Path) -> TrainOptions:
    """Fill unset run options from the checkpoint (``stored``) or RUN_DEFAULTS; refuse changed ones on resume."""
    if stored is None:
        return dataclasses.replace(
            opts, **{k: v for k, v in RUN_DEFAULTS.items() if getattr(opts, k) is None}
        )
    changed = [k for k in RUN_DEFAULTS if getattr(opts, k) is not None and getattr(opts, k) != stored.get(k)]
    if changed:
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
        raise DistillError(
            f"--resume: the checkpoint {ckpt_path} was trained with {was}; drop those options or train into a new --out"
        )
    return dataclasses.replace(
        opts, **{k: stored.get(k, v) for k, v in RUN_DEFAULTS.items() if getattr(opts, k) is None}
    )


def restore_options(
    opts: TrainOptions, stored: dict[str, Any], given: Collection[str] | None = None
) -> tuple[TrainOptions, list[str]]:
    """A resumed run's RESUMED_OPTIONS: the checkpoint's (``stored``) except those in ``given`` (the options set
    on this call; None: those that differ from TrainOptions' defaults). Returns the options and one
    ``name: old -> new`` line per option given again with a different value, to report."""
    if given is None:
        defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
        given = [k for k in RESUMED_OPTIONS if getattr(opts, k) != defaults[k]]
    restored = {k: stored[k] for k in RESUMED_OPTIONS if k not in given and k in stored}
    changed = [
        f"{k} {stored[k]!r} -> {getattr(opts, k)!r}"
        for k in RESUMED_OPTIONS
        if k in given and k in stored and stored[k] != getattr(opts, k)
    ]
    return dataclasses.replace(opts, **restored), changed
