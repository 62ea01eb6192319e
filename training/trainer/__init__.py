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

import argparse
import contextlib
import copy
import dataclasses
import itertools
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from core.atomic import atomic_duplicate, atomic_write_json
from core.errors import DistillError, file_errors
from core.runfiles import (
    CHECKPOINT,
    METRICS,
    PREVIOUS_CHECKPOINT,
    RUN_JSON,
    SAMPLES,
    append_jsonl,
    truncate_jsonl,
)
from editing.images import make_grid, save_image, to_uint8
from networks.pix2pixhd import (
    CHECKPOINT_FORMAT,
    GANLoss,
    Pix2PixHDConfig,
    build_discriminator,
    build_generator,
    build_vgg_loss,
    feature_matching_loss,
    get_preset,
    save_generator,
)
from networks.pix2pixhd.config import PRESETS
from training.augment import parse_augmentation
from training.dataset import PairDataset, PairSplit, load_split
from training.devices import pick_device
from training.manifest import read_metadata
from training.metrics import psnr, ssim

# Generator / discriminator fields fixed by the weights: a resumed run cannot change them.
STRUCTURAL_FIELDS = (
    "input_nc", "output_nc", "ngf", "netG", "n_downsample_global", "n_blocks_global",
    "n_local_enhancers", "n_blocks_local", "residual", "condition", "norm", "upsample", "ndf", "n_layers_D", "num_D",
)  # fmt: skip
# Options that decide the model and which data a step sees: None means "the checkpoint's value" on
# --resume (changing them there is an error) and these defaults on a new run.
RUN_DEFAULTS: dict[str, Any] = {"preset": "slim", "batch_size": 4, "seed": 0, "val_fraction": 0.05, "load_size": None, "flip": True,
                                "augment": "none"}
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(Pix2PixHDConfig) if f.name not in ("input_nc", "output_nc"))


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
    augment: str | None = None  # training.augment spec, e.g. "shift=4,sharpness=0.5"; stored in canonical form
    progress: bool = True
    init: str | None = None  # a new run's generator starts from these weights (networks.pix2pixhd.warmstart)

    def __post_init__(self) -> None:
        for name in ("batch_size", "sample_every", "log_every", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise DistillError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 0:
            raise DistillError(f"--max-steps must be >= 0, got {self.max_steps}")
        if self.workers < 0:
            raise DistillError(f"--workers must be >= 0, got {self.workers}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise DistillError(f"--amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.augment is not None:
            self.augment = str(parse_augmentation(self.augment))


# ---------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[DistEnv, torch.device]:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device, start the process group (nccl/gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(), pick_device(device_name)
    env = DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world_size)
    return env, device


class ResumableSampler(Sampler[tuple[int, int]]):
    """DistributedSampler (seeded permutation per epoch, one shard per rank) that can start mid-epoch.

    Yields ``(epoch, index)`` keys, so the dataset's augmentation follows the epoch without holding state.
    """

    def __init__(self, dataset: PairDataset, env: DistEnv, seed: int) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch``'s permutation and skip its first ``start`` indices (already trained on)."""
        self.inner.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in itertools.islice(iter(self.inner), self.start, None))

    def __len__(self) -> int:
        return len(self.inner) - self.start


