"""GPU latency of the NVIDIA-default Pix2PixHD and the shipped student, bare and through /transform.

For each model (``--models``: a Pix2PixHD preset, ``global`` = NVIDIA's defaults, with random weights -- speed does
not depend on them -- or a model-zoo entry, ``toyfaces-age`` the shipped student, whose graph has dynamic H and W
so it runs at every size) the fp32 ONNX file with dynamic batch, H and W (`training.export.export_onnx`; an
entry's own file) and its fp16 variant (`training.variants.convert_fp16`, made here when the entry ships none)
are timed at each ``--sizes`` x ``--batches`` in each engine (``--engines``):

- ``ort-fp32``, ``ort-fp16``: ONNX Runtime's CUDA provider with the service's options (`engines.ort`);
- ``trt-fp32``, ``trt-fp16``: its TensorRT provider on the fp32 file (fp16: TensorRT's fp16 build), where the
  build lists it and it starts (it needs TensorRT's own libraries beside onnxruntime-gpu);
- ``torch-fp32``, ``torch-fp16``: the same network in PyTorch eager (presets only: an entry ships no PyTorch
  checkpoint), what the GPU does with it whatever onnxruntime build is installed.

Each row has two medians of ``--repeats`` runs after ``--warmup`` (which also pays cuDNN's algorithm search and
TensorRT's engine build for the shape): *on device*, input and output bound on the GPU (ONNX Runtime I/O binding,
torch tensors) and synchronised after each run, so the GPU work plus launch cost; and *with copies*, numpy in
and out as the service's engine runs it (host->device and back). PSNR: fp16 against the same engine's fp32 on
the same smooth random batch. Then ``/transform`` p50 through a real ``distill serve`` on the GPU
(DISTILL_PROVIDER=cuda, every other setting default, legacy off) for each ``--service`` target (a zoo entry, or
PRESET@SIZE: an UNTRAINED entry with an fp16 variant, made as service_benchmark's ``--make-entry``), beside the
served engine's bare latency with copies, in this process, interleaved with the requests.

``--budget-s`` bounds the run: a row that would start after it is listed as skipped, not run
(``--service-reserve-s`` of it is kept for the servers; a row already started finishes, and TensorRT's first
build of a shape can take minutes). ``--device cpu`` runs the same code on the CPU provider at small sizes: a
check without a GPU (tests/unit/test_gpu_benchmark.py).

On this project's lent GPU machine (one H200, no network; its image's python3 has torch with CUDA 13, onnx,
httpx, and onnxruntime 1.30.0 -- the CPU package, by its pip list, not checked by running): the project's missing
packages (pydantic, pydantic-settings, fastapi, uvicorn, ...) travel as wheels (3.4 MB; the tracked tree is about
60 MiB of the 64 MiB a call may carry). The project's GPU route, onnxruntime-gpu 1.31.1
(docker/Dockerfile.gpu, README "GPU install"), is a 255 MB wheel and cannot travel, so unless the image has a GPU
build the ONNX Runtime rows and the service say "skipped: no CUDA provider" and the torch rows are the GPU
figures. Here, once (PyPI reachable), the wheels at the virtualenv's versions::

    echo /.whl/ >> .git/info/exclude; .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl $(.venv/bin/pip freeze | grep -iE '^(annotated[-_]types|fastapi|onnxconverter[-_]common|opentelemetry[-_]api|pydantic|pydantic[-_]core|pydantic[-_]settings|python[-_]dotenv|python[-_]multipart|starlette|typing[-_]extensions|typing[-_]inspection|uvicorn)==')

then the device command (carry ``.whl``, timeout_s 600), and copy $OUT/student_gpu.md to benchmarks/results/::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && set -o pipefail && PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site python3 benchmarks/gpu_benchmark.py --out $OUT/student_gpu.md 2>&1 | tee $OUT/log.txt

On a GPU machine with network, the README's GPU install, then ``python benchmarks/gpu_benchmark.py``.
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project and the benchmarks package
from student_benchmark import conv_macs, smooth_inputs  # noqa: E402

from benchmarks.harness import make_untrained_entry, parse_server_timing, serve, test_images  # noqa: E402
from editing.images import from_uint8  # noqa: E402
from engines.base import Engine, EngineSpec, strength_vector  # noqa: E402
from engines.cpu import cpu_model  # noqa: E402
from engines.measure import open_spec  # noqa: E402
from engines.ort import CUDA_EP, NP_TYPES, TRT_EP, OrtEngine  # noqa: E402
from engines.select import psnr_db, time_ms  # noqa: E402
from model_zoo.registry import default_root, get_entry  # noqa: E402
from model_zoo.schema import STRENGTH_INPUT  # noqa: E402
from networks.pix2pixhd import build_generator, get_preset  # noqa: E402
from networks.pix2pixhd.config import PRESETS  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.variants import convert_fp16  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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
MIN_SERVICE_S = 30.0  # a server is not started with less of the budget left
NO_MODEL = "no-such-model"  # the HTTP floor's uploads name it: refused with 404 before any decoding
GOAL_MS = 10.0  # the latency goal: 512 px NVIDIA default, fp16, p50 on a current datacenter GPU
DEFAULTS = {  # per --device: the GPU table, or a quick check of the same code on the CPU
    "cuda": {
        "models": ["global", "toyfaces-age"],
        "sizes": [256, 512, 1024],
        "batches": [1, 8],
        "service": ["toyfaces-age", "global@512"],
    },
    "cpu": {
        "models": ["tiny", "toyfaces-age"],
        "sizes": [32, 64],
        "batches": [1, 2],
        "service": ["toyfaces-age", "tiny@32"],
    },
}


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
class ServiceRow:
    """/transform through ``distill serve`` for one target, beside the served engine's bare latency."""

    target: str
    status: str = "measured"
    size: tuple[int, int] | None = None
    served: str = ""
    rtt_ms: float | None = None
    inference_ms: float | None = None
    floor_ms: float | None = None
    bare_ms: float | None = None
    note: str = ""


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


