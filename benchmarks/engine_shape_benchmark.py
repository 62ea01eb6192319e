"""Inside inference: the bare engines beside the service's engine path, batch 1 and a full batch, in one run.

The service serves OpenVINO through :class:`engines.ov.OpenVinoEngine` and calls it from the micro-batcher's
worker thread. This script times, on the same model file, threads and input, in interleaved rounds (each unit
gets, in rotating order, a pause, one untimed run and a block of timed runs, so a busy spell of a shared machine
hits them all alike), at batch 1:

- bare OpenVINO compiled with a static ``[1, 3, H, W]`` input,
- bare OpenVINO compiled with a dynamic batch ``[?, 3, H, W]`` (what the service ran every batch on before
  it compiled static shapes too),
- bare ONNX Runtime (CPU provider, the fp32 file),
- the service's engine (``OpenVinoEngine.run``, as ``app.runtime.open_engine`` builds it with the default
  ``max_batch``, without HTTP),
- the same engine behind the service's ``MicroBatcher`` (one request at a time; the time is the batcher's
  ``inference`` stage, which includes the hop to its worker thread and back),
- ``OpenVinoEngine.run`` with one stream (``DISTILL_INFERENCE_STREAMS=1``, the service before streams; the
  service's engine, with its default streams, runs a lone batch on its latency build, so the two should match),
- ``OpenVinoEngine.run`` with no static shapes (``static_batches=()``): the service's engine as it was before;

and at a full micro-batch (the service's default ``max_batch``): bare static ``[N, 3, H, W]``, bare dynamic, and the
three ``OpenVinoEngine`` builds.

    python benchmarks/engine_shape_benchmark.py                       # toyfaces-age, OpenVINO bf16
    python benchmarks/engine_shape_benchmark.py --precision fp32 --runs 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project and the benchmarks package
from app.batching import MicroBatcher  # noqa: E402
from app.config import Settings  # noqa: E402
from benchmarks.harness import emit, machine, percentile, table  # noqa: E402
from engines.base import EngineSpec  # noqa: E402
from engines.cpu import isa_line  # noqa: E402
from engines.ort import cpu_session  # noqa: E402
from engines.ov import OV_PRECISION, OpenVinoEngine, core  # noqa: E402
from engines.select import HANDOVER_S  # noqa: E402
from model_zoo.registry import default_root, get_entry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = Settings.model_fields  # the service's defaults
MAX_BATCH = DEFAULTS["max_batch"].default
STREAMS = DEFAULTS["inference_streams"].default


def bare_openvino(
    path: Path, shape: list[int], precision: str, threads: int
) -> Callable[[np.ndarray], object]:
    """A bare OpenVINO infer request on ``path`` reshaped to ``shape`` (-1: dynamic), compiled as the service
    compiles (latency hint, the precision hint, the thread count)."""
    import openvino

    model = core().read_model(str(path))
    model.reshape({model.inputs[0]: openvino.PartialShape(shape)})
    config: dict[str, object] = {
        "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
    }
    request = core().compile_model(model, "CPU", config).create_infer_request()
    return lambda x: request.infer({0: x})


def batched(engine: OpenVinoEngine) -> tuple[Callable[[np.ndarray], float], Callable[[], None]]:
    """A run through the service's MicroBatcher (the default max_batch, as served): each call submits one request on a
    private event loop and returns the batcher's inference time (s); and a function that stops it."""
    loop = asyncio.new_event_loop()
    batcher = MicroBatcher(engine.run, max_batch=MAX_BATCH, max_wait_s=0.002, queue_size=64, name="bench")

    async def start() -> None:
        batcher.start()

    loop.run_until_complete(start())

    def run(x: np.ndarray) -> float:
        return loop.run_until_complete(batcher.submit(x)).inference_s

    def stop() -> None:
        loop.run_until_complete(batcher.stop())
        loop.close()

    return run, stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-zoo", type=Path, default=None)
    p.add_argument("--model", default="toyfaces-age")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="OpenVINO's precision")
    p.add_argument("--runs", type=int, default=120, help="timed runs per unit")
    p.add_argument("--block", type=int, default=4, help="timed runs per unit and round")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--note", default="", help="a sentence on the machine's state for the results")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_shape_cpu.md")
    args = p.parse_args(argv)
    info = machine()
    entry = get_entry(args.model, args.model_zoo or default_root())
    h, w = entry.input_size
    path = entry.variant_path("fp32")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    spec = EngineSpec("openvino", "cpu", "fp32", args.precision)
    engine = OpenVinoEngine(
        spec, path, (h, w), threads=args.threads, static_batches=(1, MAX_BATCH), streams=STREAMS
    )
    dynamic_only = OpenVinoEngine(spec, path, (h, w), threads=args.threads, static_batches=())
    one_stream = OpenVinoEngine(spec, path, (h, w), threads=args.threads, static_batches=(1, MAX_BATCH))
    session = cpu_session(path, args.threads)
    through_batcher, stop = batched(engine)
    full = np.random.default_rng(1).uniform(-1, 1, (MAX_BATCH, 3, h, w)).astype(np.float32)
    groups: list[dict[str, tuple[Callable[[np.ndarray], object], np.ndarray]]] = [
        {
            f"bare OpenVINO {args.precision}, static [1,3,{h},{w}]": (
                bare_openvino(path, [1, 3, h, w], args.precision, args.threads),
                x,
            ),
            f"bare OpenVINO {args.precision}, dynamic batch [?,3,{h},{w}]": (
                bare_openvino(path, [-1, 3, h, w], args.precision, args.threads),
                x,
            ),
            "bare ONNX Runtime fp32 (CPU provider)": (
                lambda v: session.run(None, {session.get_inputs()[0].name: v}),
                x,
            ),
            f"service engine: OpenVinoEngine.run ({args.precision}, {STREAMS} streams)": (engine.run, x),
            "service batcher: MicroBatcher inference stage": (through_batcher, x),
            "OpenVinoEngine.run with one stream (DISTILL_INFERENCE_STREAMS=1)": (
                one_stream.run,
                x,
            ),
            "OpenVinoEngine.run, dynamic batch only (the service before static shapes)": (
                dynamic_only.run,
                x,
            ),
        },
        {
            f"bare OpenVINO {args.precision}, static [{MAX_BATCH},3,{h},{w}]": (
                bare_openvino(path, [MAX_BATCH, 3, h, w], args.precision, args.threads),
                full,
            ),
            f"bare OpenVINO {args.precision}, dynamic batch [?,3,{h},{w}] at {MAX_BATCH}": (
                bare_openvino(path, [-1, 3, h, w], args.precision, args.threads),
                full,
            ),
            f"service engine: OpenVinoEngine.run ({args.precision}) at {MAX_BATCH}": (engine.run, full),
            f"OpenVinoEngine.run, dynamic batch only, at {MAX_BATCH}": (dynamic_only.run, full),
            f"OpenVinoEngine.run with one stream, at {MAX_BATCH}": (one_stream.run, full),
        },
    ]
    units = {name: unit for group in groups for name, unit in group.items()}
    times: dict[str, list[float]] = {name: [] for name in units}
    names = list(units)
    for fn, v in units.values():  # warm-up
        for _ in range(3):
            fn(v)
    rounds = -(-args.runs // args.block)
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            fn, v = units[name]
            time.sleep(HANDOVER_S)
            fn(v)
            for _ in range(args.block):
                t0 = time.perf_counter()
                inner = fn(v)
                elapsed = time.perf_counter() - t0
                times[name].append(1e3 * (inner if isinstance(inner, float) else elapsed))
    stop()
    tables = []
    for group in groups:
        base = times[next(iter(group))]  # the group's bare static model
        rows = [
            [
                name,
                f"{min(times[name]):.2f}",
                f"{statistics.median(times[name]):.2f}",
                f"{percentile(times[name], 90):.2f}",
                f"{min(times[name]) / min(base):.2f}x",
                f"{statistics.median(times[name]) / statistics.median(base):.2f}x",
            ]
            for name in group
        ]
        tables.append(
            table(["unit", "min ms", "p50 ms", "p90 ms", "min vs bare static", "p50 vs bare static"], rows)
        )
    lines = [
        f"# Inside inference: bare engines and the service's engine path (`{args.model}`, {h}x{w}, CPU)",
        "",
        f"Measured {info['date (UTC)']} UTC at commit {info['commit']} by `python benchmarks/engine_shape_benchmark.py "
        f"--precision {args.precision} --runs {args.runs} --block {args.block} --threads {args.threads}`.",
        "",
        f"- CPU: {info['cpu']}, {info['cores usable']} cores usable; ISA features: {isa_line()}; load average at "
        f"start {info['load average at start']}; onnxruntime {info['onnxruntime']}, openvino {core().get_versions('CPU')['CPU'].build_number}",
        f"- the same model file ({path.name}), {args.threads} threads and input in every unit, {args.runs} timed runs "
        f"each, in interleaved rounds of {args.block} (after a pause and one untimed run)",
        *([f"- {args.note}"] if args.note else []),
        "",
        "Batch 1 (a lone request):",
        "",
        tables[0],
        "",
        f"A full micro-batch of {MAX_BATCH} (the service's default max_batch):",
        "",
        tables[1],
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
