"""Helpers for the service tests: a tiny model-zoo entry built on the spot, image makers, a uvicorn runner."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from torch import nn

from model_zoo.registry import ModelEntry, write_entry

NATIVE = 32  # the tiny student's native size


class TinyStudent(nn.Module):
    """A small conv net with the students' contract: [N,3,H,W] in [-1,1] -> same shape in [-1,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + 0.1 * self.body(x))


def export_tiny_onnx(path: Path) -> None:
    torch.manual_seed(0)
    model = TinyStudent().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is the team's choice
        torch.onnx.export(
            model,
            torch.zeros(1, 3, NATIVE, NATIVE),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                "output": {0: "batch", 2: "height", 3: "width"},
            },
        )


def make_entry(root: Path, name: str = "tiny", teacher: bool = True, samples: bool = True) -> ModelEntry:
    """Write a complete zoo entry: ONNX student, tiny StyleGAN2 teacher, random direction, sample images."""
    from networks.stylegan2 import Generator, save_generator

    dest = root / name
    dest.mkdir(parents=True)
    export_tiny_onnx(dest / "model.onnx")
    files = ["model.onnx"]
    manifest = {
        "name": name,
        "description": "tiny test student",
        "edit": {"attribute": "age", "alpha": 1.5, "layers": [0, 4]},
        "input": {
            "name": "input",
            "layout": "NCHW",
            "dtype": "float32",
            "size": [NATIVE, NATIVE],
            "channels": 3,
            "range": [-1, 1],
            "stride": 4,
        },
        "output": {"name": "output"},
        "variants": {"fp32": {"file": "model.onnx", "providers": ["cpu", "cuda"]}},
        "teacher": None,
        "direction": None,
    }
    if teacher:
        torch.manual_seed(0)
        G = Generator(
            z_dim=16, w_dim=16, img_resolution=NATIVE, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8}
        )
        save_generator(G, dest / "teacher.pt")
        np.save(dest / "direction.npy", np.random.default_rng(0).standard_normal(16).astype(np.float32))
        manifest["teacher"] = {"file": "teacher.pt"}
        manifest["direction"] = {"file": "direction.npy", "layers": [0, 4], "alpha": 1.5, "normalize": False}
        files += ["teacher.pt", "direction.npy"]
    if samples:
        (dest / "samples").mkdir()
        Image.fromarray(gradient(48, 40)).save(dest / "samples" / "face.png")
        files.append("samples/face.png")
    return write_entry(dest, manifest, files)


MULTI_EDITS = {"age": (-1.0, 1.0), "smile": (-0.5, 1.5), "glasses": (0.0, 1.0)}  # name -> trained range


def make_multi_edit_entry(root: Path, name: str = "multi", teacher: bool = True) -> ModelEntry:
    """A zoo entry of a student of the three :data:`MULTI_EDITS` (strength [N, 3], defaults 0) as `distill export`
    writes one: each edit with its ``edit_NAME.npy`` direction, alpha and layers, and (``teacher``) the tiny
    StyleGAN2 teacher of :func:`make_entry` for the legacy path."""
    from tests.pipeline_helpers import multi_edit_generator
    from training.export import export_onnx

    dest = root / name
    dest.mkdir(parents=True)
    G = multi_edit_generator("modulation", len(MULTI_EDITS))
    export_onnx(G, dest / "model.onnx", (NATIVE, NATIVE))
    files = ["model.onnx"]
    edits = []
    for k, (attribute, (low, high)) in enumerate(MULTI_EDITS.items()):
        direction = f"edit_{attribute}.npy"
        np.save(dest / direction, np.random.default_rng(k).standard_normal(16).astype(np.float32))
        files.append(direction)
        edits.append(
            {
                "attribute": attribute,
                "direction": direction,
                "alpha": 1.0 + k,
                "layers": [0, 4] if k != 1 else [2, 6],
                "range": [low, high],
                "default": 0.0,
            }
        )
    manifest = {
        "name": name,
        "description": "tiny test student of three edits",
        "input": {"size": [NATIVE, NATIVE], "stride": G.config.stride},
        "variants": {"fp32": {"file": "model.onnx", "providers": ["cpu", "cuda"]}},
        "edits": edits,
    }
    if teacher:
        from networks.stylegan2 import Generator, save_generator

        torch.manual_seed(0)
        T = Generator(
            z_dim=16, w_dim=16, img_resolution=NATIVE, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8}
        )
        save_generator(T, dest / "teacher.pt")
        manifest["teacher"] = {"file": "teacher.pt"}
        files.append("teacher.pt")
    return write_entry(dest, manifest, files)


