"""/legacy/jobs: the legacy projection as a job resource (progress, estimated time left, result, cancel)."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import pytest
from fastapi.responses import Response
from PIL import Image

from app.legacy import LegacyExecutor
from app.legacy_jobs import JobRecord, JobStore
from tests.app_helpers import NATIVE, face_upload, legacy_test_client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with legacy_test_client(
        tmp_path_factory.mktemp("zoo"), legacy_max_steps=100_000, legacy_timeout_s=120
    ) as c:
        yield c


upload = face_upload


def wait_for(client, job_id: str, until, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/legacy/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_job_runs_reports_and_serves_its_image(client):
    r = client.post("/legacy/jobs", **upload(steps="3", format="png"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/legacy/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["steps_total"] == 3 and job["model"] == "tiny"
    done = wait_for(client, job["id"], lambda j: j["status"] not in ("queued", "running"))
    assert done["status"] == "done", done
    assert done["steps_done"] == 3 and done["eta_s"] is None and done["projection_s"] > 0
    image = client.get(done["result"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["x-steps"] == "3" and "projection;dur=" in image.headers["server-timing"]
    assert Image.open(io.BytesIO(image.content)).size == (NATIVE, NATIVE)


def test_progress_then_cancel_stops_the_projection(client):
    service = client.app.state.service
    job = client.post("/legacy/jobs", **upload(steps="100000")).json()
    running = wait_for(client, job["id"], lambda j: j["steps_done"] >= 3)
    assert running["status"] == "running" and 0 < running["steps_done"] < 100_000
    assert running["eta_s"] is not None and running["eta_s"] > 0
    r = client.get(f"/legacy/jobs/{job['id']}/result")
    assert r.status_code == 409 and r.json()["error"] == "no_result"

    cancelled = client.delete(f"/legacy/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while service.legacy.active:  # the process stops at its next step and frees its slot
        assert time.monotonic() < deadline, "the cancelled projection is still running"
        time.sleep(0.05)
    stopped = client.get(f"/legacy/jobs/{job['id']}").json()
    assert stopped["status"] == "cancelled" and stopped["steps_done"] < 100_000 and stopped["eta_s"] is None
    assert client.get(f"/legacy/jobs/{job['id']}/result").status_code == 409
    # the freed process takes the next job at once
    quick = client.post("/legacy/jobs", **upload(steps="2")).json()
    assert (
        wait_for(client, quick["id"], lambda j: j["status"] not in ("queued", "running"), 30)["status"]
        == "done"
    )


def test_unknown_job_is_404(client):
    for method, path in (
        ("get", "/legacy/jobs/nope"),
        ("delete", "/legacy/jobs/nope"),
        ("get", "/legacy/jobs/nope/result"),
    ):
        r = getattr(client, method)(path)
        assert r.status_code == 404 and r.json()["error"] == "unknown_job", (method, path, r.text)


def test_bad_input_is_refused_before_a_job_exists(client):
    cases = [
        (upload(steps="100001"), 422, "too_many_steps"),
        (upload(steps="0"), 422, "invalid_request"),
        (upload(model="plain"), 409, "no_teacher"),
        (upload(model="nope"), 404, "unknown_model"),
        ({"files": {"image": ("x.png", b"not an image", "image/png")}}, 415, "not_an_image"),
        ({"data": {"steps": "3"}}, 422, "missing_field"),
    ]
    for kwargs, status, error in cases:
        r = client.post("/legacy/jobs", **kwargs)
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert not client.app.state.legacy_jobs.jobs or all(
        j.status != "queued" for j in client.app.state.legacy_jobs.jobs.values()
    )


def test_simultaneous_submissions_cannot_pass_the_capacity(client, monkeypatch):
    """Eight submissions whose uploads finish decoding at the same moment: only the free slots are taken."""
    from app.routers import transform as transform_router

    service, n = client.app.state.service, 8
    assert service.legacy.active == 0
    arrived: list[int] = []
    gate: list[asyncio.Event] = []

    async def together(fn, *args, **kwargs):  # the decode hop, released for all requests at once
        arrived.append(1)
        if len(arrived) == n:
            gate[0].set()
        await gate[0].wait()
        return fn(*args, **kwargs)

    async def submit_all() -> list[httpx.Response]:
        gate.append(asyncio.Event())
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            posts = (http.post("/legacy/jobs", **upload(steps="100000")) for _ in range(n))
            return list(await asyncio.gather(*posts))

    monkeypatch.setattr(transform_router, "run_in_threadpool", together)
    responses = client.portal.call(submit_all)
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    try:
        assert len(accepted) == service.legacy.capacity, [r.text for r in responses]
        assert all(r.status_code == 503 and r.json()["error"] == "legacy_busy" for r in refused)
        assert all(r.headers["retry-after"] for r in refused)
    finally:
        for job_id in accepted:
            client.delete(f"/legacy/jobs/{job_id}")
        deadline = time.monotonic() + 30
        while service.legacy.active:
            assert time.monotonic() < deadline, "the cancelled projections are still running"
            time.sleep(0.05)


def _finished(store, size: int) -> JobRecord:
    record = store.add(JobRecord(model="m", steps=1, faces=1))
    record.finish("done", response=Response(b"x" * size))
    store.keep_result(record)
    return record


def test_kept_results_stay_within_the_byte_budget_oldest_dropped_first():
    store = JobStore(max_result_bytes=2500)
    first, second, third = (_finished(store, 1000) for _ in range(3))
    assert store.result_bytes == 2000 and first.response is None and "oldest first" in first.dropped
    assert second.response is not None and third.response is not None
    assert first.info(LegacyExecutor(0, 0, 1.0, 1)).result is None
    huge = _finished(store, 2501)
    assert huge.status == "failed" and huge.error.error == "result_too_large" and huge.response is None
    assert second.response is not None and store.result_bytes == 2000


def test_a_fetched_then_dropped_result_is_410(client):
    store = client.app.state.legacy_jobs
    budget = store.max_result_bytes
    assert budget == client.app.state.service.settings.legacy_result_bytes

    def run_one() -> tuple[str, bytes]:
        job = client.post("/legacy/jobs", **upload(steps="2", format="png")).json()
        done = wait_for(client, job["id"], lambda j: j["status"] not in ("queued", "running"))
        assert done["status"] == "done", done
        image = client.get(done["result"])
        assert image.status_code == 200
        return job["id"], image.content

    first, image = run_one()
    store.max_result_bytes = 2 * len(image) - 1  # room for one such image, not two
    try:
        run_one()
    finally:
        store.max_result_bytes = budget
    r = client.get(f"/legacy/jobs/{first}/result")
    assert r.status_code == 410 and r.json()["error"] == "result_dropped", r.text
    assert "DISTILL_LEGACY_RESULT_BYTES" in r.json()["detail"]
    info = client.get(f"/legacy/jobs/{first}").json()
    assert info["status"] == "done" and info["result"] is None and info["result_dropped"]