def seconds_left(deadline: float) -> float:
    return deadline - time.monotonic()


def short(e: BaseException) -> str:
    """An exception as one short line for a table cell: its end, where a server's log says what went wrong."""
    text = " ".join(str(e).split()) or type(e).__name__
    return ("..." + text[-300:]) if len(text) > 300 else text


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
            feed[STRENGTH_INPUT] = strength_vector(len(x), None)
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
            Row(model.name, engine, hw, b, "skipped", note=skip or budget_note(args))
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
            rows.append(Row(model.name, engine, hw, b, "skipped", note=skip or budget_note(args)))
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


def budget_note(args: argparse.Namespace) -> str:
    return f"the {args.budget_s:g} s budget was spent"


def parse_target(target: str) -> tuple[str, int] | None:
    """``PRESET@SIZE`` -> (preset, size); None for a zoo entry's name."""
    preset, at, size = target.partition("@")
    if not at:
        return None
    if preset not in PRESETS or not size.isdigit():
        raise SystemExit(
            f"--service {target}: expected an entry name or PRESET@SIZE with PRESET one of {', '.join(PRESETS)}"
        )
    return preset, int(size)


def served_spec(client: httpx.Client, base: str, model: str) -> EngineSpec:
    """The engine the server chose for ``model`` at warm-up (``/models``)."""
    info = next(m for m in client.get(base + "/models").json()["models"] if m["name"] == model)
    c = next(c for c in info["engine_candidates"] if c["status"] in ("chosen", "configured"))
    return EngineSpec(c["engine"], c["device"], c["variant"], c["precision"])


