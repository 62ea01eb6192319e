"""/transform per engine: `distill serve` pinned to each engine and precision, and on `DISTILL_ENGINE=auto`,
beside each engine's bare latency on the same model file, threads and input, all measured in the same rounds.

Every configuration gets its own real ``distill serve`` on 127.0.0.1 with the environment below; the servers
start one after the other (each waits for ``/readyz``, so ``auto`` times its candidates on an idle machine)
and then stay up together. Each round then gives, in rotating order and after a short pause and
one untimed call, every server a block of ``/transform`` requests (a JPEG at the native size) and then of
the same uploads sent to a model it does not have, and every bare engine (``engines``, in this process) a
block of runs: a busy spell of a shared machine hits every column alike,
and the table's ratios compare numbers taken seconds apart. The table gives the served engine
(``X-Engine``/``X-Precision``), the p50 of the round trip and of its ``inference`` stage (Server-Timing), the
*HTTP floor* (the p50 of the refused upload: a 404 once the multipart body is read and parsed, before any
decoding: the cost of HTTP, multipart and the client that any Python HTTP service pays, whatever its model),
and the bare engine's p50. The best bare engine is the fastest among those that pass the accuracy gate (as
``auto`` decides it in the same run). The goal: with the default settings the service serves the
fastest engine within the gate, and its /transform p50 is within 10% of the best bare latency.

    python benchmarks/engine_service_benchmark.py                 # the default entry (toyfaces-age)
    python benchmarks/engine_service_benchmark.py --model-zoo ZOO --model NAME --requests 100
    python benchmarks/engine_service_benchmark.py --make-entry slim --size 512 --requests 20   # UNTRAINED, speed only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project and the benchmarks package
from benchmarks.harness import make_untrained_entry, parse_server_timing, serve, test_images  # noqa: E402
from editing.images import from_uint8  # noqa: E402
from engines.base import Engine, EngineSpec  # noqa: E402
from engines.cpu import cpu_model, isa_line  # noqa: E402
from engines.measure import open_spec  # noqa: E402
from engines.ov import openvino_version  # noqa: E402
from engines.select import HANDOVER_S  # noqa: E402
from model_zoo.registry import default_root, get_entry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NO_MODEL = "no-such-model"  # the HTTP floor's requests name it: refused with 404 before any decoding

CONFIGS = {  # name -> (environment, the engine it pins, or None for auto)
    "auto (default)": ({}, None),
    "onnxruntime fp32": (
        {"DISTILL_ENGINE": "onnxruntime", "DISTILL_VARIANT_CPU": "fp32"},
        EngineSpec("onnxruntime", "cpu", "fp32", "fp32"),
    ),
    "onnxruntime int8": (
        {"DISTILL_ENGINE": "onnxruntime", "DISTILL_VARIANT_CPU": "int8"},
        EngineSpec("onnxruntime", "cpu", "int8", "int8"),
    ),
    "openvino fp32": (
        {"DISTILL_ENGINE": "openvino", "DISTILL_OPENVINO_PRECISION": "fp32"},
        EngineSpec("openvino", "cpu", "fp32", "fp32"),
    ),
    "openvino bf16": (
        {"DISTILL_ENGINE": "openvino", "DISTILL_OPENVINO_PRECISION": "bf16"},
        EngineSpec("openvino", "cpu", "fp32", "bf16"),
    ),
    "openvino int8": (
        {"DISTILL_ENGINE": "openvino", "DISTILL_OPENVINO_PRECISION": "int8"},
        EngineSpec("openvino", "cpu", "int8", "int8"),
    ),
}


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Server:
    """One running ``distill serve`` configuration and what its requests measured (ms)."""

    name: str
    base: str
    client: httpx.Client
    rtt: list[float] = field(default_factory=list)
    inference: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    served: set[str] = field(default_factory=set)

    def post(self, img: bytes, model: str) -> tuple[float, httpx.Response]:
        t0 = time.perf_counter()
        r = self.client.post(
            self.base + "/transform",
            files={"image": ("f.jpg", img, "image/jpeg")},
            data={"model": model, "format": "jpeg"},
        )
        return (time.perf_counter() - t0) * 1e3, r

    def transform(self, img: bytes, model: str) -> None:
        """One timed /transform."""
        elapsed, r = self.post(img, model)
        r.raise_for_status()
        self.rtt.append(elapsed)
        self.inference.append(
            1e3 * parse_server_timing(r.headers.get("Server-Timing", "")).get("inference", float("nan"))
        )
        self.served.add(f"{r.headers.get('X-Engine')}/{r.headers.get('X-Precision')}")

    def refused(self, img: bytes) -> float:
        """One HTTP-floor request: the upload sent to a model the server does not have (404 before decoding)."""
        elapsed, r = self.post(img, NO_MODEL)
        if r.status_code != 404:
            raise RuntimeError(f"the HTTP-floor request got {r.status_code}, expected 404: {r.text[:200]}")
        return elapsed


def gate_failures(candidates: list[dict]) -> set[tuple[str, str, str]]:
    """(engine, variant, precision) of the candidates ``auto`` refused at the accuracy gate."""
    return {
        (c["engine"], c["variant"], c["precision"])
        for c in candidates
        if c["status"] in ("refused", "failed")
    }


def measure_rounds(
    servers: list[Server],
    bare: dict[str, Engine],
    x: np.ndarray,
    images: list[bytes],
    model: str,
    rounds: int,
    block: int,
) -> dict[str, list[float]]:
    """Warm every server (3 requests) and engine (2 runs), then ``rounds`` rounds in rotating order: each unit gets
    a pause, one untimed request or run (the previous unit ran in another process, whose threads may still spin
    and whose data filled the caches) and ``block`` timed ones back to back; a server then answers one untimed
    and ``block`` timed HTTP-floor requests. Returns the bare engines' run times (ms)."""
    for server in servers:
        for img in images[:3]:
            server.post(img, model)
            server.refused(img)
    for engine in bare.values():
        for _ in range(2):
            engine.run(x)
    units: list[Server | str] = [*servers, *bare]
    times: dict[str, list[float]] = {name: [] for name in bare}
    for r in range(rounds):
        for k in range(len(units)):
            unit = units[(r + k) % len(units)]
            time.sleep(HANDOVER_S)
            if isinstance(unit, Server):  # back-to-back requests, as the bare runs: transforms, then floors
                batch = [images[(r * block + i) % len(images)] for i in range(block)]
                unit.post(batch[0], model)
                for img in batch:
                    unit.transform(img, model)
                unit.refused(batch[0])
                unit.floor += [unit.refused(img) for img in batch]
            else:
                bare[unit].run(x)
                for _ in range(block):
                    t0 = time.perf_counter()
                    bare[unit].run(x)
                    times[unit].append((time.perf_counter() - t0) * 1e3)
        if (r + 1) % 5 == 0:
            print(f"  round {r + 1}/{rounds}", flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-zoo", type=Path, default=None)
    p.add_argument("--model", default="toyfaces-age")
    p.add_argument(
        "--make-entry",
        metavar="PRESET",
        help="export an UNTRAINED Pix2PixHD preset (slim, global, tiny) into a temporary zoo and use it",
    )
    p.add_argument("--size", type=int, default=512, help="native size of --make-entry (default 512)")
    p.add_argument("--requests", type=int, default=40, help="timed requests per server, runs per bare engine")
    p.add_argument(
        "--block", type=int, default=4, help="timed requests (runs) per unit and round (default 4)"
    )
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--note", default="", help="a sentence on the machine's state for the results")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service_engines_cpu.md")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="engine-bench-")
    zoo, model = args.model_zoo or default_root(), args.model
    if args.make_entry:
        print(f"exporting an UNTRAINED {args.make_entry} Pix2PixHD at {args.size} px ...", flush=True)
        zoo = Path(tmp.name)
        model = make_untrained_entry(zoo, args.make_entry, args.size).name
    entry = get_entry(model, zoo)
    images = test_images(entry, args.requests)
    x = from_uint8(np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB"))).numpy()
    configs = {
        k: v
        for k, v in CONFIGS.items()
        if v[1] is None
        or (v[1].variant in entry.variants and (v[1].engine != "openvino" or openvino_version()))
    }
    env = {"DISTILL_INTRA_OP_THREADS": str(args.threads), "DISTILL_LEGACY_WORKERS": "0"}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with contextlib.ExitStack() as stack:
        servers = []
        for name, (extra, _) in configs.items():
            base = stack.enter_context(serve(zoo, {**env, **extra, "DISTILL_MODELS": model}))
            servers.append(Server(name, base, stack.enter_context(httpx.Client(timeout=120))))
            print(f"{name}: ready at {base}", flush=True)
        bare_engines = {
            name: open_spec(spec, entry.variant_path(spec.variant), entry.input_size, args.threads)
            for name, (_, spec) in configs.items()
            if spec is not None
        }
        times = measure_rounds(
            servers, bare_engines, x, images, model, -(-args.requests // args.block), args.block
        )
        auto = next(s for s in servers if configs[s.name][1] is None)
        info = next(m for m in auto.client.get(auto.base + "/models").json()["models"] if m["name"] == model)
        auto_candidates = info.get("engine_candidates", [])
    bare = {name: p50(t) for name, t in times.items()}
    refused = gate_failures(auto_candidates)
    passing = {
        name: ms
        for name, ms in bare.items()
        if (configs[name][1].engine, configs[name][1].variant, configs[name][1].precision) not in refused
    }
    best_name = min(passing or bare, key=bare.get)
    best = bare[best_name]
    h, w = entry.input_size
    what = f"UNTRAINED `{args.make_entry}` preset" if args.make_entry else f"`{model}`"
    command = f"--make-entry {args.make_entry} --size {args.size}" if args.make_entry else f"--model {model}"
    lines = [
        f"# /transform per engine ({what}, {h}x{w}, CPU)",
        "",
        f"Measured {started} by `python benchmarks/engine_service_benchmark.py {command} --requests "
        f"{args.requests} --block {args.block} --threads {args.threads}`.",
        "",
        f"- CPU: {cpu_model()}; ISA features: {isa_line()}",
        f"- one `distill serve` per configuration (DISTILL_INTRA_OP_THREADS={args.threads}, other settings default, "
        f"legacy off), all up together, and every bare engine (`engines`: the same file, threads and input, in the "
        f"benchmark's process), measured in rounds after warm-up: each round gives every unit, in rotating order, a "
        f"pause, one untimed request (run) and {args.block} timed ones back to back, {args.requests} timed in all: "
        f"`/transform` with a JPEG at {h}x{w}; a server then answers one untimed and {args.block} timed requests "
        "with the same uploads sent to a model it does not have (the HTTP floor: a 404 once the multipart body is "
        "parsed, before decoding).",
        f"- {args.note}".rstrip(" -"),
        "",
        "| configuration | served (X-Engine/X-Precision) | /transform p50 ms | inference stage p50 ms | "
        "HTTP floor p50 ms | bare engine p50 ms | /transform vs best bare | /transform - floor vs best bare |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for server in servers:
        rtt, floor = p50(server.rtt), p50(server.floor)
        lines.append(
            f"| {server.name} | {', '.join(sorted(server.served))} | {rtt:.2f} | {p50(server.inference):.2f} | "
            f"{floor:.2f} | {f'{bare[server.name]:.2f}' if server.name in bare else '-'} | "
            f"{rtt / best:.2f}x | {(rtt - floor) / best:.2f}x |"
        )
    gate_note = (
        f"; refused at the accuracy gate, so not eligible: {', '.join(sorted(set(bare) - set(passing)))}"
        if passing and len(passing) < len(bare)
        else ""
    )
    lines += [
        "",
        f"Best bare engine within the accuracy gate: {best_name} ({best:.2f} ms){gate_note}.",
        "",
        "Candidates measured by `auto` at warm-up (its log, `/models`):",
        "",
        "| engine | device | variant file | precision | status | median ms | PSNR vs fp32 dB | note |",
        "|---|---|---|---|---|---:|---:|---|",
    ]
    for c in auto_candidates:
        ms = "" if c["median_ms"] is None else f"{c['median_ms']:.2f}"
        psnr = "reference" if c["psnr_vs_fp32_db"] is None else f"{c['psnr_vs_fp32_db']:.1f}"
        lines.append(
            f"| {c['engine']} | {c['device']} | {c['variant']} | {c['precision']} | {c['status']} | {ms} | "
            f"{psnr} | {c['reason']} |"
        )
    text = "\n".join(lines).replace("\n- \n", "\n") + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
