"""The GPU benchmark's service rows: ``/transform`` p50 through a real ``distill serve`` on the device for a zoo
entry or an UNTRAINED ``PRESET@SIZE`` entry, beside the HTTP floor and the served engine's bare latency."""

from __future__ import annotations

import argparse
import io
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from benchmarks.harness import (
    budget_note,
    make_untrained_entry,
    parse_server_timing,
    seconds_left,
    serve,
    short,
    test_images,
)
from editing.images import from_uint8
from engines.base import Engine, EngineSpec
from engines.measure import open_spec
from engines.ort import CUDA_EP
from engines.select import time_ms
from model_zoo.registry import get_entry
from networks.pix2pixhd.config import PRESETS

MIN_SERVICE_S = 30.0  # a server is not started with less of the budget left
NO_MODEL = "no-such-model"  # the HTTP floor's uploads name it: refused with 404 before any decoding


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
        row.status, row.note = "skipped", budget_note(args.budget_s)
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
