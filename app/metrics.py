"""Prometheus metrics (base units, ``_seconds`` histograms), correct with several worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set *before* this module is imported (``distill serve`` sets and
empties it), every worker writes its samples to files there; a scrape builds a fresh registry with a
``MultiProcessCollector`` that sums them, and a worker's live gauges are dropped when it exits
(:func:`mark_process_dead`). Without the variable, the process's default registry is served.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# 1 ms .. 5 min: the student answers in milliseconds, the legacy projection in tens of seconds or minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                   60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

REQUEST_LATENCY = Histogram(
    "distill_request_duration_seconds",
    "Time from request received to response ready, per endpoint, model, provider and HTTP status.",
    ["endpoint", "model", "provider", "status"],
    buckets=LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "distill_stage_duration_seconds",
    "Time spent per request in each stage (decode, detect, align, preprocess, queue, inference, postprocess, "
    "pasteback, encode, projection).",
    ["endpoint", "stage", "model", "provider"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "distill_batch_size",
    "Requests per ONNX Runtime call formed by the micro-batcher.",
    ["model", "provider"],
    buckets=BATCH_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "distill_queue_depth",
    "Requests waiting per queue: a model's micro-batcher (queue=<model>), or legacy projections running and "
    "queued (queue=legacy-projection).",
    ["queue"],
    multiprocess_mode="livesum",
)
IN_FLIGHT = Gauge(
    "distill_requests_in_flight",
    "Requests being handled right now, per endpoint.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
REJECTED = Counter(
    "distill_requests_rejected_total",
    "Requests refused, by endpoint and reason (queue_full, bad_input codes, not_ready, timeout, ...).",
    ["endpoint", "reason"],
)
MODEL_INFO = Gauge(
    "distill_model_info",
    "1 for every model loaded, labelled with the provider and variant in use and its native size.",
    ["model", "provider", "variant", "input_size", "teacher"],
    multiprocess_mode="livemax",
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render_latest() -> tuple[bytes, str]:
    """The exposition text for a scrape and its content type (all workers' samples in multiprocess mode)."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """Drop this worker's live gauges from the multiprocess directory (call on worker shutdown)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())
