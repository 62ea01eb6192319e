"""Prometheus metrics (base units, ``_seconds`` histograms), correct with several worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set *before* this module is imported (``distill serve`` sets and
empties it), every worker writes its samples to files there; a scrape builds a fresh registry with a
``MultiProcessCollector`` that sums them, and a worker's live gauges are dropped when it exits
(:func:`mark_process_dead`). Without the variable, the process's default registry is served.

Four rules keep the series usable by dashboards and alerts (``deploy/prometheus/rules.yaml``):

- the endpoint a request went to is the ``route`` label, never ``endpoint``: the Prometheus Operator sets its
  own ``endpoint`` (the scraped port's name) on every target and renames a scraped one ``exported_endpoint``;

- probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) are timed in their own histogram,
  ``distill_probe_duration_seconds``, so they do not dilute the request latency quantiles;
- every error answer is counted in ``distill_requests_rejected_total`` by endpoint and error code, and the
  series of every code exist at zero from a worker's start (:func:`init_series`), so ``rate()`` counts an
  error's first occurrence;
- in multiprocess mode each live worker's ``process_*`` metrics (CPU, memory, file descriptors, read from
  ``/proc/<pid>``) are served with a ``pid`` label, as the default registry serves its own process's.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# 1 ms .. 5 min: the student answers in milliseconds, the legacy projection in tens of seconds or minutes.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

# The endpoints whose answers are the service's work, and those that only report on it.
API_ENDPOINTS = ("/transform", "/legacy/transform", "/models", "/")
PROBE_ENDPOINTS = ("/healthz", "/readyz", "/metrics")
# Every `error` code a JSON error body can carry (app/main.py's handlers, ServiceError raises); a test keeps
# this list in step with the code.
REJECTION_REASONS = (
    "bad_request",
    "corrupt_image",
    "edit_out_of_range",
    "empty_file",
    "face_path_busy",
    "faces_all_needs_original",
    "file_too_large",
    "http_error",
    "internal_error",
    "invalid_edits",
    "invalid_request",
    "job_gone",
    "legacy_busy",
    "legacy_disabled",
    "legacy_timeout",
    "legacy_unavailable",
    "method_not_allowed",
    "missing_field",
    "no_face",
    "no_result",
    "no_teacher",
    "not_an_image",
    "not_found",
    "not_ready",
    "output_too_large",
    "outside_domain",
    "payload_too_large",
    "queue_full",
    "result_dropped",
    "strength_and_edits",
    "strength_out_of_range",
    "strength_unsupported",
    "too_many_faces",
    "too_many_pixels",
    "too_many_steps",
    "unknown_edit",
    "unknown_job",
    "unknown_model",
    "unknown_sample",
    "unsupported_format",
)
REQUEST_LATENCY = Histogram(
    "distill_request_duration_seconds",
    "Time from request received to response ready, per endpoint, model, provider and HTTP status "
    "(probes and scrapes excluded: see distill_probe_duration_seconds).",
    ["route", "model", "provider", "status"],
    buckets=LATENCY_BUCKETS,
)
PROBE_LATENCY = Histogram(
    "distill_probe_duration_seconds",
    "Time to answer a liveness or readiness probe or a metrics scrape, per endpoint and HTTP status.",
    ["route", "status"],
    buckets=PROBE_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "distill_stage_duration_seconds",
    "Time spent per request in each stage (decode, detect, align, domain, preprocess, queue, inference, postprocess, "
    "pasteback, encode, projection).",
    ["route", "stage", "model", "provider"],
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
    ["route"],
    multiprocess_mode="livesum",
)
REJECTED = Counter(
    "distill_requests_rejected_total",
    "Requests refused, by endpoint and reason (queue_full, bad_input codes, not_ready, timeout, ...).",
    ["route", "reason"],
)
DOMAIN_VERDICTS = Counter(
    "distill_domain_verdicts_total",
    "Requests scored against their model's recorded training domain, per model and verdict (inside or "
    "outside; with DISTILL_DOMAIN_CHECK=refuse the outside ones were answered 422 outside_domain).",
    ["model", "verdict"],
)
QUEUE_CAPACITY = Gauge(
    "distill_queue_capacity",
    "Requests a queue accepts before answering 503 (queue_full / legacy_busy): distill_queue_depth's ceiling.",
    ["queue"],
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "distill_model_info",
    "1 for every model loaded, labelled with the provider, variant, engine and precision in use and its native size.",
    ["model", "provider", "variant", "input_size", "teacher", "engine", "precision"],
    multiprocess_mode="livemax",
)
ENGINE_CANDIDATE_MS = Gauge(
    "distill_engine_candidate_milliseconds",
    "Each candidate engine's median batch-1 latency at the native size, measured at warm-up (status chosen, "
    "passed, slower or reference; the engine with status chosen serves the model).",
    ["model", "engine", "device", "variant", "precision", "status"],
    multiprocess_mode="livemax",
)


def observe_candidates(model: str, candidates: Iterable[Any]) -> None:
    """Publish the timed candidates of ``model``'s engine choice (``CandidateResult`` objects)."""
    for c in candidates:
        if c.median_ms is not None:
            ENGINE_CANDIDATE_MS.labels(model, c.engine, c.device, c.variant, c.precision, c.status).set(
                c.median_ms
            )


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


