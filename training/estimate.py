"""`distill estimate`: time real training iterations on this machine and extrapolate a whole run's time and cost;
project the same run onto named GPUs from the step's measured FLOPs.

The seed project sized its student this way by hand: it timed a few epochs of Pix2PixHD and
extrapolated 200 epochs on one g4dn.xlarge (NVIDIA T4, $0.526/h) to 22 days, about $277. This
command does the same in seconds to minutes: it builds the student and its discriminator exactly as
`distill train` would, runs one probe iteration at batch 1 (its peak memory and its FLOPs, counted by
torch's FlopCounterMode), checks that the asked batch fits this device's memory, then runs ``--warmup``
and ``--iters`` full iterations (G and D forward, backward, Adam step) on a real batch of the dataset at
its training size (or, with no dataset, a random batch at ``--load-size``) and multiplies the median
iteration time by ceil(train pairs / batch) iterations per epoch (``--pairs``: the planned data set) and by
``--epochs``.

GPU figures for a machine that is not this one are *projections*, never measurements: the measured FLOPs
per iteration divided by the GPU's datasheet dense fp16/bf16 tensor throughput times an assumed efficiency
(``--efficiency``), priced at that GPU's own on-demand price; this machine's time is priced at
``--price-per-hour`` (none given: no cost). On a GPU the measured time is also set beside its projection.

Not counted: per-epoch held-out evaluation and checkpointing (seconds per epoch) and data loading,
which DataLoader workers overlap with the GPU (the single-process load time is printed so a CPU-bound
loader is visible).
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

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
GIB = 1024**3
MEMORY_MARGIN = 0.9  # a batch "fits" when its predicted peak is below this share of the device's memory


@dataclass(frozen=True)
class GpuSpec:
    """A GPU to project onto: its datasheet dense fp16/bf16 tensor-core peak, memory and one GPU's price."""

    name: str
    tensor_tflops: float
    memory_gib: float
    price_per_hour: float
    priced_as: str


# Datasheet dense (no sparsity) fp16/bf16 tensor TFLOPS; AWS on-demand us-east-1 prices per GPU (2024).
GPUS = (
    GpuSpec("T4", 65.0, 16, 0.526, "g4dn.xlarge"),
    GpuSpec("A10G", 70.0, 24, 1.006, "g5.xlarge"),
    GpuSpec("A100", 312.0, 40, 4.096, "p4d.24xlarge / 8"),
    GpuSpec("H100", 989.0, 80, 12.29, "p5.48xlarge / 8"),
)
DEFAULT_EFFICIENCY = 0.3


@dataclass
class Projection:
    """One GPU's projected iteration time: FLOPs / (datasheet throughput x efficiency). Not a measurement."""

    gpu: str
    tensor_tflops: float
    efficiency: float
    seconds_per_iter: float
    price_per_hour: float
    priced_as: str
    memory_gib: float
    fits: bool | None  # the batch's predicted memory (measured here, fp32) below the GPU's; None: unknown


