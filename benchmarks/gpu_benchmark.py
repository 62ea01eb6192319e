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

This script holds the command line and the report; the engine rows are measured by ``gpu_engines.py``, the
``/transform`` rows by ``gpu_service.py``, both on ``harness.py``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the project and the benchmarks package
    sys.path.insert(0, str(REPO))
from benchmarks.gpu_engines import (  # noqa: E402
    ENGINES,
    MIN_RUNS,
    RUN_ORDER,
    Model,
    Refs,
    Row,
    engine_available,
    measure_engine,
    prepare,
)
from benchmarks.gpu_service import ServiceRow, measure_service, parse_target  # noqa: E402
from benchmarks.harness import budget_note, commit, seconds_left  # noqa: E402
from engines.cpu import cpu_model  # noqa: E402
from engines.ort import CUDA_EP  # noqa: E402
from model_zoo.registry import default_root  # noqa: E402

# the script's own entry points and the parts tests/unit/test_gpu_benchmark.py drives one by one
__all__ = ["Model", "engine_available", "main", "measure_engine", "measure_service", "prepare"]

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
                rows += [
                    Row(name, e, status="skipped", note=budget_note(args.budget_s)) for e in args.engines
                ]
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