WORKER_START_NAME = "distill_worker_start_time_seconds"


@functools.cache
def worker_gauges() -> tuple[Gauge, Gauge]:
    """The readiness and worker start gauges, created on first use in a worker rather than at import: in
    multiprocess mode a gauge without labels writes its value when created, and the supervisor process of
    ``distill serve --workers N``, which imports this module but serves nothing, would count as a worker
    that is never ready."""
    ready = Gauge(
        "distill_ready",
        "1 when /readyz answers 200 (every model loaded, checked and warmed up), else 0; the lowest over live "
        "workers in multiprocess mode.",
        multiprocess_mode="livemin",
    )
    start = Gauge(
        WORKER_START_NAME,
        "Start time of each live worker process since the Unix epoch (a pid label per worker in multiprocess "
        "mode).",
        multiprocess_mode="liveall",
    )
    return ready, start


def set_ready(ready: bool) -> None:
    """Publish this worker's readiness (the value of ``distill_ready``)."""
    worker_gauges()[0].set(1 if ready else 0)


def init_series() -> None:
    """Create this worker's rejection, in-flight and readiness series at zero, and record its start."""
    for endpoint in ("/transform", "/legacy/transform"):
        for reason in REJECTION_REASONS:
            REJECTED.labels(endpoint, reason)
    for endpoint in API_ENDPOINTS:
        IN_FLIGHT.labels(endpoint)
    set_ready(False)
    worker_gauges()[1].set(time.time())


def _returns(value: str) -> Callable[[], str]:
    """A function that returns ``value`` (ProcessCollector reads its pid through one)."""
    return lambda: value


class WorkerProcessCollector(Collector):
    """The multiprocess samples of every worker, plus each live worker's ``process_*`` metrics with a ``pid`` label.

    Live workers are the pids of ``distill_worker_start_time_seconds`` (``liveall``: a worker that exits
    cleanly drops out); a pid no longer in ``/proc`` (a killed worker) is skipped.
    """

    def __init__(self, path: str, proc: str = "/proc") -> None:
        self.multiprocess = multiprocess.MultiProcessCollector(None, path=path)
        self.proc = proc

    def collect(self) -> Iterator[Metric]:
        families = list(self.multiprocess.collect())
        pids = sorted({s.labels["pid"] for f in families if f.name == WORKER_START_NAME for s in f.samples})
        yield from families
        yield from self.process_metrics(pids)

    def process_metrics(self, pids: Iterable[str]) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in pids:
            if not os.path.isdir(os.path.join(self.proc, pid)):
                continue
            for family in ProcessCollector(pid=_returns(pid), proc=self.proc, registry=None).collect():
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                out.samples.extend(s._replace(labels={**s.labels, "pid": pid}) for s in family.samples)
        yield from merged.values()


def render_latest() -> tuple[bytes, str]:
    """The exposition text for a scrape and its content type (all workers' samples in multiprocess mode)."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        registry.register(WorkerProcessCollector(os.environ[MULTIPROC_ENV]))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """Drop this worker's live gauges from the multiprocess directory (call on worker shutdown)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())