def transform_rounds(
    client: httpx.Client, base: str, model: str, images: list[bytes], engine: Engine, x: np.ndarray
) -> dict[str, list[float]]:
    """ms of, per image in turn: one /transform round trip and its Server-Timing ``inference`` stage, the same
    upload sent to a model the server lacks (the HTTP floor: 404 once the body is parsed), and one bare engine
    run; after 3 of each as warm-up."""

    def post(img: bytes, name: str) -> tuple[float, httpx.Response]:
        t0 = time.perf_counter()
        r = client.post(
            base + "/transform",
            files={"image": ("f.jpg", img, "image/jpeg")},
            data={"model": name, "format": "jpeg"},
        )
        return (time.perf_counter() - t0) * 1e3, r

    for img in images[:3]:
        post(img, model)
        post(img, NO_MODEL)
        engine.run(x)
    times: dict[str, list[float]] = {"rtt": [], "inference": [], "floor": [], "bare": []}
    for img in images:
        elapsed, r = post(img, model)
        r.raise_for_status()
        times["rtt"].append(elapsed)
        times["inference"].append(
            1e3 * parse_server_timing(r.headers.get("Server-Timing", "")).get("inference", 0.0)
        )
        elapsed, r = post(img, NO_MODEL)
        if r.status_code != 404:
            raise RuntimeError(f"the HTTP-floor request got {r.status_code}, expected 404: {r.text[:200]}")
        times["floor"].append(elapsed)
        times["bare"].append(time_ms(engine, x, repeats=1, warmup=0)[0])
    return times


def measure_service(
    target: str, args: argparse.Namespace, zoo: Path, tmp: Path, deadline: float
) -> ServiceRow:
    """/transform p50 of ``target`` through a fresh ``distill serve`` on the device, beside its engine's bare p50."""
    row = ServiceRow(target)
    if args.device == "cuda" and CUDA_EP not in ort.get_available_providers():
        row.status, row.note = (
            "skipped",
            (
                f"onnxruntime {ort.__version__} has no CUDA provider: the service would "
                "refuse DISTILL_PROVIDER=cuda (install onnxruntime-gpu)"
            ),
        )
        return row
    if seconds_left(deadline) < MIN_SERVICE_S:
        row.status, row.note = "skipped", budget_note(args)
        return row
    try:
        made = parse_target(target)
        if made:
            zoo = tmp / "zoo"
            name = make_untrained_entry(zoo, made[0], made[1], variants=("fp16",)).name
        else:
            name = target
        entry = get_entry(name, zoo)
        row.size = entry.input_size
        images = test_images(entry, args.requests)
        x = from_uint8(np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB"))).numpy()
        env = {
            "DISTILL_PROVIDER": args.device,
            "DISTILL_MODELS": name,
            "DISTILL_LEGACY_WORKERS": "0",
            "DISTILL_ENGINE_CACHE": str(tmp / "engine-cache"),
        }
        with (
            serve(zoo, env, ready_timeout=max(MIN_SERVICE_S, seconds_left(deadline))) as base,
            httpx.Client(timeout=60) as client,
        ):
            spec = served_spec(client, base, name)
            engine = open_spec(spec, entry.variant_path(spec.variant), entry.input_size)
            times = transform_rounds(client, base, name, images, engine, x)
    except Exception as e:  # a server that does not start or answer is reported; the table still gets written
        row.status, row.note = "failed", short(e)
        return row
    row.served = spec.label
    row.rtt_ms, row.inference_ms, row.floor_ms, row.bare_ms = (
        statistics.median(times[k]) for k in ("rtt", "inference", "floor", "bare")
    )
    print(
        f"/transform {target}: served {row.served}, p50 {row.rtt_ms:.2f} ms (bare {row.bare_ms:.2f} ms)",
        flush=True,
    )
    return row


def gpu_description(device: str) -> str:
    """The GPU's name, driver and memory (nvidia-smi, else torch), or why there is none."""
    if device == "cpu":
        return "none (`--device cpu`: a check of the code path on the CPU provider)"
    try:
        query = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()[0]
        )
        name, driver, memory = (s.strip() for s in query.split(","))
        return f"{name}, driver {driver}, {memory}"
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        pass
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (nvidia-smi unavailable)"
    return "none found (nvidia-smi and torch see no GPU)"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def size_text(hw: tuple[int, int] | None) -> str:
    return "-" if hw is None else (str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}")


