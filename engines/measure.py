"""Every engine on every variant file, measured: the table ``distill export`` writes into the manifest
(key ``engines``) and ``distill evaluate`` reports.

One row per engine x variant x precision that this machine runs: the median batch-1 latency at the
native size and the PSNR against ONNX Runtime fp32 on the CPU, on the export's held-out inputs (the
same figure and inputs as the variants' gate; the reference row has none). Rows are facts, not
choices: the service applies the gate and measures again on the machine it serves from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engines.base import Engine, EngineSpec
from engines.cpu import cpu_model, isa_line, native_bf16
from engines.ort import OrtEngine, available_devices
from engines.ov import OpenVinoEngine, openvino_version
from engines.select import REFERENCE, plan_candidates, psnr_db, run_each, time_ms

log = logging.getLogger("engines")
PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def measured_on(spec: EngineSpec) -> str:
    """Where a row was measured: engine version, device, CPU model and its ISA features."""
    if spec.engine == "openvino":
        where = f"openvino {openvino_version()} CPU"
    else:
        where = f"onnxruntime {ort.__version__} {PROVIDER_NAMES.get(spec.device, spec.device)}"
    return f"{where}, {cpu_model()} ({isa_line()})"


def open_spec(spec: EngineSpec, path: Path, size: tuple[int, int], threads: int = 0) -> Engine:
    """Open ``spec`` on ``path`` (no compiled-model cache: the export measures compile-free runs anyway)."""
    if spec.engine == "openvino":
        return OpenVinoEngine(spec, path, size, threads=threads)
    return OrtEngine(spec, path, intra_op_threads=threads)


def engine_table(
    files: Mapping[str, Path],
    size: tuple[int, int],
    images: np.ndarray,
    *,
    repeats: int = 5,
    threads: int = 0,
    variants: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows {engine, variant, precision, median_ms, psnr_vs_fp32_db, timed_size, measured_on} for each variant
    file in ``files`` (variant -> ONNX path, fp32 included) in each engine this machine has.

    ``images`` [N,3,H,W] at ``size`` are the error inputs; ``variants`` (the manifest records, for the
    providers each variant is marked for) defaults to every file on every device. A candidate that fails to
    load or run is logged and left out.
    """
    records = dict(variants or {v: {"file": Path(p).name} for v, p in files.items()})
    plan = plan_candidates(
        records,
        engine="auto",
        ort_devices=[d for d in available_devices() if d != "tensorrt"],
        openvino_available=openvino_version() is not None,
        bf16_native=native_bf16(),
    )
    reference = open_spec(REFERENCE, Path(files["fp32"]), size, threads)
    expected = run_each(reference, images)
    rows = []
    for spec in plan.specs:
        try:
            engine = (
                reference if spec == REFERENCE else open_spec(spec, Path(files[spec.variant]), size, threads)
            )
            out = run_each(engine, images)
            ms, _ = time_ms(engine, images[:1], repeats)
        except (
            Exception
        ) as e:  # an engine that cannot run a variant is left out of the table, with the reason
            log.warning("%s: left out of the engine table (%s)", spec.label, e)
            continue
        rows.append(
            {
                "engine": spec.engine,
                "variant": spec.variant,
                "precision": spec.precision,
                "median_ms": round(ms, 2),
                "psnr_vs_fp32_db": None if engine is reference else round(psnr_db(out, expected), 2),
                "timed_size": list(size),
                "measured_on": measured_on(spec),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of an engine table, fastest first, with the speed-up over ONNX Runtime fp32 on the CPU."""
    base = next(
        (
            r["median_ms"]
            for r in rows
            if (r["engine"], r["variant"], r["precision"]) == ("onnxruntime", "fp32", "fp32")
            and "CPUExecutionProvider" in r["measured_on"]
        ),
        None,
    )
    lines = [
        "| engine | variant file | precision | median ms | vs ORT fp32 | PSNR vs fp32 (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["median_ms"]):
        ratio = f"{base / r['median_ms']:.2f}x" if base and r["median_ms"] else "-"  # 0.0: rounded away
        psnr = "reference" if r["psnr_vs_fp32_db"] is None else f"{r['psnr_vs_fp32_db']:.1f}"
        lines.append(
            f"| {r['engine']} | {r['variant']} | {r['precision']} | {r['median_ms']:.2f} | {ratio} | {psnr} |"
        )
    return lines