def _worker_init(_: int) -> None:
    """Data workers leave SIGINT/SIGTERM to the main process, which checkpoints and stops cleanly: each
    worker moves to its own process group, so Ctrl-C and a shutdown signal sent to the job's group reach
    the main process only. SIGTERM keeps its default action (the fork copied the main process's
    handler): the main process's exit, after an error too, terminates the workers instead of waiting
    for them forever. A worker whose main process is killed exits by itself (DataLoader's watchdog)."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_message(text: str) -> str:
    """The one-line message of a DistillError raised in a data worker (DataLoader re-raises it with the worker's
    traceback as the message: ``Caught ... Original Traceback ...``, the message on the last line)."""
    if not text.startswith("Caught DistillError in DataLoader"):
        return text
    return text.strip().splitlines()[-1].removeprefix(f"{DistillError.__module__}.{DistillError.__qualname__}: ")


# ---------------------------------------------------------------------------------------------- objective


@dataclass(frozen=True)
class AmpMode:
    """Autocast dtype (None: float32) and whether fp16 loss scaling is on."""

    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def scaled(self) -> bool:
        return self.dtype == torch.float16


def resolve_amp(name: str, device: torch.device) -> AmpMode:
    """``auto``: bf16 on CUDA GPUs that support it, else fp16 with a GradScaler; float32 on CPU.

    bf16 autocast is allowed on CPU but measured 20-30x slower than float32 for the slim student's
    training step here (torch 2.13, AVX-512 EPYC), so ``auto`` never picks it there.
    """
    if name == "auto":
        if device.type != "cuda":
            return AmpMode(None)
        return AmpMode(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if name == "fp16" and device.type != "cuda":
        raise DistillError("--amp fp16 needs a CUDA device; use --amp bf16 or off on CPU")
    return AmpMode({"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name])


def learning_rate(cfg: Pix2PixHDConfig, epoch: int) -> float:
    """NVIDIA's schedule as a function of the 0-based epoch: lr for niter epochs, then linear decay to 0."""
    if epoch < cfg.niter or cfg.niter_decay == 0:
        return cfg.lr
    return cfg.lr * max(0.0, 1.0 - (epoch - cfg.niter) / cfg.niter_decay)


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Parameters of ``net`` do not require grad inside the block (gradients still flow to its input)."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _split_batch(preds: list[list[torch.Tensor]], n: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    return [[f[:n] for f in scale] for scale in preds], [[f[n:] for f in scale] for scale in preds]


