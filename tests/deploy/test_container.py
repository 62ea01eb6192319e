"""The Docker images: the entrypoint's CPU sizing (fast, no container engine needed), and the CPU image
built and run for real (podman + runc here, docker elsewhere).

The image test is slow (minutes: the image installs torch), so it is marked ``container``:
``make test-container`` or ``pytest -m container tests/deploy/test_container.py``. It needs podman (with runc
and debootstrap) or a working docker.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from model_zoo.registry import list_entries

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "stylegan2-distill:cpu-test")


def have_engine() -> bool:
    if shutil.which("podman"):
        return True
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def image() -> str:
    if not have_engine():
        pytest.skip(
            "neither podman nor a working docker is installed (apt-get install podman runc debootstrap)"
        )
    build = subprocess.run(
        [str(REPO / "docker" / "build_cpu.sh")],
        cwd=REPO,
        env={**os.environ, "IMAGE": IMAGE},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def model_zoo():
    """The shipped model zoo when it has entries, else an untrained tiny entry exported for the test."""
    if list_entries(REPO / "model_zoo"):
        yield None
        return
    spec = importlib.util.spec_from_file_location(
        "service_benchmark", REPO / "benchmarks" / "service_benchmark.py"
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    root = Path(tempfile.mkdtemp(prefix="distill-container-zoo-"))
    try:
        bench.make_untrained_entry(root, "tiny", 32)
        shutil.rmtree(root / "_sources")
        for path in [root, *root.rglob("*")]:  # the container's user (uid 10001) reads the mount
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def entrypoint_config(tmp_path: Path, cpu_max: str | None = None, **env: str) -> dict[str, str]:
    """Run docker/entrypoint.sh --print-config against a fake cgroup folder; parse KEY=VALUE lines."""
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir(exist_ok=True)
    if cpu_max is not None:
        (cgroup / "cpu.max").write_text(cpu_max + "\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_") and k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        ["sh", str(REPO / "docker" / "entrypoint.sh"), "--print-config"],
        check=True,
        capture_output=True,
        text=True,
        env={**clean, "DISTILL_CGROUP_ROOT": str(cgroup), **env},
    )
    return dict(line.split("=", 1) for line in out.stdout.split())


def test_entrypoint_follows_the_cpu_quota(tmp_path):
    nproc = len(os.sched_getaffinity(0))
    assert entrypoint_config(tmp_path, "max 100000")["CPUS"] == str(nproc)
    assert entrypoint_config(tmp_path, "50000 100000")["CPUS"] == "1"  # half a CPU rounds up to one
    assert entrypoint_config(tmp_path, f"{100000 * (nproc + 8)} 100000")["CPUS"] == str(
        nproc
    )  # quota above nproc


def test_entrypoint_sizes_workers_and_threads(tmp_path):
    c5_2xlarge = entrypoint_config(tmp_path, DISTILL_CPUS="8")
    assert c5_2xlarge == {
        "CPUS": "8",
        "DISTILL_WORKERS": "2",
        "DISTILL_INTRA_OP_THREADS": "4",
        "DISTILL_LEGACY_THREADS": "4",
    }
    assert entrypoint_config(tmp_path, DISTILL_CPUS="4")["DISTILL_WORKERS"] == "1"
    assert entrypoint_config(tmp_path, DISTILL_CPUS="8", DISTILL_PROVIDER="cuda")["DISTILL_WORKERS"] == "1"
    user = entrypoint_config(tmp_path, DISTILL_CPUS="8", DISTILL_WORKERS="1", DISTILL_INTRA_OP_THREADS="3")
    assert user["DISTILL_WORKERS"] == "1" and user["DISTILL_INTRA_OP_THREADS"] == "3"


@pytest.mark.container
def test_cpu_container_answers_transform(image, model_zoo):
    env = {**os.environ, **({"MODEL_ZOO": str(model_zoo)} if model_zoo else {})}
    smoke = subprocess.run(
        [str(REPO / "docker" / "smoke_test.sh"), image],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = smoke.stdout + smoke.stderr
    assert smoke.returncode == 0, out[-4000:]
    assert "-> 200 image/jpeg" in out
    assert "POST /legacy/transform (5 steps) -> 200" in out or "no teacher" in out
    assert "X-Provider=cpu" in out and "X-Engine=" in out
    assert "X-Strength=" in out or "no strength-conditioned model" in out
    assert "2 CPUs -> 1 worker(s) x 2 ORT threads" in out, "the entrypoint sizes threads from the CPU limit"
    assert "smoke_test: PASS" in out