def goal_line(rows: list[Row], device: str) -> str:
    """The latency goal (GOAL_MS) against the fastest fp16 ONNX Runtime row of ``global`` at 512 px, batch 1."""
    if device == "cpu":
        return f"Goal: `global` at 512 px, fp16, <= {GOAL_MS:g} ms p50 on a datacenter GPU: not measured (`--device cpu`)."
    at_goal = [
        r for r in rows if r.model == "global" and r.size == (512, 512) and r.batch == 1 and r.device_ms
    ]
    ort16 = [r for r in at_goal if r.engine in ("ort-fp16", "trt-fp16")]
    torch16 = [r for r in at_goal if r.engine == "torch-fp16"]
    text = f"Goal: `global` (NVIDIA default) at 512 px, batch 1, fp16, <= {GOAL_MS:g} ms p50 (seed: 110 ms on a 2019 GPU): "
    if ort16:
        best = min(ort16, key=lambda r: r.device_ms)
        text += (
            f"{best.device_ms:.2f} ms on device ({best.engine}; {best.copies_ms:.2f} ms with copies): "
            f"{'met' if best.device_ms <= GOAL_MS else 'not met'}."
        )
    else:
        text += "no ONNX Runtime fp16 row measured (see the skipped rows)."
    if torch16:
        text += f" PyTorch eager fp16, same network and GPU: {torch16[0].device_ms:.2f} ms on device."
    return text