class MeanLevel(nn.Module):
    """A domain scorer: column 0 the mean of the normalised input (-1 black .. 1 white), column 1 its negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, -mean], dim=1)


def add_domain(entry_dir: Path, keep: tuple[float | None, float | None] = (0.0, None)) -> ModelEntry:
    """Give an entry a domain as `distill export` would: a filter report naming a :class:`MeanLevel` scorer (8x8)
    with ``bright`` kept in ``keep`` on the originals (and a range on the edited images only, never the domain's)."""
    from tests.pipeline_helpers import export_scorer
    from training.export.domain import add_domain as record

    scorer = entry_dir.parent / f"{entry_dir.name}-level.onnx"
    export_scorer(MeanLevel(), scorer, 8)
    report = entry_dir.parent / f"{entry_dir.name}-filter_report.json"
    spec = {"type": "onnx", "path": str(scorer), "input_size": None, "mean": [0.5], "std": [0.5]}
    report.write_text(
        json.dumps(
            {
                "scorers": [
                    {
                        **spec,
                        "outputs": {"bright": 0},
                        "activation": "none",
                        "on": "a",
                        "keep": {"bright": list(keep)},
                    },
                    {
                        **spec,
                        "outputs": {"dark": 1},
                        "activation": "none",
                        "on": "b",
                        "keep": {"dark": [0.5, None]},
                    },
                ]
            }
        )
    )
    return record(entry_dir, report)


def wait_ready(client, timeout: float = 120.0) -> None:
    """Poll a TestClient's /readyz until the models are loaded and warmed up (fails after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)


def gradient(w: int, h: int) -> np.ndarray:
    """A deterministic, non-flat uint8 RGB picture."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1).astype(np.uint8)


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bytes(w: int = 48, h: int = 40) -> bytes:
    return encode(Image.fromarray(gradient(w, h)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(zoo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90.0):
    """Run ``distill serve`` on a free port until ready; yield (base URL, process); stop it (SIGINT, then kill).

    The server's output goes to a temporary file (a pipe could fill up and block it); after the block,
    ``process.log`` holds it.
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    full_env.update({"DISTILL_WARMUP_RUNS": "1", **(env or {})})
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-zoo",
        str(zoo),
        *args,
    ]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"distill serve exited with {proc.returncode}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"distill serve not ready after {timeout} s")
                time.sleep(0.2)
            yield url, proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.seek(0)
            proc.log = log.read()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring width x height, and one tiny IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


class Invert(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def make_face_entry(root: Path, name: str = "faces") -> None:
    """A zoo entry (tiny teacher, for the legacy path) whose student inverts colours and expects FFHQ faces."""
    make_entry(root, name, samples=False)
    dest = root / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Invert(),
            torch.zeros(1, 3, NATIVE, NATIVE),
            str(dest / "model.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                "output": {0: "batch", 2: "height", 3: "width"},
            },
        )
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["input"]["alignment"] = "ffhq"
    write_entry(dest, manifest, list(manifest["files"]))


# Headless Chromium for the demo-page tests (pytest -m browser).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextmanager
def legacy_test_client(root: Path, **overrides):
    """A ready TestClient on a zoo of ``tiny`` (with a teacher) and ``plain`` (without), one projection process."""
    from app.config import Settings
    from app.main import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
        from fastapi.testclient import TestClient
    make_entry(root, "tiny")
    make_entry(root, "plain", teacher=False)
    settings = Settings(
        model_zoo=root,
        default_model="tiny",
        warmup_runs=1,
        intra_op_threads=1,
        legacy_workers=1,
        legacy_queue=1,
        legacy_steps=5,
        **overrides,
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)  # includes starting the projection process and its warm-up
        yield c


def face_upload(**fields) -> dict:
    """httpx keyword arguments posting a 64x48 PNG as ``image`` with form ``fields``."""
    return {"files": {"image": ("face.png", png_bytes(64, 48), "image/png")}, "data": fields}
