"""The Dockerfiles and the build script, without building: a numeric user, a training image that holds every
module the pipeline's commands need, and a build script that changes nothing on the host."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from distill.cli import EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
TRAIN_BUILD = (
    "docker build -f docker/Dockerfile.gpu --build-arg EXTRAS=train -t stylegan2-distill:gpu-train ."
)


def pod_users() -> set[int]:
    """runAsUser of every pod in deploy/k8s."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")))
    return {int(u) for u in re.findall(r"runAsUser: (\d+)", text)}


def test_the_images_run_as_the_numeric_user_the_pods_expect():
    """A name (USER distill) cannot be checked by Kubernetes' runAsNonRoot without a runAsUser."""
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        (user,) = re.findall(r"^USER (\S+)$", (DOCKER / name).read_text(), re.M)
        assert re.fullmatch(r"\d+:\d+", user), (name, user)
        assert {int(user.split(":")[0])} == pod_users(), name
    assert not re.findall(r"^USER ", (DOCKER / "Dockerfile.train").read_text(), re.M)  # inherits it


def test_the_training_image_extends_the_gpu_image_built_with_the_train_extra():
    dockerfile = (DOCKER / "Dockerfile.train").read_text()
    assert TRAIN_BUILD in dockerfile and "ARG SERVING=stylegan2-distill:gpu-train" in dockerfile
    # the build refuses a base without the extras: every module `distill` leaves out without them is imported
    (check,) = re.findall(r'^RUN python3 -c "import ([^"]+)"', dockerfile, re.M)
    imported = {m.strip() for m in check.split(",")}
    assert set(EXTRA_MODULES) | {"training.export"} <= imported
    assert f"build it with: {TRAIN_BUILD}" in dockerfile
    readme = (ROOT / "README.md").read_text()
    assert (
        TRAIN_BUILD in readme
        and "docker build -f docker/Dockerfile.train -t stylegan2-distill:train ." in readme
    )
    jobs = [
        c["image"]
        for name in ("pairs-job.yaml", "train-job.yaml", "train-pytorchjob.yaml")
        for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / name).read_text())
        for c in _containers(doc)
    ]
    assert jobs and set(jobs) == {"stylegan2-distill:train"}


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "Job":
        return doc["spec"]["template"]["spec"]["containers"]
    if doc["kind"] == "PyTorchJob":
        return [
            c
            for r in doc["spec"]["pytorchReplicaSpecs"].values()
            for c in r["template"]["spec"]["containers"]
        ]
    return []


def _run_build_script(tmp_path: Path, conf: str) -> tuple[subprocess.CompletedProcess, Path]:
    """docker/build_cpu.sh with podman stood in by a script that logs its arguments and succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "podman.log"
    fake = bin_dir / "podman"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    (tmp_path / "containers.conf").write_text(conf)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ENGINE": "podman",
        "CONTAINERS_CONF": str(tmp_path / "containers.conf"),
        "IMAGE": "stylegan2-distill:script-test",
    }
    done = subprocess.run(
        [str(DOCKER / "build_cpu.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    return done, log


def test_the_build_script_says_what_podman_needs_and_changes_no_host_file(tmp_path):
    conf = "[containers]\nlog_size_max = -1\n"
    done, log = _run_build_script(tmp_path, conf)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "'default_ulimits = []' under [containers]" in done.stderr
    assert str(tmp_path / "containers.conf") in done.stderr
    assert (tmp_path / "containers.conf").read_text() == conf and not log.exists()
    script = (DOCKER / "build_cpu.sh").read_text()
    assert "sed -i" not in script and '>> "$CONF' not in script


def test_the_build_script_builds_when_podman_is_configured(tmp_path):
    done, log = _run_build_script(tmp_path, "[containers]\ndefault_ulimits = []\n")
    assert done.returncode == 0, done.stderr
    build = [line for line in log.read_text().splitlines() if " build " in f" {line} "]
    assert len(build) == 1 and "-f docker/Dockerfile.cpu -t stylegan2-distill:script-test" in build[0]
