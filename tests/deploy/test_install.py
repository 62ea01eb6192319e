"""The install: the Makefile's CPU install resolves to no CUDA package, a serving install (no `train` or
`faces` extra) runs ``distill serve``, the legacy path included, and the lock files (requirements/) pin every
package of each dependency set but torch, the Makefile and the images installing from them.

The resolution tests run the Makefile's own pip steps as ``pip install --dry-run --report`` against whatever
indexes this machine's pip is configured with (a local wheel cache, PyPI, PyTorch's CPU index), one attempt per
index (``--retries 0``) so an unreachable one costs no waiting; when the packages cannot be found from here
(no network and no local copy) they skip with pip's reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app_helpers import make_entry, png_bytes, serve

ROOT = Path(__file__).resolve().parents[2]
CUDA = re.compile(r"^(nvidia-.*|triton|cuda-.*|.*-cu\d+)$")
TRAINING_ONLY = {
    "onnx",
    "onnxconverter-common",
    "opencv-python-headless",
    "dlib-bin",
    "face-recognition-models",
}


def _makefile_torch_index() -> str:
    match = re.search(r"^TORCH_INDEX \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile sets TORCH_INDEX ?= <PyTorch's CPU index>"
    return match.group(1)


def _resolve(*args: str) -> dict[str, str]:
    """{package: version} pip would install for ``args`` into an empty environment; skip when unresolvable here."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        "-",
        "--ignore-installed",
        "--retries",
        "0",
        "--timeout",
        "15",
        "-c",
        str(ROOT / "constraints-cpu.txt"),
        *args,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        errors = [
            line for line in done.stderr.splitlines() if line.startswith("ERROR")
        ] or done.stderr.splitlines()
        pytest.skip(f"pip cannot resolve the install from this machine's indexes (offline?): {errors[-1:]}")
    report = json.loads(done.stdout)
    return {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in report["install"]
    }