@dataclass
class Estimate:
    """Measured iteration time and its extrapolation to a whole run, and the GPU projections."""

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
    price_per_hour: float | None
    scaled_from_batch: int | None = None  # the time was measured at this batch and scaled
    scaled_because: str = ""  # why: the batch would outlast --max-seconds, or not fit this machine's memory
    pairs_source: str = "dataset"  # "dataset" (its kept train pairs) or "--pairs" (the planned data set)
    flops_per_iter: float | None = None  # counted on the probe iteration, times the batch
    memory_bytes: float | None = None  # predicted peak of one iteration at the batch, on this device
    projections: list[Projection] = field(default_factory=list)

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
    def cost(self) -> float | None:
        return None if self.price_per_hour is None else self.total_hours * self.price_per_hour

    def run_hours(self, seconds_per_iter: float) -> float:
        """The whole run's hours at ``seconds_per_iter``."""
        return self.iters_per_epoch * seconds_per_iter * self.epochs / 3600

    def to_json(self) -> dict[str, Any]:
        derived = ("images_per_s", "iters_per_epoch", "epoch_seconds", "total_hours", "cost")
        projections = [
            asdict(p) | {"total_hours": self.run_hours(p.seconds_per_iter), "projection": True}
            for p in self.projections
        ]
        return (
            asdict(self)
            | {k: getattr(self, k) for k in derived}
            | {"total_days": self.total_hours / 24, "projections": projections}
        )

    def table(self) -> str:
        """A markdown table of the measurement on this machine and its extrapolation."""
        pairs = f"{self.train_pairs:,} train pairs" + (" planned" if self.pairs_source == "--pairs" else "")
        rows = [
            ("per-iteration time (median)", self._timed()),
            ("images/s", f"{self.images_per_s:.2f}"),
            ("data loading, one process", f"{self.data_seconds_per_batch:.4f} s/batch"),
            ("iterations/epoch", f"{self.iters_per_epoch:,} ({pairs} / batch {self.batch_size})"),
            ("epoch time", _duration(self.epoch_seconds)),
            (
                f"{self.epochs} epochs",
                f"{_duration(self.total_hours * 3600)} = {_days(self.total_hours / 24)} days",
            ),
        ]
        if self.memory_bytes is not None:
            rows.append(("memory of one iteration (predicted)", f"{self.memory_bytes / GIB:.2f} GiB"))
        if self.cost is not None:
            rows.append((f"cost at ${self.price_per_hour:g}/h", _money(self.cost)))
        else:
            rows.append(("cost", "give this machine's price with --price-per-hour"))
        return _markdown(("quantity", "value"), rows)

    def _timed(self) -> str:
        if self.scaled_from_batch is None:
            return f"{self.seconds_per_iter:.4f} s ({self.iters_timed} timed)"
        return (
            f"{self.seconds_per_iter:.4f} s (one iteration at batch {self.scaled_from_batch} timed, x "
            f"{self.batch_size / self.scaled_from_batch:g}: batch {self.batch_size} {self.scaled_because})"
        )

    def projection_table(self) -> str:
        """The GPU projections as a markdown table (every figure a projection, not a measurement)."""
        rows = []
        for p in self.projections:
            hours = self.run_hours(p.seconds_per_iter)
            fits = {True: "yes", False: "no: lower --batch-size", None: "?"}[p.fits]
            rows.append(
                (
                    p.gpu,
                    f"{p.tensor_tflops:g}",
                    _short(p.seconds_per_iter),
                    f"{_duration(hours * 3600)} = {_days(hours / 24)} days",
                    f"{_money(hours * p.price_per_hour)} at ${p.price_per_hour:g}/h ({p.priced_as})",
                    f"{p.memory_gib:g} GiB, fits: {fits}",
                )
            )
        header = ("GPU", "datasheet TFLOPS", "iteration", f"{self.epochs} epochs", "cost", "memory")
        return _markdown(header, rows)


