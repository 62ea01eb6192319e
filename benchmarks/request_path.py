"""Where one /transform request's CPU goes, and which serving settings make 16 clients pay, in one run.

(a) Stages, in-process: one request's work stage by stage (HTTP parse: the multipart body through Starlette's
    parser; decode and crop; preprocess; inference at batch 1 and per item of a full micro-batch; postprocess;
    encode), for JPEG uploads of 128, 512 and 1024 px on the shipped 128 px default, with each JPEG codec
    beside Pillow's. Units are interleaved in rounds, so a busy spell of a shared machine hits them all alike.
(b) Load: several `distill serve` configurations (worker processes, inference threads, max_batch,
    max_wait_ms) run side by side; each is driven by 1 client and by 16 clients in alternating slices, and the
    table gives each configuration's 16-client throughput over its own 1-client throughput. The client is a
    bare keep-alive HTTP/1.1 loop over asyncio streams sending a pre-encoded multipart body, so the load
    generator, which shares the cores, costs a fraction of what the service does per request.

    python benchmarks/request_path.py --out benchmarks/results/request_path_cpu.md
    python benchmarks/request_path.py --stages-only
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app import imaging  # noqa: E402
from app.config import Settings  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    HOST,
    cpu_seconds,
    emit,
    machine,
    percentile,
    serve,
    server_pids,
    table,
)
from editing.pixels import from_output, to_input  # noqa: E402
from engines.base import EngineSpec  # noqa: E402
from engines.ov import OpenVinoEngine  # noqa: E402
from model_zoo.registry import default_root, get_entry  # noqa: E402

MODEL = "toyfaces-age"
SIDES = (128, 512, 1024)
DEFAULTS = Settings.model_fields  # the service's defaults
MAX_BATCH = DEFAULTS["max_batch"].default
STREAMS = DEFAULTS["inference_streams"].default
SAMPLE = REPO / "model_zoo" / MODEL / "samples" / "00000007.png"
# label -> (uvicorn workers, DISTILL_* settings), every tuned setting spelled out
CONFIGS: dict[str, tuple[int, dict[str, str]]] = {
    "1 stream, max_batch 8 (the defaults before)": (
        1,
        {"DISTILL_INFERENCE_STREAMS": "1", "DISTILL_MAX_BATCH": "8"},
    ),
    "2 workers x 1 stream, max_batch 8": (2, {"DISTILL_MAX_BATCH": "8"}),
    "2 streams, max_batch 1 (no batching)": (
        1,
        {"DISTILL_INFERENCE_STREAMS": "2", "DISTILL_MAX_BATCH": "1"},
    ),
    "2 streams, max_batch 2": (1, {"DISTILL_INFERENCE_STREAMS": "2", "DISTILL_MAX_BATCH": "2"}),
    "2 streams, max_batch 4": (1, {"DISTILL_INFERENCE_STREAMS": "2", "DISTILL_MAX_BATCH": "4"}),
}


def upload(side: int) -> bytes:
    """The shipped sample face as a quality-90 JPEG of ``side`` px."""
    face = Image.open(SAMPLE).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    face.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def multipart(data: bytes, form: dict[str, str]) -> tuple[bytes, str]:
    """The request body and Content-Type of a /transform upload, encoded once."""
    request = httpx.Request(
        "POST", "http://x/transform", files={"image": ("face.jpg", data, "image/jpeg")}, data=form
    )
    return request.read(), request.headers["Content-Type"]


# ----------------------------------------------------------------------------
# (a) Stages.


def parse_body(body: bytes, content_type: str) -> Callable[[], object]:
    """Starlette's multipart parse of ``body`` (what ``UploadFile`` costs the event loop), as a blocking call."""
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    headers = Headers(raw=[(b"content-type", content_type.encode())])
    loop = asyncio.new_event_loop()

    async def parse() -> None:
        async def stream():  # noqa: ANN202 - an async generator of one chunk
            yield body

        form = await MultiPartParser(headers, stream()).parse()
        await form["image"].read()  # type: ignore[union-attr]
        await form.close()

    return lambda: loop.run_until_complete(parse())