def test_constraints_pin_the_cpu_build_of_torch():
    pins = [
        line for line in (ROOT / "constraints-cpu.txt").read_text().splitlines() if line.startswith("torch")
    ]
    assert len(pins) == 1 and re.fullmatch(r"torch==[\d.]+\+cpu", pins[0]), (
        pins
    )  # PyPI has no +cpu: no CUDA fallback
    assert "--index-url $(TORCH_INDEX)" in (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert f"--index-url {_makefile_torch_index()}" in dockerfile and "-c constraints-cpu.txt" in dockerfile


def test_makefile_cpu_install_resolves_no_cuda_package():
    index = _makefile_torch_index()
    torch = _resolve("--no-deps", "--index-url", index, "torch")  # step 1: torch alone from the CPU index
    assert list(torch) == ["torch"] and torch["torch"].endswith("+cpu"), torch
    # step 2, from an empty environment: the CPU index stands in for the torch step 1 installed
    dev = _resolve("--extra-index-url", index, "-r", "requirements/dev.txt", "-e", ".[dev]")
    assert dev["torch"].endswith("+cpu"), dev["torch"]
    assert not sorted(name for name in dev if CUDA.match(name)), "the CPU install pulls CUDA packages"
    assert set(dev) >= TRAINING_ONLY  # `make test` has the training packages
    locked = _pins("dev.txt")
    assert {name: dev[name] for name in locked} == locked  # every package at its locked version


def test_serving_install_has_no_training_only_package():
    serving = _resolve("--extra-index-url", _makefile_torch_index(), "-r", "requirements/serve.txt", ".")
    assert {"torch", "onnxruntime", "fastapi"} <= set(serving)
    assert not TRAINING_ONLY & set(serving), sorted(TRAINING_ONLY & set(serving))
    assert not sorted(name for name in serving if CUDA.match(name))


BLOCKER = """
import sys
BLOCKED = {"cv2", "onnx", "onnxconverter_common", "dlib", "_dlib_pybind11", "face_recognition_models"} | EXTRA
class _Hide:  # a serving install: the `train` and `faces` extras' modules are not there (find_spec finds nothing)
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [_Hide(finder) for finder in sys.meta_path]
"""


def test_distill_serve_runs_without_the_training_packages(tmp_path):
    """Every process of the service (the web worker and the spawned projection process) imports nothing of them."""
    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.replace("EXTRA", "set()"))
    done = subprocess.run(
        [sys.executable, "-m", "distill", "export", "x"],
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "stylegan2-distill[train]" in done.stderr, done.stderr
    image = tmp_path / "image"  # the serving image: no training/ either
    image.mkdir()
    (image / "sitecustomize.py").write_text(BLOCKER.replace("EXTRA", '{"training"}'))
    done = subprocess.run(
        [sys.executable, "-m", "distill", "train", "x"],
        env={"PYTHONPATH": str(image)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not in the serving image" in done.stderr, done.stderr
    with serve(zoo, env={"PYTHONPATH": str(image), "DISTILL_LEGACY_STEPS": "2"}) as (url, _):
        files = {"image": ("a.png", png_bytes(), "image/png")}
        assert httpx.post(f"{url}/transform", files=files, timeout=60).status_code == 200
        legacy = httpx.post(f"{url}/legacy/transform", files=files, timeout=120)
        assert legacy.status_code == 200, legacy.text


# ---------------------------------------------------------------------------- lock files
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(name: str) -> dict[str, str]:
    """{package: version} of a lock file; every line that is not a comment must be an exact pin."""
    pins = {}
    for line in (LOCKS / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{name}: {line!r} is not an exact pin"
        pins[_canonical(match.group(1))] = match.group(2)
    return pins


def _requirements(extra: str | None) -> list:
    """The requirements of the project's dependency set ``extra`` (None: the serving set), extras followed."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = list(project["dependencies"]) + (project["optional-dependencies"][extra] if extra else [])
    out = []
    while todo:
        req = Requirement(todo.pop())
        if req.name == project["name"]:
            for sub in req.extras:
                todo += project["optional-dependencies"][sub]
        else:
            out.append(req)
    return out


@pytest.mark.parametrize("lock,extra", [("serve.txt", None), ("train.txt", "train"), ("dev.txt", "dev")])
def test_each_lock_file_pins_its_whole_dependency_set_but_torch(lock, extra):
    pins = _pins(lock)
    assert "torch" not in pins  # constraints-cpu.txt's pin: the CPU wheel here, the CUDA one on a GPU machine
    for req in _requirements(extra):
        name = _canonical(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{lock} lacks {req} (pyproject.toml changed: run `make lock`)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock}: {name}=={pins[name]} vs {req}"
    assert "make lock" in (LOCKS / lock).read_text().splitlines()[1]  # the header names the refresh command


def test_the_lock_files_agree_and_nest():
    serve, train, dev = _pins("serve.txt"), _pins("train.txt"), _pins("dev.txt")
    assert serve.items() <= train.items() <= dev.items()
    assert not TRAINING_ONLY & set(serve) and set(train) >= TRAINING_ONLY


def test_the_makefile_and_the_images_install_from_the_lock_files():
    makefile = (ROOT / "Makefile").read_text()
    assert "$(PIP_INSTALL) -r requirements/serve.txt -e ." in makefile
    assert '$(PIP_INSTALL) -r requirements/dev.txt -e ".[dev]"' in makefile
    assert re.search(r"^lock:", makefile, re.M) and "LOCK_ARGS" in makefile
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        dockerfile = (ROOT / "docker" / name).read_text()
        assert "COPY requirements ./requirements" in dockerfile
        assert "-c requirements/train.txt -r requirements/serve.txt" in dockerfile, name
        assert "!requirements" in (ROOT / "docker" / f"{name}.dockerignore").read_text().splitlines()


def test_the_gpu_image_takes_the_cuda_wheel_of_the_cpu_pin():
    (cpu,) = re.findall(r"^torch==([\d.]+)\+cpu$", (ROOT / "constraints-cpu.txt").read_text(), re.M)
    assert re.findall(
        r"pip install \$PIP_ARGS torch==(\S+)", (ROOT / "docker" / "Dockerfile.gpu").read_text()
    ) == [cpu]
