"""The GPU benchmark's engine rows: a model's fp32 and fp16 ONNX files (a Pix2PixHD preset with random weights, or
a model-zoo entry), each engine (ONNX Runtime CUDA or CPU, its TensorRT provider, PyTorch eager) timed on device
and with copies at every size x batch, and fp16's PSNR against the same engine's fp32. ``gpu_benchmark.py`` runs
them and writes the table."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.harness import budget_note, seconds_left, short
from benchmarks.student_benchmark import conv_macs, smooth_inputs
from engines.base import EngineSpec, strength_vector
from engines.ort import CUDA_EP, NP_TYPES, TRT_EP, OrtEngine
from engines.select import psnr_db
from model_zoo.registry import get_entry
from model_zoo.schema import STRENGTH_INPUT
from networks.pix2pixhd import build_generator, get_preset
from networks.pix2pixhd.config import PRESETS
from training.export import export_onnx
from training.variants import convert_fp16

ENGINES = ("ort-fp32", "ort-fp16", "trt-fp32", "trt-fp16", "torch-fp32", "torch-fp16")  # the table's order
RUN_ORDER = (
    "ort-fp32",
    "ort-fp16",
    "torch-fp32",
    "torch-fp16",
    "trt-fp32",
    "trt-fp16",
)  # fp32 first: the PSNR reference
MIN_RUNS = 3  # timed runs a row gets even past the budget


@dataclass
class Row:
    """One engine x size x batch of a model (size and batch None: the whole engine was skipped or failed)."""

    model: str
    engine: str
    size: tuple[int, int] | None = None
    batch: int | None = None
    status: str = "measured"  # measured, skipped, failed
    device_ms: float | None = None
    copies_ms: float | None = None
    tflops: float | None = None
    psnr_db: float | None = None
    runs: int = 0
    note: str = ""

    def per_image(self, ms: float | None) -> float | None:
        return None if ms is None or not self.batch else ms / self.batch


@dataclass
class Model:
    """A model's two ONNX files and what is known of it."""

    name: str
    fp32: Path
    fp16: Path
    stride: int
    dynamic: bool  # H and W are symbolic in the graph: it runs at any multiple of the stride
    native: tuple[int, int] | None = None
    module: nn.Module | None = None  # the PyTorch network (presets only)
    macs_per_pixel: float | None = None
    notes: list[str] = field(default_factory=list)


def timed(fn: Callable[[], object], repeats: int, warmup: int, deadline: float) -> list[float]:
    """ms of ``repeats`` runs of ``fn`` after ``warmup`` (at least MIN_RUNS, fewer than ``repeats`` past the deadline)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for i in range(repeats):
        if i >= MIN_RUNS and time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def graph_is_dynamic(path: Path) -> bool:
    """Whether the first input's H and W are symbolic (``height``/``width``) rather than fixed numbers."""
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 4 and all(not d.HasField("dim_value") for d in dims[2:])


def prepare(name: str, tmp: Path, zoo: Path) -> Model:
    """The fp32 and fp16 files of a preset (random weights, seed 0) or a zoo entry."""
    if name in PRESETS:
        torch.manual_seed(0)
        cfg = get_preset(name)
        module = build_generator(cfg).eval()
        probe = max(4 * cfg.stride, cfg.min_size)
        fp32 = export_onnx(module, tmp / f"{name}.onnx", (probe, probe))
        macs = conv_macs(module, (probe, probe)) / probe**2  # convolutions scale with the pixels
        return Model(
            name,
            fp32,
            convert_fp16(fp32, tmp / f"{name}.fp16.onnx"),
            cfg.stride,
            True,
            module=module,
            macs_per_pixel=macs,
            notes=[f"`{name}`: preset, random weights (seed 0)"],
        )
    entry = get_entry(name, zoo)
    fp32 = entry.variant_path("fp32")
    if "fp16" in entry.variants:
        fp16, made = entry.variant_path("fp16"), "its shipped fp16 file"
    else:
        fp16, made = (
            convert_fp16(fp32, tmp / f"{name}.fp16.onnx"),
            "fp16 converted here (the entry ships none)",
        )
    dynamic = graph_is_dynamic(fp32)
    h, w = entry.input_size
    return Model(
        name,
        fp32,
        fp16,
        entry.stride,
        dynamic,
        native=(h, w),
        notes=[
            f"`{name}`: model-zoo entry, native {h}x{w}, graph H/W {'dynamic' if dynamic else 'fixed'}; {made}"
        ],
    )


