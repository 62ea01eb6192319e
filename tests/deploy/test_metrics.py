"""The metrics that dashboards and alerts rely on: probes in their own histogram, zero-initialised error series,
readiness and queue capacity gauges, and each worker's process metrics in multiprocess mode."""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.metrics import REJECTION_REASONS, WorkerProcessCollector
from tests.app_helpers import make_entry, png_bytes, serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

APP = Path(__file__).resolve().parents[2] / "app"


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def values(text: str, name: str) -> dict[tuple, float]:
    """{sorted label items: value} for one sample name."""
    return {tuple(sorted(s.labels.items())): s.value for s in samples(text) if s.name == name}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    make_entry(root, "tiny", teacher=False)
    return root


@pytest.fixture(scope="module")
def client(zoo):
    settings = Settings(model_zoo=zoo, default_model="tiny", warmup_runs=1, legacy_workers=0, queue_size=17)
    with TestClient(create_app(settings)) as c:
        for _ in range(600):
            if c.get("/readyz").status_code == 200:
                break
        yield c


def test_probes_and_scrapes_are_not_in_the_request_histogram(client):
    before = values(client.get("/metrics").text, "distill_probe_duration_seconds_count")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    text = client.get("/metrics").text
    endpoints = {dict(k)["route"] for k in values(text, "distill_request_duration_seconds_count")}
    assert not endpoints & {"/healthz", "/readyz", "/metrics"}
    probes = values(text, "distill_probe_duration_seconds_count")
    for path in ("/healthz", "/readyz"):
        key = (("route", path), ("status", "200"))
        assert probes[key] - before.get(key, 0) == 1
    assert not {dict(k)["route"] for k in values(text, "distill_requests_in_flight")} & {
        "/metrics",
        "/readyz",
    }


def test_error_series_exist_at_zero_before_the_first_error(client):
    text = client.get("/metrics").text
    rejected = values(text, "distill_requests_rejected_total")
    for route in ("/transform", "/legacy/transform"):
        for reason in ("queue_full", "internal_error", "not_ready", "legacy_busy", "legacy_timeout"):
            assert (("reason", reason), ("route", route)) in rejected
    # /transform never times out a projection: that series exists only because it was initialised at zero
    # (others may have counted in this process's registry during earlier tests)
    assert rejected[(("reason", "legacy_timeout"), ("route", "/transform"))] == 0


def test_readiness_and_queue_capacity_gauges(client):
    text = client.get("/metrics").text
    assert values(text, "distill_ready") == {(): 1.0}
    assert values(text, "distill_queue_capacity")[(("queue", "tiny"),)] == 17
    assert values(text, "distill_worker_start_time_seconds")[()] > 1e9


def test_every_error_code_the_service_answers_is_a_known_rejection_reason():
    """REJECTION_REASONS is what init_series creates at zero; a new error code must be added to it."""
    source = "\n".join(p.read_text() for p in APP.rglob("*.py"))
    raised = set(re.findall(r'ServiceError\(\s*\d+,\s*"([a-z_]+)"', source))
    raised |= set(re.findall(r'_error\([^)]*?\d{3},\s*"([a-z_]+)"', source))
    raised |= set(re.findall(r'\d{3}: "([a-z_]+)"', source))  # the HTTP error handler's table
    assert len(raised) > 20
    assert raised <= set(REJECTION_REASONS), sorted(raised - set(REJECTION_REASONS))


def test_two_workers_serve_their_own_process_metrics(zoo, tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), "DISTILL_LEGACY_WORKERS": "0"}
    with serve(zoo, "--workers", "2", env=env) as (url, _):
        for _ in range(300):  # serve() saw one worker ready: wait for both to start and be ready
            text = httpx.get(f"{url}/metrics").text
            started = len(values(text, "distill_worker_start_time_seconds"))
            if started == 2 and values(text, "distill_ready") == {(): 1.0}:
                break
            time.sleep(0.2)
        starts = values(text, "distill_worker_start_time_seconds")
        pids = {dict(k)["pid"] for k in starts}
        assert len(pids) == 2, starts
        rss = values(text, "process_resident_memory_bytes")
        cpu = values(text, "process_cpu_seconds_total")
        assert {dict(k)["pid"] for k in rss} == pids == {dict(k)["pid"] for k in cpu}
        assert all(v > 10e6 for v in rss.values())
        assert values(text, "distill_ready") == {(): 1.0}
        rejected = values(text, "distill_requests_rejected_total")
        assert rejected[(("reason", "queue_full"), ("route", "/transform"))] == 0
        assert (
            httpx.post(f"{url}/transform", files={"image": ("x.png", png_bytes(), "image/png")}).status_code
            == 200
        )


def test_a_worker_gone_from_proc_gets_no_process_metrics(tmp_path):
    """A killed worker's multiprocess files outlive it; its pid, no longer in /proc, is skipped."""
    collector = WorkerProcessCollector(str(tmp_path))
    gone = str(2**22 + 1)  # above Linux's pid_max limit, never a live process
    families = {f.name: f for f in collector.process_metrics([gone, str(os.getpid())])}
    assert {s.labels["pid"] for s in families["process_resident_memory_bytes"].samples} == {str(os.getpid())}