class Pix2PixHDObjective:
    """One pix2pixHD training iteration (G and D forward, backward, Adam step) plus optimiser state.

    ``G`` and ``D`` may be DistributedDataParallel wrappers. D's loss runs the wrapped D once on the
    fake and real pairs stacked along the batch (per-sample InstanceNorm makes that identical to two
    passes); the generator's adversarial pass uses the unwrapped D with frozen parameters, so D's
    gradient all-reduce happens once per iteration, on D's own loss.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        cfg: Pix2PixHDConfig,
        device: torch.device,
        amp: AmpMode,
        vgg: nn.Module | None = None,
    ) -> None:
        self.G, self.D, self.cfg, self.device, self.amp = G, D, cfg, device, amp
        self.g_net, self.d_net = unwrap(G), unwrap(D)
        self.vgg = vgg
        self.gan = GANLoss(cfg.gan_mode)
        betas = (cfg.beta1, 0.999)
        self.opt_G = torch.optim.Adam(self.g_net.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.d_net.parameters(), lr=cfg.lr, betas=betas)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp.scaled)
        self.g_ema = copy.deepcopy(self.g_net).eval().requires_grad_(False) if cfg.ema > 0 else None
        self.terms = ["G_GAN", "G_feat"] + (["G_vgg"] if vgg is not None and cfg.lambda_vgg > 0 else [])
        self.terms += ["G_l1"] if cfg.lambda_l1 > 0 else []

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp.dtype, enabled=self.amp.dtype is not None)

    def step(self, a: torch.Tensor, b: torch.Tensor, strength: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Train on one batch of inputs ``a`` and targets ``b`` ([N,3,H,W] in [-1,1]); detached losses.

        ``strength`` [N]: each pair's relative edit strength, for a conditional generator (cfg.condition)."""
        assert a.shape == b.shape and a.dim() == 4, (a.shape, b.shape)
        n = a.shape[0]
        cfg = self.cfg
        with self._autocast():
            fake = self.G(a) if cfg.condition == "none" else self.G(a, strength)
            pairs = torch.cat([torch.cat([a, fake.detach()], 1), torch.cat([a, b], 1)], 0)
            pred_fake_d, pred_real = _split_batch(self.D(pairs), n)
            loss_D_fake = self.gan(pred_fake_d, False)
            loss_D_real = self.gan(pred_real, True)
            loss_D = 0.5 * (loss_D_fake + loss_D_real)
            with frozen(self.d_net):
                pred_fake = self.d_net(torch.cat([a, fake], 1))
            loss_G_GAN = self.gan(pred_fake, True) * cfg.lambda_gan
            loss_G_feat = feature_matching_loss(pred_fake, pred_real, cfg.lambda_feat)
            loss_G = loss_G_GAN + loss_G_feat
            losses = {"G_GAN": loss_G_GAN, "G_feat": loss_G_feat}
            if self.vgg is not None and cfg.lambda_vgg > 0:
                losses["G_vgg"] = self.vgg(fake.float(), b.float()) * cfg.lambda_vgg
                loss_G = loss_G + losses["G_vgg"]
            if cfg.lambda_l1 > 0:
                losses["G_l1"] = F.l1_loss(fake.float(), b.float()) * cfg.lambda_l1
                loss_G = loss_G + losses["G_l1"]
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_G).backward()
        self.scaler.step(self.opt_G)
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_D).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        self._update_ema()
        losses.update(G=loss_G, D=loss_D, D_real=loss_D_real, D_fake=loss_D_fake)
        return {k: v.detach().float() for k, v in losses.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.g_ema is None:
            return
        for e, p in zip(self.g_ema.parameters(), self.g_net.parameters(), strict=True):
            e.lerp_(p.detach().to(e.dtype), 1.0 - self.cfg.ema)
        for e, b in zip(self.g_ema.buffers(), self.g_net.buffers(), strict=True):
            e.copy_(b)

    @property
    def g_eval(self) -> nn.Module:
        """The generator the outputs are judged on: the moving average when one is kept."""
        return self.g_ema if self.g_ema is not None else self.g_net

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer_G": self.opt_G.state_dict(), "optimizer_D": self.opt_D.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_G.load_state_dict(state["optimizer_G"])
        self.opt_D.load_state_dict(state["optimizer_D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


# ---------------------------------------------------------------------------------------------- checkpoints


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
        raise DistillError(f"{path}: not a `distill train` checkpoint ({CHECKPOINT_FORMAT} with G, D and optimiser state)")
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
        note(f"--resume: {e}; resuming from {previous} (step {ckpt['global_step']}) instead; the unreadable "
             f"file is now {aside}")
        return ckpt


@dataclass
class LogWindow:
    """The loss sums and training seconds of the steps since the last metrics row (kept in checkpoints, so a
    resumed run's first row averages the same steps as an uninterrupted run's)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # tensors: no device sync at every step
    steps: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "steps": self.steps, "seconds": self.seconds}

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


# ---------------------------------------------------------------------------------------------- trainer


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    progress: Progress
    status: str  # "finished" | "max_steps" | "interrupted"
    last_eval: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""


class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks after each step; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Owns the data, networks, objective and run folder of one training job (one process of it)."""

    def __init__(self, opts: TrainOptions, cfg: Pix2PixHDConfig, env: DistEnv, device: torch.device,
                 ckpt: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.opts, self.cfg, self.env, self.device = opts, cfg, env, device
        self.run_dir = Path(opts.out)
        self.amp = resolve_amp(opts.amp, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed training size: let cuDNN pick the fastest kernels
        with warnings.catch_warnings():
            if not env.is_main:
                warnings.simplefilter("ignore")
            self.data: PairSplit = load_split(
                opts.dataset, cfg.stride, val_fraction=opts.val_fraction, load_size=opts.load_size, flip=opts.flip, seed=opts.seed,
                augment=parse_augmentation(opts.augment),
            )
        self._check_strengths()
        torch.manual_seed(opts.seed)
        G = build_generator(cfg).to(device)
        D = build_discriminator(cfg).to(device)
        self.progress = Progress()
        self.window = LogWindow()
        self._saved_step: int | None = None  # the step of latest.pt: a save at that step replaces it, not rotates
        self.last_eval: dict[str, float] = {}
        if ckpt is not None:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
        elif opts.init:
            self._note(self._warm_start(G))
        if env.distributed:
            ids = [device.index] if device.type == "cuda" else None
            G = DistributedDataParallel(G, device_ids=ids)
            D = DistributedDataParallel(D, device_ids=ids)
        vgg = build_vgg_loss(opts.vgg19) if cfg.lambda_vgg > 0 else None
        self.objective = Pix2PixHDObjective(G, D, cfg, device, self.amp, vgg.to(device) if vgg is not None else None)
        if ckpt is not None and ckpt.get("G_ema") is not None and self.objective.g_ema is not None:
            self.objective.g_ema.load_state_dict(ckpt["G_ema"])
        if ckpt is not None:
            self.objective.load_state_dict(ckpt)
            self.progress = Progress(ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"])
            self._saved_step = self.progress.global_step
            if ckpt.get("log_window"):
                self.window = LogWindow.from_state_dict(ckpt["log_window"], device)
            self.last_eval = dict(ckpt.get("last_eval", {}))
            self._check_resumable(ckpt)
            set_rng_state(ckpt["rng"])
        self.sampler = ResumableSampler(self.data.train, env, opts.seed)
        self.train_loader = self._loader(self.data.train, self.sampler)
        self.val_loader = self._loader(self.data.val, None) if len(self.data.val) else None
        self.steps_per_epoch = math.ceil(len(self.sampler.inner) / opts.batch_size)
        self.total_epochs = cfg.niter + cfg.niter_decay
        self.total_steps = self.total_epochs * self.steps_per_epoch
        if opts.max_steps is not None:
            self.total_steps = min(self.total_steps, opts.max_steps)
        self.sample_batch = self._sample_batch()

    # -- setup helpers

    def _check_strengths(self) -> None:
        """A conditional student needs pairs over a range of strengths; a plain one warns on them (issue 14)."""
        ranged = any(r.strength is not None for r in self.data.train.rows)
        if self.cfg.condition != "none" and not ranged:
            raise DistillError(f"--condition {self.cfg.condition}: {self.opts.dataset} has one fixed strength; make "
                               "pairs over a range with `distill pairs --alpha-range=LO:HI`")
        if self.cfg.condition == "none" and ranged:
            self._note(f"{self.opts.dataset}: pairs over a range of strengths but a fixed-strength student; "
                       "pass --condition plane|modulation (with --residual) to learn the strength")

    def _warm_start(self, G: nn.Module) -> str:
        """Load ``opts.init`` into G, folding norms over up to 64 train inputs (see networks/pix2pixhd/warmstart.py)."""
        from networks.pix2pixhd.warmstart import warm_start

        items = [self.data.train[i] for i in range(min(64, len(self.data.train)))]
        inputs = torch.stack([it["a"] for it in items]).to(self.device)
        strength = None if self.cfg.condition == "none" else torch.stack([it["strength"] for it in items]).to(self.device)
        with file_errors(self.opts.init):
            return warm_start(G, self.opts.init, inputs, strength)

    def _check_resumable(self, ckpt: dict[str, Any]) -> None:
        """Mid-epoch resumption needs the same train set and shard layout; otherwise restart that epoch."""
        same_data = ckpt.get("train_seeds") == [r.seed for r in self.data.train.rows]
        same_world = ckpt.get("world_size") == self.env.world_size
        if self.progress.step_in_epoch and not (same_data and same_world):
            why = "the kept train pairs changed" if not same_data else f"world size {ckpt.get('world_size')} -> {self.env.world_size}"
            self._note(f"resume: {why} since the checkpoint; epoch {self.progress.epoch} restarts from its first batch")
            self.progress.step_in_epoch = 0
        elif not same_data:
            self._note("resume: the kept train pairs changed since the checkpoint; new epochs use the current set")

    def _sample_batch(self) -> torch.Tensor:
        """[2, n, 3, H, W]: inputs and targets of up to 4 held-out pairs (train pairs, unflipped, if none)."""
        source = self.data.val if len(self.data.val) else PairDataset(
            self.data.train.root, self.data.train.rows, self.data.geometry
        )
        items = [source[i] for i in range(min(4, len(source)))]
        self.sample_strength = torch.stack([it["strength"] for it in items])
        return torch.stack([torch.stack([it["a"] for it in items]), torch.stack([it["b"] for it in items])])

    def _note(self, msg: str) -> None:
        if self.env.is_main:
            tqdm.write(msg, file=sys.stderr)

    def _loader(self, dataset: PairDataset, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.opts.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.opts.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if self.opts.workers else None,
            persistent_workers=self.opts.workers > 0,
            # Workers start from a clean server process, not a fork of this one: a fork taken while other
            # threads (ONNX Runtime's, tqdm's monitor) hold locks can leave the worker deadlocked for good
            # (seen when the recipe resumed a student in the process that had just run its ONNX filter).
            multiprocessing_context="forkserver" if self.opts.workers else None,
        )

    # -- files (rank 0 only)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.env.is_main:
            append_jsonl(self.run_dir / METRICS, row)

    def _truncate_metrics(self) -> None:
        """On resume, drop rows logged after the checkpoint (they will be logged again) and torn lines."""
        if self.env.is_main:
            p = self.progress
            truncate_jsonl(self.run_dir / METRICS, lambda row: row.get("step", 0) <= p.global_step and not (
                row.get("kind") == "epoch" and row.get("epoch", 0) >= p.epoch))

    def _run_info(self, status: str) -> dict[str, Any]:
        try:
            meta = read_metadata(self.opts.dataset)
        except DistillError:
            meta = None
        g = self.data.geometry
        return {
            "format": "distill-run/1",
            "status": status,
            "dataset": str(Path(self.opts.dataset).resolve()),
            "dataset_metadata": meta,
            "data": {
                "pairs": self.data.n_total,
                "kept": self.data.n_kept,
                "train": len(self.data.train),
                "val": len(self.data.val),
                "height": g.height,
                "width": g.width,
                "stride": g.stride,
            },
            "preset": self.opts.preset,
            "config": asdict(self.cfg),
            "options": asdict(self.opts),
            "loss_terms": self.objective.terms,
            "world_size": self.env.world_size,
            "device": str(self.device),
            "amp": self.amp.name,
            "torch": torch.__version__,
            "epoch": self.progress.epoch,
            "step_in_epoch": self.progress.step_in_epoch,
            "global_step": self.progress.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "metrics": self.last_eval,
            "checkpoint": CHECKPOINT,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, status: str) -> Path:
        """Atomically write the checkpoint and run.json (rank 0; other ranks return at once); the checkpoint
        it replaces (of an earlier step) becomes previous.pt."""
        path = self.run_dir / CHECKPOINT
        if not self.env.is_main:
            return path
        p = self.progress
        if path.is_file() and self._saved_step != p.global_step:  # latest stays in place until it is replaced
            atomic_duplicate(path, self.run_dir / PREVIOUS_CHECKPOINT)
        ema = self.objective.g_ema
        save_generator(
            self.objective.g_net,
            path,
            self.cfg,
            G_ema=None if ema is None else {k: v.detach().cpu() for k, v in ema.state_dict().items()},
            D={k: v.detach().cpu() for k, v in self.objective.d_net.state_dict().items()},
            **self.objective.state_dict(),
            epoch=p.epoch,
            step_in_epoch=p.step_in_epoch,
            global_step=p.global_step,
            rng=rng_state(),
            options=asdict(self.opts),
            dataset=str(Path(self.opts.dataset).resolve()),
            train_seeds=[r.seed for r in self.data.train.rows],
            val_seeds=[r.seed for r in self.data.val.rows],
            world_size=self.env.world_size,
            last_eval=self.last_eval,
            log_window=self.window.state_dict(),
        )
        self._saved_step = p.global_step
        atomic_write_json(self.run_dir / RUN_JSON, self._run_info(status))
        return path

    @torch.no_grad()
    def write_sample(self) -> None:
        """Grid of held-out pairs: a row of inputs, a row of student outputs, a row of teacher targets."""
        if not self.env.is_main:
            return
        a, b = self.sample_batch.to(self.device)
        fake = self._generate(self.objective.g_eval, a, self.sample_strength).float()
        rows = [list(to_uint8(x)) for x in (a, fake, b)]
        save_image(self.run_dir / SAMPLES / f"step_{self.progress.global_step:08d}.png", make_grid(rows))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean PSNR/SSIM/L1 of the student against the teacher on the held-out pairs (rank 0)."""
        if not self.env.is_main or self.val_loader is None:
            return {}
        G = self.objective.g_eval
        sums = {"val_psnr": 0.0, "val_ssim": 0.0, "val_l1": 0.0}
        for batch in self.val_loader:
            a, b = batch["a"].to(self.device), batch["b"].to(self.device)
            fake = self._generate(G, a, batch["strength"]).float()
            sums["val_psnr"] += psnr(fake, b).sum().item()
            sums["val_ssim"] += ssim(fake, b).sum().item()
            sums["val_l1"] += (fake - b).abs().flatten(1).mean(1).sum().item()
        n = len(self.data.val)
        return {k: v / n for k, v in sums.items()} | {"n_val": n}

    def _generate(self, G: nn.Module, a: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """G(a), or G(a, strength) for a conditional generator."""
        return G(a) if self.cfg.condition == "none" else G(a, strength.to(self.device))

    # -- the loop

    def learning_rate(self) -> float:
        """NVIDIA's per-epoch schedule, times the linear decay over the last ``lr_decay_steps`` steps of the run."""
        lr = learning_rate(self.cfg, self.progress.epoch)
        if self.cfg.lr_decay_steps:
            left = self.total_steps - self.progress.global_step
            lr *= min(1.0, max(0.0, left / self.cfg.lr_decay_steps))
        return lr

    def _stop_requested(self, flag: _StopFlag) -> bool:
        """Every rank agrees: stop when any rank got a signal or the step budget is spent."""
        stop = flag.signum != 0
        if self.env.distributed:
            t = torch.tensor([int(stop)], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            stop = bool(t.item())
        return stop or self.progress.global_step >= self.total_steps

    def train(self) -> TrainResult:
        """Run epochs until the schedule ends, --max-steps is reached or a signal arrives; checkpoint."""
        opts, p = self.opts, self.progress
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_metrics()
            atomic_write_json(self.run_dir / RUN_JSON, self._run_info("running"))
        bar = tqdm(total=self.total_steps, initial=min(p.global_step, self.total_steps), unit="step",
                   desc="train", disable=not (self.env.is_main and opts.progress), dynamic_ncols=True)  # fmt: skip
        status = "finished"
        with _StopFlag() as flag:
            while p.epoch < self.total_epochs:
                if self._stop_requested(flag):
                    break
                finished = self._train_epoch(flag, bar)
                if not finished:
                    break
                self.last_eval = self.evaluate()
                self._append_metrics({"kind": "epoch", "epoch": p.epoch, "step": p.global_step, **self.last_eval})
                p.epoch, p.step_in_epoch = p.epoch + 1, 0
                self.save("running")
            if p.epoch < self.total_epochs:
                status = "interrupted" if flag.signum else "max_steps"
            path = self.save(status)
            bar.close()
            if flag.signum:
                self._note(
                    f"stopped by {signal.Signals(flag.signum).name} at step {p.global_step} "
                    f"(epoch {p.epoch}, batch {p.step_in_epoch}); checkpoint {path}; re-run with --resume to continue"
                )
            else:
                held_out = ", ".join(f"{k} {v:.4g}" for k, v in self.last_eval.items() if k != "n_val")
                if not held_out:
                    held_out = "held-out metrics come at the end of an epoch" if len(self.data.val) else "no held-out pairs"
                self._note(f"{status} at step {p.global_step} (epoch {p.epoch}); {held_out}; checkpoint {path}")
        if self.env.distributed and status != "interrupted":
            dist.barrier()
        return TrainResult(Progress(**asdict(p)), status, dict(self.last_eval), str(path))

    def _batches(self, flag: _StopFlag) -> Iterator[dict[str, torch.Tensor]]:
        """The epoch's remaining batches; ends early if a signal killed a data worker (it stops the run)."""
        it = iter(self.train_loader)
        while True:
            try:
                yield next(it)
            except StopIteration:
                return
            except DistillError as e:  # raised in a data worker: DataLoader wraps the worker's traceback into it
                raise DistillError(_worker_message(str(e))) from None
            except RuntimeError:
                if not flag.signum:
                    raise
                return

    def _train_epoch(self, flag: _StopFlag, bar: tqdm) -> bool:
        """Train the rest of the current epoch; True if it ran to its end, False if told to stop."""
        opts, p = self.opts, self.progress
        self.sampler.set_epoch(p.epoch, start=p.step_in_epoch * opts.batch_size)
        self.objective.G.train()
        self.objective.D.train()
        window = self.window
        t0 = time.perf_counter() - window.seconds
        for batch in self._batches(flag):
            a = batch["a"].to(self.device, non_blocking=True)
            b = batch["b"].to(self.device, non_blocking=True)
            strength = None if self.cfg.condition == "none" else batch["strength"].to(self.device, non_blocking=True)
            self.objective.set_lr(self.learning_rate())
            losses = self.objective.step(a, b, strength)
            p.global_step += 1
            p.step_in_epoch += 1
            for k, v in losses.items():
                window.sums[k] = window.sums.get(k, 0) + v
            window.steps += 1
            window.seconds = time.perf_counter() - t0
            bar.update(1)
            if p.global_step % opts.log_every == 0 or p.step_in_epoch == self.steps_per_epoch:
                means = {f"loss_{k}": round(float(v) / window.steps, 6) for k, v in window.sums.items()}
                ips = window.steps * opts.batch_size * self.env.world_size / max(window.seconds, 1e-9)
                self._append_metrics({"kind": "step", "epoch": p.epoch, "step": p.global_step,
                                      "lr": self.objective.opt_G.param_groups[0]["lr"], **means, "images_per_s": round(ips, 3)})  # fmt: skip
                bar.set_postfix(G=f"{means['loss_G']:.3f}", D=f"{means['loss_D']:.3f}", img_s=f"{ips:.1f}")
                window = self.window = LogWindow()
                t0 = time.perf_counter()
            if p.global_step % opts.sample_every == 0:
                self.write_sample()
            if opts.checkpoint_every and p.global_step % opts.checkpoint_every == 0 and p.step_in_epoch < self.steps_per_epoch:
                self.save("running")
            if self._stop_requested(flag):
                break
        return p.step_in_epoch >= self.steps_per_epoch


# ---------------------------------------------------------------------------------------------- entry points


def resolve_epochs(cfg: Pix2PixHDConfig, epochs: int | None, niter: int | None, niter_decay: int | None) -> Pix2PixHDConfig:
    """Combine --epochs (total) with --niter/--niter-decay; --epochs alone splits half and half as NVIDIA's 100+100."""
    if epochs is None:
        return cfg.replace(**{k: v for k, v in (("niter", niter), ("niter_decay", niter_decay)) if v is not None})
    if epochs < 1:
        raise DistillError(f"--epochs must be >= 1, got {epochs}")
    if niter is not None and niter_decay is not None and niter + niter_decay != epochs:
        raise DistillError(f"--epochs {epochs} disagrees with --niter {niter} + --niter-decay {niter_decay}; give two of them")
    if niter is None and niter_decay is None:
        niter_decay = epochs // 2
    niter = epochs - niter_decay if niter is None else niter
    niter_decay = epochs - niter if niter_decay is None else niter_decay
    if niter < 0 or niter_decay < 0:
        raise DistillError(f"--epochs {epochs} is smaller than --niter/--niter-decay; give two consistent values")
    return cfg.replace(niter=niter, niter_decay=niter_decay)


def resolve_options(opts: TrainOptions, stored: dict[str, Any] | None, ckpt_path: Path) -> TrainOptions:
    """Fill unset run options from the checkpoint (``stored``) or RUN_DEFAULTS; refuse changed ones on resume."""
    if stored is None:
        return dataclasses.replace(opts, **{k: v for k, v in RUN_DEFAULTS.items() if getattr(opts, k) is None})
    changed = [k for k in RUN_DEFAULTS if getattr(opts, k) is not None and getattr(opts, k) != stored.get(k)]
    if changed:
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
        raise DistillError(f"--resume: the checkpoint {ckpt_path} was trained with {was}; drop those options or train into a new --out")
    return dataclasses.replace(opts, **{k: stored.get(k, v) for k, v in RUN_DEFAULTS.items() if getattr(opts, k) is None})


def train(opts: TrainOptions, overrides: dict[str, Any] | None = None, resume: bool = False,
          epochs: int | None = None) -> TrainResult:  # fmt: skip
    """Train (or with ``resume`` continue) the run in ``opts.out``.

    ``overrides`` are Pix2PixHDConfig fields over the preset; on resume only non-structural ones (losses,
    lr, schedule) may change. ``epochs`` is the total (see :func:`resolve_epochs`).
    """
    overrides = dict(overrides or {})
    niter, niter_decay = overrides.pop("niter", None), overrides.pop("niter_decay", None)
    ckpt_path = Path(opts.out) / CHECKPOINT
    ckpt = None
    held = [p for p in (ckpt_path, Path(opts.out) / PREVIOUS_CHECKPOINT) if p.is_file()]
    if held and not resume:
        raise DistillError(f"{opts.out} already holds a run ({held[0]}); add --resume to continue it or pick a new --out")
    if resume:
        ckpt = load_resumable(Path(opts.out), note=lambda msg: tqdm.write(msg, file=sys.stderr))
    if ckpt is not None:
        opts = resolve_options(opts, ckpt["options"], ckpt_path)
        cfg = Pix2PixHDConfig.from_dict(dict(ckpt["config"]))
        changed = [k for k in STRUCTURAL_FIELDS if k in overrides and overrides[k] != getattr(cfg, k)]
        if changed:
            raise DistillError(
                f"--resume: the checkpoint {ckpt_path} has {', '.join(f'{k}={getattr(cfg, k)!r}' for k in changed)}; "
                "the architecture cannot change, drop those options or train into a new --out"
            )
        cfg = cfg.replace(**overrides)
    else:
        opts = resolve_options(opts, None, ckpt_path)
        cfg = get_preset(opts.preset, **overrides)
    cfg = resolve_epochs(cfg, epochs, niter, niter_decay)
    env, device = init_distributed(opts.device)
    trainer = Trainer(opts, cfg, env, device, ckpt)
    if resume and ckpt is None:
        trainer._note(f"--resume: no checkpoint in {opts.out} yet; starting a new run")
    return trainer.train()


def add_model_arguments(parser: argparse.ArgumentParser, schedule: bool = True) -> None:
    """--preset and one flag per Pix2PixHDConfig field (NVIDIA's spelling with dashes or underscores);
    ``schedule=False`` leaves out --niter/--niter-decay (for commands that take --epochs only)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="student architecture (default: slim)")
    group = parser.add_argument_group("pix2pixHD options (override the preset; NVIDIA's names)")
    for f in dataclasses.fields(Pix2PixHDConfig):
        if f.name not in _MODEL_FIELDS or (not schedule and f.name in ("niter", "niter_decay")):
            continue
        flags = sorted({f"--{f.name.replace('_', '-')}", f"--{f.name}"})
        kind = type(f.default)
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"default from the preset (NVIDIA: {f.default})")
            continue
        group.add_argument(*flags, dest=f.name, type=kind, default=None, metavar=kind.__name__.upper(),
                           help=f"default from the preset (NVIDIA: {f.default})")  # fmt: skip


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _MODEL_FIELDS if getattr(args, name, None) is not None}


def model_arguments(argv: list[str]) -> dict[str, Any]:
    """Pix2PixHDConfig overrides from pix2pixHD flags, e.g. ``["--ngf", "16", "--residual"]``."""
    parser = argparse.ArgumentParser(prog="distill train", add_help=False)
    add_model_arguments(parser)
    return model_overrides(parser.parse_args(argv))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the Pix2PixHD student on a pair dataset",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("dataset", help="pair dataset folder (manifest.jsonl, train_A/, train_B/)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, samples, metrics)")
    add_model_arguments(p)
    p.add_argument("--epochs", type=int, default=None, help="total epochs (niter + niter_decay; half decay if alone)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step per process (default 4)")
    p.add_argument("--max-steps", type=int, default=None, help="stop (and checkpoint) after this many steps in all")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="also checkpoint every N steps (default: at each epoch's end only); the one before is kept "
                        "as previous.pt, for --resume when latest.pt cannot be read")
    p.add_argument("--sample-every", type=int, default=500, help="write a sample grid every N steps (default 500)")
    p.add_argument("--log-every", type=int, default=10, help="append mean losses to metrics.jsonl every N steps (default 10)")
    p.add_argument("--vgg19", default=None, help="torchvision vgg19-dcbb9e9d.pth for the VGG loss (off without it)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N (torchrun: the local rank's GPU)")
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"], help="mixed precision (auto: bf16, or fp16 + loss scaling, on CUDA; off on CPU, where bf16 is far slower)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    p.add_argument("--seed", type=int, default=None, help="initialisation, shuffling, flips and split (default 0)")
    p.add_argument("--val-fraction", type=float, default=None, help="held-out share of kept pairs (default 0.05)")
    p.add_argument("--load-size", type=int, default=None, help="resize to this width (multiple of the stride)")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no horizontal flip augmentation")
    p.add_argument("--augment", default=None, metavar="SPEC",
                   help="paired augmentation, e.g. shift=4,sharpness=0.5,noise=0.3,jpeg=0.3 (training/augment.py; default none)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--init", default=None, metavar="GENERATOR",
                   help="a new run's generator starts from these weights: a distill checkpoint, NVIDIA latest_net_G.pth "
                        "or a model-zoo entry's model.onnx (instance norms folded for --norm none)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(
        dataset=args.dataset,
        out=args.out,
        preset=args.preset,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        log_every=args.log_every,
        vgg19=args.vgg19,
        device=args.device,
        amp=args.amp,
        workers=args.workers,
        seed=args.seed,
        val_fraction=args.val_fraction,
        load_size=args.load_size,
        flip=args.flip,
        augment=args.augment,
        progress=args.progress,
        init=args.init,
    )


def run(args: argparse.Namespace) -> int:
    with file_errors(args.out):
        result = train(options_from_args(args), model_overrides(args), resume=args.resume, epochs=args.epochs)
    if result.status == "interrupted":
        return 130
    return 0