def engine_available(engine: str, model: Model, device: str) -> str | None:
    """Why ``engine`` cannot run ``model`` on ``device`` here, or None when it can."""
    family = engine.split("-")[0]
    providers = ort.get_available_providers()
    build = f"onnxruntime {ort.__version__} ({', '.join(providers)})"
    if family == "trt" and device == "cpu":
        return "TensorRT runs on the GPU only"
    if family == "trt" and TRT_EP not in providers:
        return f"{build} has no TensorRT provider"
    if family == "ort" and device == "cuda" and CUDA_EP not in providers:
        return f"{build} has no CUDA provider: install onnxruntime-gpu"
    if family == "torch" and model.module is None:
        return "the entry ships ONNX files only (no PyTorch checkpoint)"
    if family == "torch" and device == "cuda" and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no GPU"
    return None


def ort_spec(engine: str, device: str) -> EngineSpec:
    """The engines.ort spec of ``ort-*`` / ``trt-*``: TensorRT runs the fp32 file at either precision."""
    family, precision = engine.split("-")
    if family == "trt":
        return EngineSpec("onnxruntime", "tensorrt", "fp32", precision)  # type: ignore[arg-type]
    return EngineSpec("onnxruntime", device, precision, precision)  # type: ignore[arg-type]


class OrtRunner:
    """An ONNX Runtime engine timed on device (I/O binding, fresh for each shape) and with copies (``engine.run``)."""

    def __init__(self, engine: OrtEngine) -> None:
        self.engine = engine
        self.location = "cpu" if engine.spec.device == "cpu" else "cuda"
        self.output_type = NP_TYPES.get(engine.session.get_outputs()[0].type, np.float32)

    def on_device(
        self, x: np.ndarray, repeats: int, warmup: int, deadline: float
    ) -> tuple[list[float], np.ndarray]:
        session, engine = self.engine.session, self.engine
        feed = {engine.input_name: np.ascontiguousarray(x, dtype=engine.input_dtype)}
        if engine.conditional:
            feed[STRENGTH_INPUT] = strength_vector(len(x), None, engine.strength_dims)
        values = {k: ort.OrtValue.ortvalue_from_numpy(v, self.location, 0) for k, v in feed.items()}
        out = ort.OrtValue.ortvalue_from_shape_and_type(list(x.shape), self.output_type, self.location, 0)
        binding = session.io_binding()
        for k, v in values.items():
            binding.bind_ortvalue_input(k, v)
        binding.bind_ortvalue_output(engine.output_name, out)

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        times = timed(run, repeats, warmup, deadline)
        return times, binding.copy_outputs_to_cpu()[0].astype(np.float32)

    def with_copies(self, x: np.ndarray, repeats: int, warmup: int, deadline: float) -> list[float]:
        return timed(lambda: self.engine.run(x), repeats, warmup, deadline)


class TorchRunner:
    """The PyTorch network in fp32 or fp16, timed on device (synchronised) and with copies (numpy in and out)."""

    def __init__(self, module: nn.Module, device: str, precision: str) -> None:
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.device = torch.device(device)
        self.module = module.to(device=self.device, dtype=self.dtype)  # in place: fp32 rows run first
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x)

    def on_device(
        self, x: np.ndarray, repeats: int, warmup: int, deadline: float
    ) -> tuple[list[float], np.ndarray]:
        xd = torch.from_numpy(x).to(self.device, self.dtype)
        out: list[torch.Tensor] = []

        def run() -> None:
            out[:] = [self.forward(xd)]
            self.sync()

        times = timed(run, repeats, warmup, deadline)
        return times, out[0].float().cpu().numpy()

    def with_copies(self, x: np.ndarray, repeats: int, warmup: int, deadline: float) -> list[float]:
        return timed(
            lambda: self.forward(torch.from_numpy(x).to(self.device, self.dtype)).float().cpu().numpy(),
            repeats,
            warmup,
            deadline,
        )