def timed_rounds(units: dict[str, Callable[[], object]], rounds: int, block: int) -> dict[str, float]:
    """Median ms per call of each unit, over ``rounds`` rounds of ``block`` calls each (units in rotating order)."""
    times: dict[str, list[float]] = {name: [] for name in units}
    names = list(units)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            units[name]()
            for _ in range(block):
                t0 = time.perf_counter()
                units[name]()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def stages(rounds: int, threads: int) -> list[str]:
    """Table (a): each stage's median ms at each upload size (simplejpeg's rows where it is importable)."""
    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    entry = get_entry(MODEL, default_root())
    h, w = entry.input_size
    spec, path = EngineSpec("openvino", "cpu", "fp32", "bf16"), entry.variant_path("fp32")
    engine = OpenVinoEngine(  # the service's: a lone batch on the latency build, others on free streams
        spec, path, (h, w), threads=threads, static_batches=(1, MAX_BATCH), streams=STREAMS
    )
    pool = ThreadPoolExecutor(STREAMS)
    units: dict[str, Callable[[], object]] = {}
    for side in SIDES:
        data = upload(side)
        body, content_type = multipart(data, {"format": "jpeg"})
        decoded = imaging.decode(data, native_hw=(h, w), max_bytes=1 << 26, max_pixels=40_000_000)
        y = engine.run(to_input(decoded.pixels))[0]
        edited = from_output(y)
        units[f"{side}|HTTP parse (multipart)"] = parse_body(body, content_type)
        units[f"{side}|decode + crop (Pillow, draft)"] = lambda data=data: imaging.decode(
            data, native_hw=(h, w), max_bytes=1 << 26, max_pixels=40_000_000
        )
        if simplejpeg is not None:
            units[f"{side}|decode alone (simplejpeg, scaled)"] = lambda data=data: simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=h, min_width=w
            )
        units[f"{side}|preprocess"] = lambda p=decoded.pixels: to_input(p)
        units[f"{side}|postprocess"] = lambda y=y: from_output(y)
        units[f"{side}|encode (Pillow)"] = lambda e=edited: imaging.encode(e, "jpeg", 92)
        if simplejpeg is not None:
            units[f"{side}|encode (simplejpeg)"] = lambda e=edited: simplejpeg.encode_jpeg(
                np.ascontiguousarray(e), quality=92, colorspace="RGB", colorsubsampling="420"
            )
    x1 = to_input(
        imaging.decode(upload(h), native_hw=(h, w), max_bytes=1 << 26, max_pixels=40_000_000).pixels
    )
    full = np.repeat(x1, MAX_BATCH, axis=0)
    per_item = {
        "*|inference, batch 1 (alone: 1 stream x all threads)": 1,
        f"*|inference per item, batch {MAX_BATCH} (alone)": MAX_BATCH,
        f"*|inference per item, {STREAMS} batches of 1 at once ({STREAMS} streams)": STREAMS,
        f"*|inference per item, {STREAMS} batches of {MAX_BATCH} at once ({STREAMS} streams)": STREAMS
        * MAX_BATCH,
    }
    for name, batch in zip(per_item, (x1, full, x1, full), strict=True):
        if "at once" in name:
            units[name] = lambda b=batch: list(pool.map(engine.run, [b] * STREAMS))
        else:
            units[name] = lambda b=batch: engine.run(b)
    medians = timed_rounds(units, rounds, block=4)
    for name, n in per_item.items():
        medians[name] /= n
    names = list(dict.fromkeys(k.split("|")[1] for k in units))
    rows = []
    for name in names:
        cells = [medians.get(f"{side}|{name}", medians.get(f"*|{name}")) for side in SIDES]
        rows.append([name, *(f"{c:.3f}" for c in cells)])
    return [table(["stage (ms, median)", *(f"{s} px upload" for s in SIDES)], rows)]


# ----------------------------------------------------------------------------
# (b) Load.


@dataclass
class Tally:
    """Latencies (s), error count and micro-batch sizes of one slice, its wall time and the server's CPU time."""

    latencies: list[float] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    loop_cpu: float = 0.0  # of the event loops' threads
    engines: set[str] = field(default_factory=set)  # X-Engine/X-Precision answered


