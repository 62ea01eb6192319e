"""`distill train`: fit a Pix2PixHD student on the kept pairs of a pair dataset.

The objective is NVIDIA pix2pixHD's: a conditional multi-scale discriminator sees cat(input, image);
the generator minimises GAN + lambda_feat * feature matching (+ lambda_vgg * VGG19 when weights are
given) (+ lambda_l1 * L1), the adversarial term weighted by lambda_gan; Adam(lr, beta1, 0.999); constant lr
for ``niter`` epochs, then linear decay to zero over ``niter_decay`` epochs (and, with ``lr_decay_steps``,
over the run's last steps). With ``ema`` an exponential moving average of G's weights is kept beside G; it
is what the samples, the held-out metrics and the export see. Both losses of an iteration are computed against the same
discriminator weights (as NVIDIA does), then G and D step.

A run folder holds::

    RUN/checkpoints/latest.pt   G (and G_ema), D, optimisers, AMP scaler, epoch / step-in-epoch / global step,
                                RNG states, the metrics window being averaged, config, options,
                                dataset path (atomic; every epoch, every --checkpoint-every steps, at
                                --max-steps and on SIGTERM/SIGINT)
    RUN/checkpoints/previous.pt the checkpoint before it: --resume falls back to it when latest.pt
                                cannot be read
    RUN/run.json                config, options, dataset and its metadata, status, last held-out metrics
    RUN/metrics.jsonl           {"kind": "step", ...losses, images_per_s} and {"kind": "epoch", val_psnr, val_ssim}
    RUN/samples/step_*.png      rows: input | student | teacher target (held-out pairs)

``--resume`` continues exactly where the run stopped, mid-epoch too: the epoch's order is a seeded
permutation, flips are a function of (seed, epoch, index) and the sampler skips the batches done.
Multi-GPU / multi-node: launch with ``torchrun``; each process trains ``--batch-size`` images per step
(DistributedDataParallel, DistributedSampler; nccl on CUDA, gloo on CPU) and only rank 0 writes.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.errors import DistillError
from core.runfiles import CHECKPOINT, PREVIOUS_CHECKPOINT
from networks.pix2pixhd import Pix2PixHDConfig, get_preset
from training.trainer.checkpoints import load_checkpoint, load_resumable
from training.trainer.distributed import init_distributed
from training.trainer.loop import Trainer, TrainResult
from training.trainer.objective import Pix2PixHDObjective, learning_rate, resolve_amp
from training.trainer.options import (
    STRUCTURAL_FIELDS,
    TrainOptions,
    resolve_epochs,
    resolve_options,
    restore_options,
)

__all__ = [
    "CHECKPOINT",
    "PREVIOUS_CHECKPOINT",
    "Pix2PixHDObjective",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "init_distributed",
    "learning_rate",
    "load_checkpoint",
    "resolve_amp",
    "resolve_epochs",
    "resolve_options",
    "restore_options",
    "train",
]


def train(
    opts: TrainOptions,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    epochs: int | None = None,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Train (or with ``resume`` continue) the run in ``opts.out``.

    ``overrides`` are Pix2PixHDConfig fields over the preset; on resume only non-structural ones (losses,
    lr, schedule) may change. ``epochs`` is the total (see :func:`resolve_epochs`). On resume every option
    comes from the checkpoint except those set on this call (``given``: the option names the caller set; None:
    those differing from TrainOptions' defaults), and the run says where it resumes and what changed.
    """
    overrides = dict(overrides or {})
    niter, niter_decay = overrides.pop("niter", None), overrides.pop("niter_decay", None)
    ckpt_path = Path(opts.out) / CHECKPOINT
    ckpt = None
    held = [p for p in (ckpt_path, Path(opts.out) / PREVIOUS_CHECKPOINT) if p.is_file()]
    if held and not resume:
        raise DistillError(
            f"{opts.out} already holds a run ({held[0]}); add --resume to continue it or pick a new --out"
        )
    if resume:
        ckpt = load_resumable(Path(opts.out), note=lambda msg: tqdm.write(msg, file=sys.stderr))
    changed: list[str] = []
    if ckpt is not None:
        opts = resolve_options(opts, ckpt["options"], ckpt_path)
        opts, changed = restore_options(opts, ckpt["options"], given)
        stored_cfg = Pix2PixHDConfig.from_dict(dict(ckpt["config"]))
        bad = [k for k in STRUCTURAL_FIELDS if k in overrides and overrides[k] != getattr(stored_cfg, k)]
        if bad:
            raise DistillError(
                f"--resume: the checkpoint {ckpt_path} has {', '.join(f'{k}={getattr(stored_cfg, k)!r}' for k in bad)}; "
                "the architecture cannot change, drop those options or train into a new --out"
            )
        cfg = resolve_epochs(stored_cfg.replace(**overrides), epochs, niter, niter_decay)
        changed += [
            f"{k} {getattr(stored_cfg, k)!r} -> {getattr(cfg, k)!r}"
            for k in (*overrides, "niter", "niter_decay")
            if getattr(cfg, k) != getattr(stored_cfg, k)
        ]
    else:
        opts = resolve_options(opts, None, ckpt_path)
        cfg = resolve_epochs(get_preset(opts.preset, **overrides), epochs, niter, niter_decay)
    env, device = init_distributed(opts.device)
    trainer = Trainer(opts, cfg, env, device, ckpt)
    if resume and ckpt is None:
        trainer._note(f"--resume: no checkpoint in {opts.out} yet; starting a new run")
    if ckpt is not None:
        trainer._note(resume_line(trainer, changed))
    return trainer.train()


def resume_line(trainer: Trainer, changed: list[str]) -> str:
    """Where a resumed run stands and what it trains toward, and the options given again that changed."""
    p, opts = trainer.progress, trainer.opts
    toward = f"step {p.global_step} of {trainer.total_steps}"
    limit = f"--max-steps {opts.max_steps}" if trainer.total_steps == opts.max_steps else "the schedule's end"
    line = (
        f"resuming {opts.out} at {toward} (epoch {p.epoch + 1} of {trainer.total_epochs}, batch "
        f"{p.step_in_epoch} of {trainer.steps_per_epoch}), toward {limit}; the run's options kept"
    )
    line += f", given again: {'; '.join(changed)}" if changed else ""
    if p.global_step >= trainer.total_steps and trainer.total_steps == opts.max_steps:
        line += f"; nothing left to train: give --max-steps above {opts.max_steps} to go on"
    return line