def render(
    args: argparse.Namespace,
    models: list[Model],
    rows: list[Row],
    service: list[ServiceRow],
    started: str,
    elapsed_s: float,
) -> str:
    command = " ".join(["python benchmarks/gpu_benchmark.py", *(args.argv or [])])
    lines = [
        f"# Student latency on the GPU: ONNX Runtime CUDA/TensorRT fp32 and fp16, and /transform ({args.device})",
        "",
        f"Measured {started} by `{command}` (commit {commit()}; {elapsed_s:.0f} s of a {args.budget_s:g} s budget).",
        "",
        f"- GPU: {gpu_description(args.device)}",
        f"- CPU: {cpu_model()}",
        f"- software: Python {platform.python_version()}, onnxruntime {ort.__version__} (providers: "
        f"{', '.join(ort.get_available_providers())}), torch {torch.__version__} (CUDA {torch.version.cuda or '-'}, "
        f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '-'})",
        *(f"- model {n}" for m in models for n in m.notes),
        f"- each row: median of {args.repeats} runs after {args.warmup} warm-up run(s) (fewer, at least {MIN_RUNS}, "
        "where the budget ran out: `runs`); input: smooth random images in [-1, 1]. *On device*: input and output "
        "bound on the device (ONNX Runtime I/O binding, torch tensors), synchronised after each run; *with copies*: "
        "numpy in and out (host->device and back), as the service's engine runs a batch. TFLOP/s: 2 x the "
        "convolutions' multiply-adds over the on-device time (presets only). PSNR: fp16 against the same engine's "
        "fp32 output on the same batch (dB, data range 2). ONNX Runtime: the service's provider options "
        "(engines/ort.py; cuDNN exhaustive algorithm search); torch: eager, `cudnn.benchmark` on the GPU, TF32 at "
        "its defaults.",
        *([f"- {args.note}"] if args.note else []),
        "",
        goal_line(rows, args.device),
        "",
        "## Engines",
        "",
        "| model | engine | size | batch | on device ms/batch | ms/image | TFLOP/s | with copies ms/batch | ms/image | "
        "PSNR fp16 vs fp32 dB | runs | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = {e: i for i, e in enumerate(ENGINES)}
    model_order = {m: i for i, m in enumerate(args.models)}
    for r in sorted(
        rows, key=lambda r: (model_order.get(r.model, 0), order[r.engine], r.size or (0, 0), r.batch or 0)
    ):
        psnr = "reference" if r.status == "measured" and r.engine.endswith("fp32") else fmt(r.psnr_db, 1)
        status = r.status + (f": {r.note}" if r.note else "")
        lines.append(
            f"| {r.model} | {r.engine} | {size_text(r.size)} | {r.batch or '-'} | {fmt(r.device_ms)} | "
            f"{fmt(r.per_image(r.device_ms))} | {'-' if r.tflops is None else f'{r.tflops:.3g}'} | {fmt(r.copies_ms)} | {fmt(r.per_image(r.copies_ms))} | "
            f"{psnr if r.status == 'measured' else '-'} | {r.runs or '-'} | {status} |"
        )
    if service:
        lines += [
            "",
            "## /transform through `distill serve`",
            "",
            f"DISTILL_PROVIDER={args.device}, other settings default (the engine chosen at warm-up), legacy off; "
            f"{args.requests} sequential JPEG uploads at the native size after 3 warm-up requests; HTTP floor: "
            "the same uploads sent to a model the server lacks (404 once the body is parsed); bare: the served "
            "engine (X-Engine/device/X-Precision, as chosen at warm-up) alone in this process, with copies, one "
            "run after each request pair (interleaved, so a busy spell hits both alike). PRESET@SIZE: an "
            "UNTRAINED entry of that preset at that native size, with an fp16 variant (random weights: speed "
            "only; made as service_benchmark's `--make-entry`).",
            "",
            "| target | size | served | /transform p50 ms | inference stage p50 ms | HTTP floor p50 ms | "
            "bare engine p50 ms | /transform vs bare | status |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for s in service:
            ratio = f"{s.rtt_ms / s.bare_ms:.2f}x" if s.rtt_ms and s.bare_ms else "-"
            status = s.status + (f": {s.note}" if s.note else "")
            lines.append(
                f"| {s.target} | {size_text(s.size)} | {s.served or '-'} | {fmt(s.rtt_ms)} | "
                f"{fmt(s.inference_ms)} | {fmt(s.floor_ms)} | {fmt(s.bare_ms)} | {ratio} | {status} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda: the GPU; cpu: the same code on the CPU provider (a check without a GPU)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        help="Pix2PixHD presets (random weights) or model-zoo entries "
        f"(default {' '.join(DEFAULTS['cuda']['models'])}; cpu: "
        f"{' '.join(DEFAULTS['cpu']['models'])})",
    )
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--sizes", type=int, nargs="+", help="square sizes, px (default 256 512 1024; cpu: 32 64)")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 1 8; cpu: 1 2)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--service",
        nargs="+",
        help="/transform targets: zoo entries or PRESET@SIZE (an UNTRAINED "
        "entry), 'none' for no server (default toyfaces-age global@512; cpu: "
        "toyfaces-age tiny@32)",
    )
    p.add_argument("--requests", type=int, default=40, help="/transform requests per target")
    p.add_argument("--budget-s", type=float, default=420.0, help="rows that would start later are skipped")
    p.add_argument(
        "--service-reserve-s",
        type=float,
        default=150.0,
        help="of the budget, kept for the servers (the engine rows stop earlier)",
    )
    p.add_argument(
        "--model-zoo",
        type=Path,
        default=None,
        help="zoo of the entries (default: $DISTILL_MODEL_ZOO or the package's)",
    )
    p.add_argument("--note", default="", help="a sentence on the machine's state for the results")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file (default benchmarks/results/student_gpu.md; with --device cpu, none)",
    )
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    service = [] if args.service == ["none"] else args.service
    for target in service:
        parse_target(target)
    if (
        args.device == "cuda"
        and not torch.cuda.is_available()
        and CUDA_EP not in ort.get_available_providers()
    ):
        p.error(
            "no GPU here: torch sees none and onnxruntime has no CUDA provider; use --device cpu for a check run"
        )
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    out = args.out or (REPO / "benchmarks" / "results" / "student_gpu.md" if args.device == "cuda" else None)
    t0 = time.monotonic()
    deadline = t0 + args.budget_s
    engine_deadline = deadline - (args.service_reserve_s if service else 0.0)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    zoo = args.model_zoo or default_root()
    models: list[Model] = []
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    try:
        for name in args.models:
            if seconds_left(engine_deadline) <= 0:
                rows += [Row(name, e, status="skipped", note=budget_note(args)) for e in args.engines]
                continue
            print(f"preparing {name} ...", flush=True)
            models.append(prepare(name, tmp, zoo))
        refs: Refs = {}
        for engine in (
            e for e in RUN_ORDER if e in args.engines
        ):  # TensorRT's slow builds last, for every model
            for model in models:
                rows += measure_engine(engine, model, args, engine_deadline, tmp / "engine-cache", refs)
        refs.clear()
        service_rows = [measure_service(t, args, zoo, tmp, deadline) for t in service]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(args, models, rows, service_rows, started, time.monotonic() - t0)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