async def _client(port: int, request: bytes, deadline: float, tally: Tally) -> None:
    """One keep-alive connection sending ``request`` until ``deadline``, each answer read in full."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            await reader.readexactly(int(headers["content-length"]))
            if lines[0].split()[1] != "200":
                tally.errors += 1
                continue
            tally.latencies.append(time.perf_counter() - t0)
            tally.batches.append(int(headers.get("x-batch-size", "1")))
            tally.engines.add(f"{headers.get('x-engine')} {headers.get('x-precision')}")
    finally:
        writer.close()


def drive(port: int, request: bytes, clients: int, seconds: float) -> Tally:
    """``clients`` closed-loop connections for ``seconds``."""
    tally = Tally()

    async def run() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, request, deadline, tally) for _ in range(clients)))

    t0 = time.perf_counter()
    asyncio.run(run())
    tally.wall = time.perf_counter() - t0
    return tally


def load(configs: dict[str, tuple[int, dict[str, str]]], seconds: float, rounds: int, side: int) -> list[str]:
    """Table (b): every configuration at 1 and 16 clients, ``rounds`` alternating slices of ``seconds`` each."""
    from contextlib import ExitStack

    body, content_type = multipart(upload(side), {"format": "jpeg"})
    request = (
        f"POST /transform HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    totals: dict[tuple[str, int], Tally] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        zoo = Path(tmp)
        (zoo / MODEL).symlink_to(REPO / "model_zoo" / MODEL, target_is_directory=True)
        ports, pids = {}, {}
        for label, (workers, env) in configs.items():
            print(f"starting {label} ...", flush=True)
            base = stack.enter_context(serve(zoo, {"DISTILL_MODELS": MODEL, **env}, workers=workers))
            ports[label] = int(base.rsplit(":", 1)[1])
            pids[label] = server_pids(ports[label])
            drive(ports[label], request, 16, 2.0)  # warm every worker
        for r in range(rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for label in order:
                for clients in (1, 16) if r % 2 == 0 else (16, 1):
                    time.sleep(0.5)
                    cpu, loop_cpu = cpu_seconds(pids[label]), cpu_seconds(pids[label], main_thread=True)
                    t = drive(ports[label], request, clients, seconds)
                    t.cpu = cpu_seconds(pids[label]) - cpu
                    t.loop_cpu = cpu_seconds(pids[label], main_thread=True) - loop_cpu
                    acc = totals.setdefault((label, clients), Tally())
                    acc.latencies += t.latencies
                    acc.batches += t.batches
                    acc.errors += t.errors
                    acc.wall += t.wall
                    acc.cpu += t.cpu
                    acc.loop_cpu += t.loop_cpu
                    acc.engines |= t.engines
                    print(
                        f"  round {r + 1} {label}, {clients} clients: {len(t.latencies) / t.wall:.0f} req/s",
                        flush=True,
                    )
    rows = []
    for label in configs:
        one = totals[(label, 1)]
        for clients in (1, 16):
            t = totals[(label, clients)]
            rps = len(t.latencies) / t.wall
            p50, p99 = percentile(t.latencies, 50), percentile(t.latencies, 99)
            rows.append(
                [
                    label,
                    ", ".join(sorted(t.engines)),
                    clients,
                    f"{rps:.0f}",
                    f"{rps / (len(one.latencies) / one.wall):.2f}x",
                    f"{p50 * 1000:.1f}",
                    f"{p99 * 1000:.1f}",
                    f"{p99 / p50:.1f}",
                    t.errors,
                    f"{statistics.fmean(t.batches):.2f}",
                    f"{t.cpu / len(t.latencies) * 1000:.1f}",
                    f"{t.loop_cpu / len(t.latencies) * 1000:.1f}",
                ]
            )
    head = [
        "configuration",
        "engine",
        "clients",
        "req/s",
        "vs 1 client",
        "p50 ms",
        "p99 ms",
        "p99/p50",
        "errors",
        "mean batch",
        "server CPU ms/req",
        "event loop CPU ms/req",
    ]
    return [table(head, rows)]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=40, help="stage rounds (a)")
    p.add_argument("--threads", type=int, default=2, help="inference threads in (a)")
    p.add_argument("--seconds", type=float, default=2.5, help="seconds per load slice (b)")
    p.add_argument("--load-rounds", type=int, default=6, help="slices per configuration and level (b)")
    p.add_argument("--side", type=int, default=128, help="upload side in (b), px")
    p.add_argument("--stages-only", action="store_true")
    p.add_argument("--load-only", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    info = machine()
    lines = ["# One request's path, and batching under load", "", table(["", ""], list(info.items())), ""]
    if not args.load_only:
        lines += stages(args.rounds, args.threads) + [""]
    if not args.stages_only:
        lines += load(CONFIGS, args.seconds, args.load_rounds, args.side) + [""]
    lines.append(f"Load average at the end: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
