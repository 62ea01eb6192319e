"""Faults ``distill train`` survives: a fatal error with DataLoader workers running exits (2, one
line) instead of hanging; a full disk is one line naming the file; ``--checkpoint-every`` with a fallback
checkpoint; a resumed run's first metrics row averages the same steps as an uninterrupted run's."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import DistillError
from tests.pipeline_helpers import make_pair_dataset, tiny_options
from training.trainer import CHECKPOINT, PREVIOUS_CHECKPOINT, load_checkpoint, train

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def distill_train(
    data: Path, out: Path, *extra: str, limit_file_bytes: int | None = None, timeout: float = 45
) -> subprocess.CompletedProcess:
    """Run ``distill train`` with one data worker; a run still alive after ``timeout`` s fails the test."""
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "train",
        str(data),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--max-steps",
        "80",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]

    def limits() -> None:
        if (
            limit_file_bytes is not None
        ):  # writes past it fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=limits,
    )
    try:
        out_text, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in _group_stragglers(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"distill train did not exit within {timeout} s (hung after a fatal error)")
    return subprocess.CompletedProcess(cmd, proc.returncode, out_text, err)


def _group_stragglers(pid: int) -> list[int]:
    """Children of ``pid`` left in other process groups (data workers) that a group kill misses."""
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


def test_a_corrupt_image_ends_the_run_in_one_line_not_a_hang(tmp_path: Path) -> None:
    data = make_pair_dataset(tmp_path / "data", n=24, keep=[True] * 24)
    for png in sorted((data / "train_A").glob("*.png"))[:4]:
        png.write_bytes(png.read_bytes()[:300])
    r = distill_train(data, tmp_path / "run")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("distill train: error")]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert (
        "train_A/" in lines[0]
        and "cannot read this image" in lines[0]
        and "re-run `distill pairs`" in lines[0]
    )


def test_a_full_disk_at_a_checkpoint_ends_the_run_in_one_line_not_a_hang(tmp_path: Path) -> None:
    data = make_pair_dataset(tmp_path / "data", n=24, keep=[True] * 24)
    r = distill_train(
        data, tmp_path / "run", limit_file_bytes=100_000
    )  # the checkpoint is the first large file
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    line = r.stderr.strip()
    assert line.startswith("distill train: error: ") and "checkpoints/latest.pt" in line
    assert "File too large" in line and "choose another --out" in line
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))  # no half-written file left


def test_a_read_only_out_folder_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    from distill.cli import main

    data = make_pair_dataset(tmp_path / "data", n=12, keep=[True] * 12)
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.is_relative_to(tmp_path / "run"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    args = [
        "train",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "tiny",
        "--max-steps",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("distill train: error: ") and str(tmp_path / "run") in err
    assert "read-only; choose another --out" in err


def test_checkpoint_every_keeps_the_previous_one_and_resume_falls_back_to_it(tmp_path: Path) -> None:
    data = make_pair_dataset(tmp_path / "data", n=40, keep=[True] * 40)
    out = tmp_path / "run"
    opts = dict(max_steps=7, checkpoint_every=3, sample_every=100)
    result = train(tiny_options(data, out, **opts), epochs=3)
    per_epoch = json.loads((out / "run.json").read_text())["steps_per_epoch"]
    assert per_epoch > 7 and result.status == "max_steps"  # every checkpoint here is mid-epoch
    assert load_checkpoint(out / CHECKPOINT)["global_step"] == 7
    assert load_checkpoint(out / PREVIOUS_CHECKPOINT)["global_step"] == 6
    (out / CHECKPOINT).write_bytes((out / CHECKPOINT).read_bytes()[:1000])  # a corrupt latest
    with pytest.raises(DistillError, match="already holds a run"):
        train(tiny_options(data, out, **opts), epochs=3)
    resumed = train(
        tiny_options(data, out, max_steps=8, preset=None, batch_size=None, checkpoint_every=1),
        resume=True,
        epochs=3,
    )
    assert resumed.progress.global_step == 8 and (out / "checkpoints" / "latest.pt.unreadable").is_file()
    assert (
        load_checkpoint(out / CHECKPOINT)["global_step"] == 8
    )  # the good one rotated, not the unreadable one
    assert load_checkpoint(out / PREVIOUS_CHECKPOINT)["global_step"] == 7
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # rows after step 6 were dropped and logged again

    with pytest.raises(DistillError, match="checkpoint_every must be >= 1"):
        tiny_options(data, out, checkpoint_every=0)


def test_a_sigkill_loses_at_most_checkpoint_every_steps(tmp_path: Path) -> None:
    data = make_pair_dataset(tmp_path / "data", n=40, keep=[True] * 40)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "train",
        str(data),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--epochs",
        "50",
        "--checkpoint-every",
        "2",
        "--sample-every",
        "1000",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = out / "metrics.jsonl"
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 5):
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    logged = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    saved = load_checkpoint(out / CHECKPOINT)["global_step"]
    assert logged >= 5 and logged - 2 <= saved <= logged and saved % 2 == 0  # mid-epoch: 17 steps an epoch


def test_a_resumed_runs_first_row_averages_the_whole_window(tmp_path: Path) -> None:
    data = make_pair_dataset(tmp_path / "data", n=40, keep=[True] * 40)

    def rows(run: Path) -> dict[int, dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r for r in map(json.loads, lines) if r["kind"] == "step"}

    full = tmp_path / "full"
    train(tiny_options(data, full, max_steps=10, log_every=5, sample_every=100), epochs=3)
    parts = tmp_path / "parts"
    train(tiny_options(data, parts, max_steps=7, log_every=5, sample_every=100), epochs=3)
    train(
        tiny_options(data, parts, max_steps=10, log_every=5, sample_every=100, preset=None, batch_size=None),
        resume=True,
        epochs=3,
    )
    a, b = rows(full), rows(parts)
    assert sorted(a) == sorted(b) == [5, 10]
    losses = [k for k in a[10] if k.startswith("loss_")]
    assert losses and all(
        a[10][k] == b[10][k] for k in losses
    )  # steps 6-10 in both, not 8-10 after the resume
