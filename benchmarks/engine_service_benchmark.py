"""/transform per engine: `distill serve` pinned to each engine and precision, and on `DISTILL_ENGINE=auto`,
beside each engine's bare latency on the same model file, threads and input, in the same run.

For each configuration a real ``distill serve`` starts on 127.0.0.1 with the environment below, answers
N sequential ``/transform`` requests (JPEG at the native size, after warm-up), and is stopped; the
table gives the served engine (``X-Engine``/``X-Precision``), the p50 of the HTTP round trip and of
its ``inference`` stage (Server-Timing), and the bare engine's p50 measured in this process between the
servers. The goal (issue 13): with the default settings the service serves the fastest engine within
the accuracy gate, and its /transform p50 is within 10% of the best bare latency.

    python benchmarks/engine_service_benchmark.py                 # the default entry (toyfaces-age)
    python benchmarks/engine_service_benchmark.py --model-zoo ZOO --model NAME --requests 100
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_benchmark import parse_server_timing, serve, test_images  # noqa: E402

from engines.base import EngineSpec  # noqa: E402
from engines.cpu import cpu_model, isa_line  # noqa: E402
from engines.measure import open_spec  # noqa: E402
from engines.ov import openvino_version  # noqa: E402
from engines.select import time_rounds  # noqa: E402
from model_zoo.registry import default_root, get_entry  # noqa: E402
from training.images import from_uint8  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> (environment, the engine it pins, or None for auto)
    "auto (default)": ({}, None),
    "onnxruntime fp32": ({"DISTILL_ENGINE": "onnxruntime", "DISTILL_VARIANT_CPU": "fp32"},
                         EngineSpec("onnxruntime", "cpu", "fp32", "fp32")),
    "onnxruntime int8": ({"DISTILL_ENGINE": "onnxruntime", "DISTILL_VARIANT_CPU": "int8"},
                         EngineSpec("onnxruntime", "cpu", "int8", "int8")),
    "openvino fp32": ({"DISTILL_ENGINE": "openvino", "DISTILL_OPENVINO_PRECISION": "fp32"},
                      EngineSpec("openvino", "cpu", "fp32", "fp32")),
    "openvino bf16": ({"DISTILL_ENGINE": "openvino", "DISTILL_OPENVINO_PRECISION": "bf16"},
                      EngineSpec("openvino", "cpu", "fp32", "bf16")),
    "openvino int8": ({"DISTILL_ENGINE": "openvino", "DISTILL_OPENVINO_PRECISION": "int8"},
                      EngineSpec("openvino", "cpu", "int8", "int8")),
}


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def transform_p50(base: str, model: str, images: list[bytes]) -> dict[str, object]:
    """Sequential /transform requests: p50 of the round trip and of the inference stage, the served engine."""
    rtt, inference, served = [], [], set()
    with httpx.Client(timeout=60) as client:
        for img in images[:3]:  # connection and first-request warm-up
            client.post(base + "/transform", files={"image": ("f.jpg", img, "image/jpeg")}, data={"model": model})
        for img in images:
            t0 = time.perf_counter()
            r = client.post(base + "/transform", files={"image": ("f.jpg", img, "image/jpeg")},
                            data={"model": model, "format": "jpeg"})
            elapsed = time.perf_counter() - t0
            r.raise_for_status()
            rtt.append(elapsed * 1e3)
            inference.append(1e3 * parse_server_timing(r.headers.get("Server-Timing", "")).get("inference", float("nan")))
            served.add(f"{r.headers.get('X-Engine')}/{r.headers.get('X-Precision')}")
        models = client.get(base + "/models").json()["models"]
    info = next(m for m in models if m["name"] == model)
    return {"rtt": p50(rtt), "inference": p50(inference), "served": ", ".join(sorted(served)),
            "candidates": info.get("engine_candidates", [])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-zoo", type=Path, default=None)
    p.add_argument("--model", default="toyfaces-age")
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--note", default="", help="a sentence on the machine's state for the results")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service_engines_cpu.md")
    args = p.parse_args(argv)
    zoo = args.model_zoo or default_root()
    entry = get_entry(args.model, zoo)
    images = test_images(entry, args.requests)
    x = from_uint8(np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB"))).numpy()
    configs = {k: v for k, v in CONFIGS.items()
               if v[1] is None or (v[1].variant in entry.variants and (v[1].engine != "openvino" or openvino_version()))}
    env = {"DISTILL_INTRA_OP_THREADS": str(args.threads), "DISTILL_LEGACY_WORKERS": "0"}
    rows, bare, auto_candidates = [], {}, []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name, (extra, spec) in configs.items():
        with serve(zoo, {**env, **extra, "DISTILL_MODELS": args.model}) as base:
            result = transform_p50(base, args.model, images)
        if spec is None:
            auto_candidates = result["candidates"]
        rows.append((name, result))
        print(f"{name:18s} served {result['served']:22s} /transform p50 {result['rtt']:.2f} ms, "
              f"inference {result['inference']:.2f} ms", flush=True)
    engines = [(name, open_spec(spec, entry.variant_path(spec.variant), entry.input_size, args.threads))
               for name, (_, spec) in configs.items() if spec is not None]
    for _ in range(2):  # warm-up beyond time_rounds' own run
        for _, engine in engines:
            engine.run(x)
    times = time_rounds(engines, x, args.requests, deadline=float("inf"), cut=False)
    bare = {name: statistics.median(times[id(name)]) for name, _ in engines}
    print("bare: " + ", ".join(f"{k} {v:.2f} ms" for k, v in bare.items()), flush=True)
    best_name = min(bare, key=bare.get)
    best = bare[best_name]
    h, w = entry.input_size
    lines = [
        f"# /transform per engine ({args.model}, {h}x{w}, CPU)", "",
        f"Measured {started} by `python benchmarks/engine_service_benchmark.py --model {args.model} --requests "
        f"{args.requests} --threads {args.threads}`.", "",
        f"- CPU: {cpu_model()}; ISA features: {isa_line()}",
        f"- each configuration: a fresh `distill serve` (DISTILL_INTRA_OP_THREADS={args.threads}, other settings "
        f"default, legacy off) answering {args.requests} sequential JPEG uploads at {h}x{w} after 3 warm-up requests; bare: "
        f"the engine alone (`engines`, the same file, threads and input), {args.requests} runs each after 3, "
        "all engines interleaved in rounds in this process after the servers (as `auto` times its candidates).",
        f"- {args.note}".rstrip(" -"), "",
        "| configuration | served (X-Engine/X-Precision) | /transform p50 ms | inference stage p50 ms | "
        "bare engine p50 ms | /transform vs best bare | inference stage vs best bare |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['served']} | {r['rtt']:.2f} | {r['inference']:.2f} | "
                     f"{f'{bare[name]:.2f}' if name in bare else '-'} | {r['rtt'] / best:.2f}x | {r['inference'] / best:.2f}x |")
    lines += ["", f"Best bare engine: {best_name} ({best:.2f} ms).", "",
              "Candidates measured by `auto` at warm-up (its log, `/models`):", "",
              "| engine | device | variant file | precision | status | median ms | PSNR vs fp32 dB | note |",
              "|---|---|---|---|---|---:|---:|---|"]
    for c in auto_candidates:
        ms = "" if c["median_ms"] is None else f"{c['median_ms']:.2f}"
        psnr = "reference" if c["psnr_vs_fp32_db"] is None else f"{c['psnr_vs_fp32_db']:.1f}"
        lines.append(f"| {c['engine']} | {c['device']} | {c['variant']} | {c['precision']} | {c['status']} | {ms} | "
                     f"{psnr} | {c['reason']} |")
    text = "\n".join(lines).replace("\n- \n", "\n") + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