def _markdown(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _short(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds >= 0.1 else f"{seconds * 1e3:.3g} ms"


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.2g}"


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


def _status_kib(field_name: str) -> float | None:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemoryProbe:
    """Current and peak memory of ``device``: CUDA's allocator, or this process's resident set on the CPU
    (its peak reset through /proc/self/clear_refs); ``capacity``: what one iteration may use in all."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current(self) -> float | None:
        if self.device.type == "cuda":
            return float(torch.cuda.memory_allocated(self.device))
        return _status_kib("VmRSS")

    def reset_peak(self) -> bool:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return True
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak(self) -> float | None:
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device))
        return _status_kib("VmHWM")

    def capacity(self) -> float | None:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            return float(total)
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024 + (self.current() or 0.0)
        except OSError:
            return None
        return None


@dataclass
class Probe:
    """One iteration at batch 1: its counted FLOPs and the memory it took beyond the built networks."""

    flops: float
    seconds: float  # its wall time (FLOP counting included: a little over a plain iteration)
    base_bytes: float | None  # networks on the device, before the first step
    state_bytes: float  # gradients and Adam's two moments: 3 x the parameters' bytes
    per_image_bytes: float | None

    def predict(self, batch: int) -> float | None:
        if self.base_bytes is None or self.per_image_bytes is None:
            return None
        return self.base_bytes + self.state_bytes + batch * self.per_image_bytes


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


class _Iteration:
    """G, D and the objective of one student, stepping on a fixed batch."""

    def __init__(self, cfg: Pix2PixHDConfig, device: torch.device, amp: str, vgg19: str | None) -> None:
        self.cfg, self.device = cfg, device
        G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
        self.param_bytes = sum(p.numel() * p.element_size() for m in (G, D) for p in m.parameters())
        vgg = build_vgg_loss(vgg19) if cfg.lambda_vgg > 0 else None
        self.objective = Pix2PixHDObjective(
            G, D, cfg, device, resolve_amp(amp, device), vgg.to(device) if vgg is not None else None
        )

    def step(self, a: torch.Tensor, b: torch.Tensor) -> None:
        strength = None if self.cfg.condition == "none" else torch.ones(len(a), device=self.device)
        self.objective.step(a, b, strength)


def probe_iteration(it: _Iteration, a: torch.Tensor, b: torch.Tensor) -> Probe:
    """Run one iteration on the first image of (a, b): count its FLOPs and measure its memory."""
    from torch.utils.flop_counter import FlopCounterMode

    memory = MemoryProbe(it.device)
    base = memory.current()
    can_peak = memory.reset_peak()
    counter = FlopCounterMode(display=False)
    t0 = time.perf_counter()
    try:
        with counter:
            it.step(a[:1].to(it.device), b[:1].to(it.device))
        _sync(it.device)
    except Exception as e:
        if _is_oom(e):
            raise DistillError(
                f"one iteration at batch 1 and {a.shape[-2]}x{a.shape[-1]} does not fit in the memory of "
                f"{it.device}; lower --load-size or pick a smaller --preset"
            ) from None
        raise
    peak = memory.peak() if can_peak else None
    state = 3.0 * it.param_bytes
    per_image = None if base is None or peak is None else max(peak - base - state, 0.0)
    return Probe(float(counter.get_total_flops()), time.perf_counter() - t0, base, state, per_image)


def check_batch_fits(
    probe: Probe, batch_size: int, device: torch.device, hw: tuple[int, int]
) -> float | None:
    """The predicted memory of an iteration at ``batch_size`` (None when this platform cannot tell);
    DistillError naming a batch that fits when it would not fit ``device``."""
    need = probe.predict(batch_size)
    capacity = MemoryProbe(device).capacity()
    if need is None or capacity is None or need <= MEMORY_MARGIN * capacity:
        return need
    room = MEMORY_MARGIN * capacity - (probe.base_bytes or 0.0) - probe.state_bytes
    fits = max(0, int(room // probe.per_image_bytes)) if probe.per_image_bytes else 0
    fix = f"--batch-size {fits} fits" if fits else "not even batch 1 fits: lower --load-size"
    raise DistillError(
        f"--batch-size {batch_size} at {hw[0]}x{hw[1]} needs about {need / GIB:.1f} GiB on {device}, which has "
        f"{capacity / GIB:.1f} GiB; {fix}"
    )


def time_iterations(
    cfg: Pix2PixHDConfig,
    a: torch.Tensor,
    b: torch.Tensor,
    device: torch.device,
    amp: str = "auto",
    iters: int = 5,
    warmup: int = 2,
    vgg19: str | None = None,
    max_seconds: float | None = None,
    progress: bool = False,
) -> list[float]:
    """Seconds of each of ``iters`` timed training iterations (after ``warmup`` untimed ones) on batch (a, b);
    past ``max_seconds`` of timing it stops after the first timed one."""
    if iters < 1 or warmup < 0:
        raise DistillError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    it = _Iteration(cfg, device, amp, vgg19)
    return _time(it, a.to(device), b.to(device), iters, warmup, max_seconds, progress)


def _time(
    it: _Iteration,
    a: torch.Tensor,
    b: torch.Tensor,
    iters: int,
    warmup: int,
    max_seconds: float | None,
    progress: bool,
) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    desc = f"timing {a.shape[-2]}x{a.shape[-1]}, batch {len(a)}, {it.device}"
    with tqdm(total=warmup + iters, desc=desc, unit="iter", disable=not progress, file=sys.stderr) as bar:
        for i in range(warmup + iters):
            _sync(it.device)
            t0 = time.perf_counter()
            try:
                it.step(a, b)
                _sync(it.device)
            except Exception as e:
                if _is_oom(e):
                    raise DistillError(
                        f"--batch-size {len(a)} at {a.shape[-2]}x{a.shape[-1]} ran out of memory on {it.device}; "
                        "lower --batch-size"
                    ) from None
                raise
            if i >= warmup:
                times.append(time.perf_counter() - t0)
            bar.update(1)
            if times and max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    return times


def project(
    flops_per_iter: float, efficiency: float, memory_bytes: float | None, gpus: tuple[GpuSpec, ...] = GPUS
) -> list[Projection]:
    """Each GPU's projected iteration time: ``flops_per_iter`` / (datasheet TFLOPS x ``efficiency``)."""
    return [
        Projection(
            gpu=g.name,
            tensor_tflops=g.tensor_tflops,
            efficiency=efficiency,
            seconds_per_iter=flops_per_iter / (g.tensor_tflops * 1e12 * efficiency),
            price_per_hour=g.price_per_hour,
            priced_as=g.priced_as,
            memory_gib=g.memory_gib,
            fits=None if memory_bytes is None else memory_bytes <= MEMORY_MARGIN * g.memory_gib * GIB,
        )
        for g in gpus
    ]


def _batch(
    dataset: str | Path | None,
    cfg: Pix2PixHDConfig,
    batch_size: int,
    load_size: int | None,
    val_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(a, b) of ``batch_size`` images, the dataset's train pairs (0 without one) and the load time."""
    if dataset is None:
        if load_size is None:
            raise DistillError("without a dataset give the image size with --load-size (e.g. 1024)")
        if load_size % cfg.stride:
            raise DistillError(
                f"--load-size {load_size}: not a multiple of the generator stride {cfg.stride}"
            )
        g = torch.Generator().manual_seed(0)
        a = torch.rand(batch_size, 3, load_size, load_size, generator=g) * 2 - 1
        return a, (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(-1, 1), 0, 0.0
    split = load_split(dataset, cfg.stride, val_fraction=val_fraction, load_size=load_size, flip=True)
    t0 = time.perf_counter()
    items = [split.train[i % len(split.train)] for i in range(batch_size)]
    data_s = time.perf_counter() - t0
    return (
        torch.stack([it["a"] for it in items]),
        torch.stack([it["b"] for it in items]),
        len(split.train),
        data_s,
    )


def estimate(
    dataset: str | Path | None,
    *,
    epochs: int = 200,
    price_per_hour: float | None = None,
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
    pairs: int | None = None,
    efficiency: float = DEFAULT_EFFICIENCY,
    max_seconds: float | None = None,
    progress: bool = False,
) -> Estimate:
    """Time training iterations on ``dataset``'s images (or random ones at ``load_size``) and extrapolate
    ``epochs`` epochs over its train pairs or the planned ``pairs``; project onto GPUS (see module doc)."""
    if epochs < 1 or (price_per_hour is not None and price_per_hour < 0) or batch_size < 1:
        raise DistillError(
            f"need --epochs >= 1, --price-per-hour >= 0, --batch-size >= 1 (got {epochs}, {price_per_hour}, {batch_size})"
        )
    if pairs is not None and pairs < 1:
        raise DistillError(f"--pairs {pairs}: need at least one pair")
    if dataset is None and pairs is None:
        raise DistillError("give a pair dataset, or the planned data set with --pairs N and --load-size")
    if not 0 < efficiency <= 1:
        raise DistillError(f"--efficiency {efficiency}: a share of the datasheet throughput, in (0, 1]")
    if iters < 1 or warmup < 0:
        raise DistillError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    cfg = get_preset(preset, **(overrides or {}))
    dev = pick_device(device)
    a, b, dataset_pairs, data_s = _batch(dataset, cfg, batch_size, load_size, val_fraction)
    hw = (a.shape[-2], a.shape[-1])
    it = _Iteration(cfg, dev, amp, vgg19)
    if progress:
        print(f"estimate: one iteration at batch 1 first (FLOPs, memory) on {dev}", file=sys.stderr)
    probe = probe_iteration(it, a, b)
    scaled_because = ""
    try:
        memory = check_batch_fits(probe, batch_size, dev, hw)
    except DistillError as e:
        if dev.type == "cuda":  # the machine the run is for: the batch must fit
            raise
        # a CPU stands in for the GPU the run is for: its memory is no limit on the batch there
        memory = probe.predict(batch_size)
        scaled_because = "does not fit this machine's memory"
        if progress:
            print(f"estimate: {e}; timing batch 1 and scaling it", file=sys.stderr)
    if not scaled_because and max_seconds is not None and probe.seconds * batch_size > max_seconds:
        scaled_because = "would outlast --max-seconds"
    scaled = batch_size > 1 and bool(scaled_because)
    if scaled:  # a CPU's iteration time grows in proportion to the batch; the probe was a real iteration
        times = [probe.seconds * batch_size]
    else:
        times = _time(it, a.to(dev), b.to(dev), iters, max(warmup - 1, 0), max_seconds, progress)
    train_pairs = dataset_pairs if pairs is None else pairs - round(pairs * val_fraction)
    flops = probe.flops * batch_size
    return Estimate(
        device=f"{dev} ({device_name(dev)})",
        amp=resolve_amp(amp, dev).name,
        preset=preset,
        height=hw[0],
        width=hw[1],
        batch_size=batch_size,
        train_pairs=train_pairs,
        iters_timed=len(times),
        seconds_per_iter=statistics.median(times),
        data_seconds_per_batch=data_s,
        epochs=epochs,
        price_per_hour=price_per_hour,
        scaled_from_batch=1 if scaled else None,
        scaled_because=scaled_because,
        pairs_source="dataset" if pairs is None else "--pairs",
        flops_per_iter=flops,
        memory_bytes=memory,
        projections=project(flops, efficiency, memory),
    )


def matching_gpu(device_text: str) -> str | None:
    """The name in GPUS of the GPU in ``device_text`` (e.g. "cuda (NVIDIA H100 80GB HBM3)"), or None."""
    return next((g.name for g in GPUS if device_text.startswith("cuda") and g.name in device_text), None)
