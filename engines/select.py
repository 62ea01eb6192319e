"""Which engine serves a model: the candidates this machine and the settings allow, measured at warm-up.

:func:`plan_candidates` lists engine x variant x precision for an entry (ONNX Runtime on CPU, CUDA and
TensorRT where the build has them, OpenVINO on the CPU with bf16 only where the CPU computes it
natively). :func:`select_engine` runs every candidate on the gate images, refuses those below the
accuracy gate (PSNR against ONNX Runtime fp32 on the CPU, the gate ``distill export`` applies to
variants), times the others at the native size, batch 1, in rounds (a busy spell of a shared machine
then hits them all alike; see :func:`time_rounds`), and keeps the fastest median. The warm-up stays bounded: past
the budget the remaining candidates are skipped and the rounds stop, and a candidate whose first two
runs are both slower than the best median is cut short (it cannot win).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from core.errors import DistillError
from engines.base import CandidateResult, Engine, EngineSpec, Precision

log = logging.getLogger("engines")

MIN_PSNR_DB = 35.0  # the accuracy gate: the export refuses a variant, the service an engine, below it
REFERENCE = EngineSpec("onnxruntime", "cpu", "fp32", "fp32")
CUT_FACTOR = 1.2  # a candidate whose first timed runs are all this much slower than the best cannot win
BLOCK_RUNS = 2  # timed runs of one candidate per round
HANDOVER_S = 0.05  # pause between candidates: the last engine's threads stop spinning
_ALLOWED = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "CUDAExecutionProvider",
}


@dataclass
class Plan:
    """The candidates to try, in order, and why others were left out."""

    specs: list[EngineSpec]
    notes: list[str] = field(default_factory=list)


def _variant_allowed(variants: dict, variant: str, device: str) -> bool:
    record = variants.get(variant)
    if record is None:
        return False
    allowed = record.get("providers") or []
    return not allowed or device in allowed or _ALLOWED[device] in allowed


def plan_candidates(
    variants: dict,
    *,
    engine: str,
    ort_devices: Sequence[str],
    ort_cpu: str = "auto",
    ort_cuda: str = "auto",
    openvino: str = "auto",
    openvino_available: bool = True,
    bf16_native: bool = True,
) -> Plan:
    """The candidates for an entry with ``variants`` (its manifest's), given the settings and this machine.

    ``ort_devices``: what ONNX Runtime may run on (``cpu``, ``cuda``, ``tensorrt``); ``ort_cpu``/``ort_cuda``:
    DISTILL_VARIANT_CPU/_CUDA; ``openvino``: DISTILL_OPENVINO_PRECISION. A pinned variant the entry lacks falls
    back to fp32 (noted), as before engines existed.
    """
    plan = Plan([])
    if engine in ("auto", "onnxruntime"):
        for device in ort_devices:
            wanted = ort_cpu if device == "cpu" else ort_cuda
            if device == "tensorrt":  # TensorRT builds its own engine from the fp32 file
                precisions: list[Precision] = (
                    ["fp16", "fp32"]
                    if wanted == "auto"
                    else [cast(Precision, wanted) if wanted in ("fp16", "fp32") else "fp32"]
                )
                plan.specs += [EngineSpec("onnxruntime", "tensorrt", "fp32", p) for p in precisions]
                continue
            if wanted == "auto":
                order = ("int8", "fp32") if device == "cpu" else ("fp16", "fp32")
                chosen = [v for v in order if _variant_allowed(variants, v, device)]
            elif _variant_allowed(variants, wanted, device):
                chosen = [wanted]
            else:
                plan.notes.append(
                    f"onnxruntime/{device}: {wanted} is not in the entry or not marked for {device}; "
                    "using fp32"
                )
                chosen = ["fp32"]
            plan.specs += [EngineSpec("onnxruntime", device, v, v) for v in chosen]  # type: ignore[arg-type]
    if engine in ("auto", "openvino"):
        if "cpu" not in ort_devices and engine == "auto":
            plan.notes.append("openvino: left out (DISTILL_PROVIDER=cuda)")
        elif not openvino_available:
            if engine == "openvino":
                raise DistillError(
                    "DISTILL_ENGINE=openvino: the openvino package is not installed (pip install openvino) "
                )
            plan.notes.append("openvino: not installed")
        else:
            if openvino == "auto":
                precisions = ["int8"] if "int8" in variants else []
                precisions += ["bf16"] if bf16_native else []
                precisions += ["fp32"]
                if not bf16_native:
                    plan.notes.append("openvino/bf16: left out (the CPU has neither AVX-512 BF16 nor AMX)")
            elif openvino == "int8" and "int8" not in variants:
                plan.notes.append("openvino/int8: the entry has no int8 variant; using fp32")
                precisions = ["fp32"]
            else:
                precisions = [cast(Precision, openvino)]  # the settings allow fp32, bf16 and int8 only
            plan.specs += [
                EngineSpec("openvino", "cpu", "int8" if p == "int8" else "fp32", p) for p in precisions
            ]
    if not plan.specs:
        raise DistillError(
            f"DISTILL_ENGINE={engine}: no candidate engine on this machine ({'; '.join(plan.notes)})"
        )
    return plan


def psnr_db_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of [N,C,H,W] arrays in [-1, 1] (data range 2), as training.metrics.psnr."""
    mse = np.square(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1).mean(1)
    return 10 * np.log10(4.0 / np.maximum(mse, 1e-12))


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image PSNR in dB of [N,3,H,W] arrays in [-1, 1]: what the gate (``MIN_PSNR_DB``) reads."""
    return float(np.mean(psnr_db_per_image(a, b)))


def run_each(engine: Engine, images: np.ndarray) -> np.ndarray:
    """The engine's outputs for ``images``, one image per call (batch 1, as the gate measures)."""
    return np.concatenate([engine.run(images[i : i + 1]) for i in range(len(images))])


def time_ms(
    engine: Engine, x: np.ndarray, repeats: int = 5, warmup: int = 1, give_up_ms: float | None = None
) -> tuple[float, bool]:
    """Median ms of ``engine.run(x)`` over ``repeats`` runs after ``warmup``; (median, cut): cut short when the
    first two timed runs are both slower than ``give_up_ms``."""
    for _ in range(warmup):
        engine.run(x)
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
        if give_up_ms is not None and len(times) == 2 and min(times) > give_up_ms:
            return statistics.median(times), True
    return statistics.median(times), False


def time_rounds(
    candidates: Sequence[tuple[object, Engine]],
    x: np.ndarray,
    repeats: int,
    deadline: float,
    cut: bool = True,
    block: int = BLOCK_RUNS,
) -> dict[int, list[float]]:
    """Per-run ms of each candidate (keyed by ``id`` of its first item), timed in rounds: each round gives every
    candidate, in rotating order, a pause, one untimed run and ``block`` timed runs. Rounds make a busy spell of
    a shared machine hit all candidates alike; the pause and the untimed run let the previous engine's worker
    threads stop spinning (timed back to back, engines in one process steal each other's cores). After two
    rounds a candidate whose runs are all over CUT_FACTOR x the best median drops out (``cut``: it cannot
    win); rounds stop at ``repeats`` or, after two, at ``deadline`` (perf_counter)."""
    times: dict[int, list[float]] = {id(key): [] for key, _ in candidates}
    active = list(candidates)
    for r in range(max(1, repeats)):
        if r >= 2 and time.perf_counter() > deadline:
            break
        for k in range(len(active)):
            key, engine = active[(r + k) % len(active)]
            time.sleep(HANDOVER_S)
            engine.run(x)
            for _ in range(block):
                t0 = time.perf_counter()
                engine.run(x)
                times[id(key)].append((time.perf_counter() - t0) * 1e3)
        if cut and r >= 1 and len(active) > 1:
            best = min(statistics.median(times[id(key)]) for key, _ in active)
            active = [(key, e) for key, e in active if min(times[id(key)]) <= best * CUT_FACTOR]
    return times


@dataclass
class Selection:
    """The engine to serve, why, and every candidate's measurement."""

    engine: Engine
    reason: str
    candidates: list[CandidateResult]


def select_engine(
    specs: Sequence[EngineSpec],
    open_engine: Callable[[EngineSpec], Engine],
    reference: Engine,
    images: np.ndarray,
    *,
    min_psnr_db: float = MIN_PSNR_DB,
    budget_s: float = 20.0,
    repeats: int = 5,
) -> Selection:
    """Gate, time and choose among ``specs`` (see the module docstring); DistillError when none passes.

    ``reference`` is ONNX Runtime fp32 on the CPU (reused when it is a candidate); ``images`` [N,3,H,W] at the
    native size are the gate images, the first of them is the timed input.
    """
    started = time.perf_counter()
    expected = run_each(reference, images)
    results: list[CandidateResult] = []
    timed: list[tuple[CandidateResult, Engine]] = []  # gated in, to be timed
    for spec in specs:
        if timed and time.perf_counter() - started > budget_s:
            results.append(
                CandidateResult.of(spec, "skipped", reason=f"warm-up budget of {budget_s:g} s spent")
            )
            continue
        try:
            engine = reference if spec == reference.spec else open_engine(spec)
            out = run_each(engine, images)
        except Exception as e:  # a candidate that cannot load or run is reported, never fatal by itself
            results.append(CandidateResult.of(spec, "failed", reason=str(e) or type(e).__name__))
            continue
        psnr = None if engine is reference else round(psnr_db(out, expected), 2)
        if psnr is not None and psnr < min_psnr_db:
            results.append(
                CandidateResult.of(
                    spec,
                    "refused",
                    psnr_vs_fp32_db=psnr,
                    reason=f"{psnr:.2f} dB < the {min_psnr_db:g} dB gate",
                )
            )
            continue
        result = CandidateResult.of(
            spec, "reference" if engine is reference else "passed", psnr_vs_fp32_db=psnr
        )
        results.append(result)
        timed.append((result, engine))
    times = time_rounds(timed, images[:1], repeats, started + budget_s)
    best: tuple[int, Engine, float] | None = None
    for result, engine in timed:
        ms = statistics.median(times[id(result)])
        result.median_ms = round(ms, 2)
        if len(times[id(result)]) < len(max(times.values(), key=len)):
            result.status, result.reason = "slower", f"cut short: over {CUT_FACTOR:g}x the best so far"
        elif best is None or ms < best[2]:
            best = (results.index(result), engine, ms)
    if best is None:
        raise DistillError(
            "no candidate engine passed: "
            + "; ".join(f"{r.engine}/{r.device}/{r.precision}: {r.status} ({r.reason})" for r in results)
        )
    index, engine, ms = best
    results[index].status = "chosen"
    others = sorted(
        (r for r in results if r.median_ms is not None and r is not results[index]),
        key=lambda r: r.median_ms or 0.0,
    )
    runner_up = (
        f"; next {others[0].engine}/{others[0].device}/{others[0].precision} {others[0].median_ms:.2f} ms"
        if others
        else ""
    )
    reason = (
        f"auto: fastest of {sum(r.median_ms is not None for r in results)} timed candidate(s) within the "
        f"{min_psnr_db:g} dB gate ({ms:.2f} ms{runner_up})"
    )
    return Selection(engine, reason, results)
