"""`distill estimate`: time real training iterations on this machine and extrapolate a whole run's time and cost.

The seed project sized its student this way by hand: it timed a few epochs of Pix2PixHD and
extrapolated 200 epochs on one g4dn.xlarge (NVIDIA T4, $0.526/h) to 22 days, about $277. This
command does the same in seconds: it builds the student and its discriminator exactly as
`distill train` would, runs ``--warmup`` then ``--iters`` full iterations (G and D forward, backward,
Adam step) on a real batch of the dataset at its training size, and multiplies the median
iteration time by ceil(kept train pairs / batch) iterations per epoch and by ``--epochs``.

Not counted: per-epoch held-out evaluation and checkpointing (seconds per epoch) and data loading,
which DataLoader workers overlap with the GPU (the single-process load time is printed so a CPU-bound
loader is visible). Run it on the machine type you will rent, with the batch size you will use.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from core.errors import DistillError
from networks.pix2pixhd import (
    Pix2PixHDConfig,
    build_discriminator,
    build_generator,
    build_vgg_loss,
    get_preset,
)
from training.dataset import load_split
from training.devices import pick_device
from training.trainer import Pix2PixHDObjective, resolve_amp

SEED_FIGURE = "seed project: 200 epochs on a g4dn.xlarge (T4) at $0.526/h estimated at 22 days (about $277)"


@dataclass
class Estimate:
    """Measured iteration time and its extrapolation to a whole run."""

    device: str
    amp: str
    preset: str
    height: int
    width: int
    batch_size: int
    train_pairs: int
    iters_timed: int
    seconds_per_iter: float
    data_seconds_per_batch: float
    epochs: int
    price_per_hour: float

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.seconds_per_iter

    @property
    def iters_per_epoch(self) -> int:
        return math.ceil(self.train_pairs / self.batch_size)

    @property
    def epoch_seconds(self) -> float:
        return self.iters_per_epoch * self.seconds_per_iter

    @property
    def total_hours(self) -> float:
        return self.epoch_seconds * self.epochs / 3600

    @property
    def cost(self) -> float:
        return self.total_hours * self.price_per_hour

    def to_json(self) -> dict[str, Any]:
        derived = ("images_per_s", "iters_per_epoch", "epoch_seconds", "total_hours", "cost")
        return asdict(self) | {k: getattr(self, k) for k in derived} | {"total_days": self.total_hours / 24}

    def table(self) -> str:
        """A markdown table of the measurement and its extrapolation."""
        rows = [
            ("per-iteration time (median)", f"{self.seconds_per_iter:.4f} s ({self.iters_timed} timed)"),
            ("images/s", f"{self.images_per_s:.2f}"),
            ("data loading, one process", f"{self.data_seconds_per_batch:.4f} s/batch"),
            (
                "iterations/epoch",
                f"{self.iters_per_epoch:,} ({self.train_pairs:,} train pairs / batch {self.batch_size})",
            ),
            ("epoch time", _duration(self.epoch_seconds)),
            (
                f"{self.epochs} epochs",
                f"{_duration(self.total_hours * 3600)} = {_days(self.total_hours / 24)} days",
            ),
            (
                f"cost at ${self.price_per_hour:g}/h",
                f"${self.cost:,.2f}" if self.cost >= 1 else f"${self.cost:.2g}",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'quantity':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
        return "\n".join(lines)


def _days(days: float) -> str:
    return f"{days:,.1f}" if days >= 1 else f"{days:.2g}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds:.3g} s"  # a tiny model's epoch: never rounded to "0.0 s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(
    cfg: Pix2PixHDConfig,
    a: torch.Tensor,
    b: torch.Tensor,
    device: torch.device,
    amp: str = "auto",
    iters: int = 5,
    warmup: int = 2,
    vgg19: str | None = None,
) -> list[float]:
    """Seconds of each of ``iters`` timed training iterations (after ``warmup`` untimed ones) on batch (a, b)."""
    if iters < 1 or warmup < 0:
        raise DistillError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
    vgg = build_vgg_loss(vgg19) if cfg.lambda_vgg > 0 else None
    objective = Pix2PixHDObjective(
        G, D, cfg, device, resolve_amp(amp, device), vgg.to(device) if vgg is not None else None
    )
    a, b = a.to(device), b.to(device)
    strength = (
        None if cfg.condition == "none" else torch.ones(len(a), device=device)
    )  # a conditional student's input
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t0 = time.perf_counter()
        objective.step(a, b, strength)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def estimate(
    dataset: str | Path,
    *,
    epochs: int = 200,
    price_per_hour: float = 0.526,
    preset: str = "slim",
    overrides: dict[str, Any] | None = None,
    batch_size: int = 4,
    device: str = "auto",
    amp: str = "auto",
    iters: int = 5,
    warmup: int = 2,
    load_size: int | None = None,
    val_fraction: float = 0.05,
    vgg19: str | None = None,
) -> Estimate:
    """Time training iterations on ``dataset``'s images and extrapolate ``epochs`` epochs (see module doc)."""
    if epochs < 1 or price_per_hour < 0 or batch_size < 1:
        raise DistillError(
            f"need --epochs >= 1, --price-per-hour >= 0, --batch-size >= 1 (got {epochs}, {price_per_hour}, {batch_size})"
        )
    cfg = get_preset(preset, **(overrides or {}))
    dev = pick_device(device)
    split = load_split(dataset, cfg.stride, val_fraction=val_fraction, load_size=load_size, flip=True)
    t0 = time.perf_counter()
    items = [split.train[i % len(split.train)] for i in range(batch_size)]
    data_s = time.perf_counter() - t0
    a = torch.stack([it["a"] for it in items])
    b = torch.stack([it["b"] for it in items])
    times = time_iterations(cfg, a, b, dev, amp=amp, iters=iters, warmup=warmup, vgg19=vgg19)
    return Estimate(
        device=f"{dev} ({device_name(dev)})",
        amp=resolve_amp(amp, dev).name,
        preset=preset,
        height=split.geometry.height,
        width=split.geometry.width,
        batch_size=batch_size,
        train_pairs=len(split.train),
        iters_timed=len(times),
        seconds_per_iter=statistics.median(times),
        data_seconds_per_batch=data_s,
        epochs=epochs,
        price_per_hour=price_per_hour,
    )
