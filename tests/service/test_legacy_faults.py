"""Faults on ``/legacy/transform``: an answer the encoder cannot write is refused before
the projection; a hung projection process is killed and replaced after one 504; a teacher or direction that
cannot be loaded (a crafted pickle too) is a 503 ``legacy_unavailable`` with the reason, shown in ``/models``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.legacy import LegacyEdit, LegacyExecutor, LegacyJob, LegacyLoadError
from app.main import create_app
from model_zoo.registry import write_entry
from tests.app_helpers import encode, make_entry, png_bytes, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class Payload:
    """A pickle that would run a shell command when loaded by a plain unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def break_file(root: Path, name: str, fname: str, content: bytes) -> None:
    """Replace one file of a fresh entry and record its new checksum (the manifest stays valid)."""
    entry = make_entry(root, name, samples=False)
    (entry.path / fname).write_bytes(content)
    write_entry(entry.path, entry.manifest, list(entry.manifest["files"]))


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("marker") / "pwned"


@pytest.fixture(scope="module")
def client(tmp_path_factory, marker):
    root = tmp_path_factory.mktemp("zoo")
    make_entry(root, "tiny", samples=False)
    break_file(root, "crafted", "teacher.pt", pickle.dumps(Payload(marker)))
    break_file(root, "nodirection", "direction.npy", b"\x93NUMPY garbage")
    settings = Settings(
        model_zoo=root,
        default_model="tiny",
        warmup_runs=1,
        intra_op_threads=1,
        legacy_workers=1,
        legacy_queue=1,
        legacy_steps=5,
        legacy_timeout_s=60,
        max_pixels=20_000_000,
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)  # includes starting the projection process and its warm-up
        yield c


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (and been reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def post(client: TestClient, data: bytes | None = None, **fields):
    files = {"image": ("face.png", data or png_bytes(64, 48), "application/octet-stream")}
    return client.post("/legacy/transform", files=files, data=fields)


def test_unloadable_teacher_or_direction_is_503_with_the_reason_and_shown_in_models(client, marker):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["tiny"]["legacy"] is True and models["tiny"]["legacy_error"] is None
    for name, culprit, reason in (
        ("crafted", "the teacher teacher.pt", "refusing to unpickle posix.system"),
        ("nodirection", "the direction direction.npy", "direction.npy"),
    ):
        assert (
            models[name]["legacy"] is False and f"{culprit} cannot be loaded" in models[name]["legacy_error"]
        )
        r = post(client, model=name)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["error"] == "legacy_unavailable" and body["detail"].startswith(
            f"model {name!r}: {culprit}"
        )
        assert reason in body["detail"]
    assert not marker.exists()  # the crafted pickle ran nothing
    assert post(client, model="tiny").status_code == 200
    assert (
        client.post(
            "/transform", files={"image": ("f.png", png_bytes(), "image/png")}, data={"model": "crafted"}
        ).status_code
        == 200
    )  # the student itself is fine


def test_an_output_too_large_for_the_encoder_is_refused_before_the_projection(client):
    panorama = encode(Image.new("RGB", (17000, 1000), (90, 120, 150)), "JPEG", quality=50)
    legacy = client.app.state.service.legacy
    started = time.perf_counter()
    r = post(client, panorama, size="original", format="webp", steps="1000")
    assert r.status_code == 422 and r.json()["error"] == "output_too_large" and r.json()["limit"] == 16383
    assert time.perf_counter() - started < 3.0 and legacy.active == 0


@pytest.mark.timeout(90)
def test_a_hung_projection_process_is_killed_and_replaced(client):
    legacy = client.app.state.service.legacy
    hung = [p.pid for p in legacy._pool._processes.values()]
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    legacy.timeout_s = 1.0
    try:
        started = time.monotonic()
        r = post(client, steps="5")
        assert r.status_code == 504 and r.json()["error"] == "legacy_timeout"
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 10
        while legacy.active:  # the slot comes back: the hung process was killed
            assert time.monotonic() < deadline, "the hung job still holds its slot"
            time.sleep(0.05)
        assert all(gone(pid) for pid in hung)
    finally:
        legacy.timeout_s = 60
        for pid in hung:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert post(client, steps="2").status_code == 200  # a fresh process serves


def test_the_executor_reports_a_load_failure_at_run_time(tmp_path):
    edit = LegacyEdit(tmp_path / "direction.npy", 1.0, (0, 4))
    missing = LegacyJob(tmp_path / "teacher.pt", (edit,), False, steps=2)
    executor = LegacyExecutor(workers=1, queue=0, timeout_s=60, threads=1)
    try:
        with pytest.raises(LegacyLoadError, match="the teacher teacher.pt cannot be loaded"):
            asyncio.run(executor.run(missing, np.zeros((8, 8, 3), np.uint8)))
        assert executor.active == 0
    finally:
        executor.shutdown()


@pytest.mark.timeout(90)
def test_a_projection_process_hung_at_warm_up_is_killed_and_reported(tmp_path):
    entry = make_entry(tmp_path / "zoo", "tiny", samples=False)
    assert entry.teacher_path is not None and entry.direction_path is not None
    job = LegacyJob(entry.teacher_path, (LegacyEdit(entry.direction_path, 1.0, (0, 4)),), False, steps=2)
    executor = LegacyExecutor(workers=1, queue=0, timeout_s=30, threads=1)
    hung: list[int] = []

    async def scenario() -> None:
        await executor.warm([job])  # the process starts and loads the teacher
        hung.extend(p.pid for p in executor._pool._processes.values())
        for pid in hung:
            os.kill(pid, signal.SIGSTOP)
        executor.timeout_s = 1.0
        with pytest.raises(LegacyLoadError, match="took longer than 1 s"):
            await executor.warm([job])
        assert all(gone(pid) for pid in hung)
        executor.timeout_s = 30
        await executor.warm([job])  # a fresh process

    try:
        asyncio.run(scenario())
    finally:
        for pid in hung:  # a stopped process would make the shutdown below wait forever
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        executor.shutdown()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


PARENT = """
import os, time
from app.legacy import LegacyExecutor
pool = LegacyExecutor(1, 0, 60.0, 1)._get_pool()
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_projection_process_exits_when_its_web_worker_is_killed():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # as the out-of-memory killer would
        parent.wait()
        deadline = time.monotonic() + 60
        while _alive(child):
            assert time.monotonic() < deadline, "the projection process outlived its parent"
            time.sleep(0.1)
    finally:
        parent.kill()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