def open_runner(engine: str, model: Model, device: str, cache: Path) -> OrtRunner | TorchRunner:
    """``engine`` ready to run ``model`` (``cache``: TensorRT's engine cache)."""
    family, precision = engine.split("-")
    if family == "torch":
        return TorchRunner(model.module, device, precision)
    spec = ort_spec(engine, device)
    path = model.fp16 if spec.variant == "fp16" else model.fp32
    return OrtRunner(OrtEngine(spec, path, cache_dir=cache))


def shapes(model: Model, sizes: list[int]) -> list[tuple[tuple[int, int], str]]:
    """(H, W) per requested size, with why it is skipped ('' to run it)."""
    out = []
    for s in sizes:
        if s % model.stride:
            out.append(((s, s), f"not a multiple of the stride {model.stride}"))
        elif not model.dynamic and (s, s) != model.native:
            out.append(((s, s), f"the graph's H and W are fixed at {model.native}"))
        else:
            out.append(((s, s), ""))
    return out


Refs = dict[tuple[str, str, tuple[int, int], int], np.ndarray]  # (model, family, size, batch) -> fp32 output


def measure_engine(
    engine: str, model: Model, args: argparse.Namespace, deadline: float, cache: Path, refs: Refs
) -> list[Row]:
    """``engine`` on ``model`` at every size x batch; an fp32 engine's outputs go into ``refs``, the PSNR reference
    of the same engine's fp16 rows (ort-fp32's where the engine's own fp32 did not run)."""
    why = engine_available(engine, model, args.device)
    if why:
        return [Row(model.name, engine, status="skipped", note=why)]
    planned = [(hw, b, skip) for hw, skip in shapes(model, args.sizes) for b in args.batches]
    if seconds_left(deadline) <= 0:
        return [
            Row(model.name, engine, hw, b, "skipped", note=skip or budget_note(args.budget_s))
            for hw, b, skip in planned
        ]
    try:
        runner = open_runner(engine, model, args.device, cache)
    except Exception as e:  # an engine that does not start (TensorRT without its libraries, say) is reported
        return [Row(model.name, engine, status="failed", note=short(e))]
    family, precision = engine.split("-")
    rows = []
    for hw, b, skip in planned:
        if skip or seconds_left(deadline) <= 0:
            rows.append(Row(model.name, engine, hw, b, "skipped", note=skip or budget_note(args.budget_s)))
            continue
        row = Row(model.name, engine, hw, b)
        x = smooth_inputs(b, hw[0])
        try:
            times, y = runner.on_device(x, args.repeats, args.warmup, deadline)
            copies = runner.with_copies(x, args.repeats, 1, deadline)
        except Exception as e:  # out of memory at 1024 px x 8, say: the row says so, the others go on
            rows.append(Row(model.name, engine, hw, b, "failed", note=short(e)))
            continue
        row.device_ms, row.copies_ms, row.runs = (
            statistics.median(times),
            statistics.median(copies),
            len(times),
        )
        if model.macs_per_pixel:
            row.tflops = 2 * model.macs_per_pixel * hw[0] * hw[1] * b / row.device_ms / 1e9
        if precision == "fp32":
            refs[(model.name, family, hw, b)] = y
        else:
            ref = refs.get((model.name, family, hw, b))
            if ref is None and (ref := refs.get((model.name, "ort", hw, b))) is not None:
                row.note = "PSNR against ort-fp32"
            row.psnr_db = None if ref is None else psnr_db(y, ref)
        rows.append(row)
        print(
            f"{model.name} {engine} {hw[0]}x{hw[1]} b{b}: {row.device_ms:.2f} ms on device, "
            f"{row.copies_ms:.2f} ms with copies",
            flush=True,
        )
    del runner
    if args.device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows
