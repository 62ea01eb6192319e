"""`distill serve` as a real uvicorn server: startup log, two workers with aggregated metrics, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app_helpers import make_entry, png_bytes, serve


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    make_entry(root, "tiny", teacher=False)
    return root


def request_counts(url: str) -> dict[str, float]:
    """status -> count of /transform requests, summed over models/providers (all workers)."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == "distill_request_duration_seconds_count" and s.labels["route"] == "/transform":
                counts[s.labels["status"]] = counts.get(s.labels["status"], 0) + s.value
    return counts


def both_ready(url: str, in_a_row: int = 20, timeout: float = 120.0) -> None:
    """serve() returns when one worker is ready; wait until fresh connections (spread over the workers by the
    kernel) find /readyz ready ``in_a_row`` times in a row, so no counted request meets a warming worker."""
    deadline, streak = time.monotonic() + timeout, 0
    while streak < in_a_row:
        assert time.monotonic() < deadline, "the second worker never became ready"
        with httpx.Client() as client:
            streak = streak + 1 if client.get(f"{url}/readyz").status_code == 200 else 0
        time.sleep(0.02)


def test_two_workers_count_every_request_once(zoo, tmp_path):
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "counter_999999.db").write_bytes(b"stale file from an earlier run")  # must be emptied
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "DISTILL_LEGACY_WORKERS": "0",
        "DISTILL_ENGINE": "onnxruntime",
    }
    with serve(zoo, "--workers", "2", env=env) as (url, _):
        both_ready(url)
        for i in range(24):
            with httpx.Client() as client:  # a fresh connection each time, so both workers get requests
                files = {"image": ("x.png", png_bytes() if i % 4 else b"not an image", "image/png")}
                r = client.post(f"{url}/transform", files=files)
                assert r.status_code == (200 if i % 4 else 415)
        pids = {p.name.rsplit("_", 1)[1].split(".")[0] for p in prom_dir.glob("histogram_*.db")}
        assert len(pids) == 2, f"expected both workers to have served requests, metric files: {sorted(pids)}"
        assert request_counts(url) == {"200": 18.0, "415": 6.0}
        assert not (prom_dir / "counter_999999.db").exists()


def test_serve_logs_url_models_and_provider(zoo):
    env = {"DISTILL_LEGACY_WORKERS": "0"}
    with serve(zoo, env=env) as (url, proc):
        assert (
            httpx.post(f"{url}/transform", files={"image": ("x.png", png_bytes(), "image/png")}).status_code
            == 200
        )
    assert url in proc.log and "tiny" in proc.log and "provider auto -> cpu" in proc.log, proc.log


def test_serve_with_an_empty_zoo_fails_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    r = subprocess.run(
        [sys.executable, "-m", "distill", "serve", "--model-zoo", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "no model-zoo entries" in r.stderr and "Traceback" not in r.stderr
