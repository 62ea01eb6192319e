"""Readiness: a model that loads but does not fit its manifest (another model copied into the entry,
checksums updated) is refused at start: the reason is logged and ``/readyz`` answers 503 ``failed: <reason>``
for good, instead of "loading" forever or a 500 on every request."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from app.config import Settings
from app.main import create_app
from model_zoo.registry import write_entry
from tests.app_helpers import NATIVE, png_bytes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class Attributes(nn.Module):
    """An attribute reader, not a student: [N,3,H,W] -> [N,10]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


class HalfSize(nn.Module):
    """Image to image, but at half the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2)


class Identity3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def entry_with(root: Path, module: nn.Module, size: int, dynamic: bool) -> Path:
    """A zoo entry whose manifest says [N, 3, NATIVE, NATIVE] holding ``module`` exported at ``size``."""
    dest = root / "copied"
    dest.mkdir(parents=True)
    axes = (
        {"input": {0: "batch", 2: "h", 3: "w"}, "output": {0: "batch"}}
        if dynamic
        else {"input": {0: "batch"}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            torch.zeros(1, 3, size, size),
            str(dest / "model.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=axes,
        )
    manifest = {
        "name": "copied",
        "input": {"size": [NATIVE, NATIVE], "stride": 4},
        "variants": {"fp32": {"file": "model.onnx"}},
    }
    write_entry(dest, manifest, ["model.onnx"])
    return root


def readyz_after_start(zoo: Path, timeout: float = 30.0) -> tuple[int, dict, TestClient]:
    settings = Settings(model_zoo=zoo, warmup_runs=1, legacy_workers=0)
    client = TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + timeout
    while (r := client.get("/readyz")).json()["status"] == "loading":
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return r.status_code, r.json(), client


@pytest.mark.parametrize(
    ("module", "size", "dynamic", "reason"),
    [
        (
            Identity3(),
            64,
            False,
            "declares input tensor(float) [batch, 3, 64, 64]",
        ),  # fixed input of another size
        (
            Attributes(),
            NATIVE,
            True,
            "declares output tensor(float) [",
        ),  # the input fits, the output is no picture
        (
            HalfSize(),
            NATIVE,
            True,
            "answers a [1, 3, 32, 32] input with [1, 3, 16, 16]",
        ),  # only running it shows
    ],
    ids=["input-size", "output-rank", "output-size"],
)
def test_a_model_that_does_not_fit_fails_readiness_with_the_reason(
    tmp_path, caplog, module, size, dynamic, reason
):
    zoo = entry_with(tmp_path / "zoo", module, size, dynamic)
    with caplog.at_level(logging.ERROR, logger="app"):
        status, body, client = readyz_after_start(zoo, timeout=10.0)
        try:
            assert (status, body["status"]) == (503, "failed"), body
            assert (
                reason in body["detail"] and "model.onnx" in body["detail"] and "re-export" in body["detail"]
            )
            r = client.post("/transform", files={"image": ("f.png", png_bytes(), "image/png")})
            assert r.status_code == 503 and r.json()["error"] == "not_ready" and reason in r.json()["detail"]
            assert client.get("/healthz").status_code == 200
        finally:
            client.__exit__(None, None, None)
    assert any(reason in rec.getMessage() for rec in caplog.records)


def test_an_unexpected_load_error_is_reported_not_swallowed(tmp_path, monkeypatch, caplog):
    import app.service as service_module

    zoo = entry_with(tmp_path / "zoo", Identity3(), NATIVE, True)

    def broken(entry, settings):
        raise RuntimeError("provider exploded")

    monkeypatch.setattr(service_module, "load_runtime", broken)
    with caplog.at_level(logging.ERROR, logger="app"):
        status, body, client = readyz_after_start(zoo, timeout=10.0)
        client.__exit__(None, None, None)
    assert (status, body["status"], body["detail"]) == (503, "failed", "RuntimeError: provider exploded")
    assert any("provider exploded" in rec.getMessage() for rec in caplog.records)


def test_a_fitting_model_is_ready(tmp_path):
    status, body, client = readyz_after_start(entry_with(tmp_path / "zoo", Identity3(), NATIVE, True))
    try:
        assert (status, body["status"]) == (200, "ready")
        assert (
            client.post("/transform", files={"image": ("f.png", png_bytes(), "image/png")}).status_code == 200
        )
    finally:
        client.__exit__(None, None, None)


class BatchOfOne(nn.Module):
    """Declares a dynamic batch, but its graph reshapes to [1, 3, H, W]: it fails on any batch beyond 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0.5).reshape(1, 3, NATIVE, NATIVE)


def test_a_model_that_fails_beyond_batch_one_is_served_at_batch_one_with_a_warning(tmp_path):
    status, body, client = readyz_after_start(entry_with(tmp_path / "zoo", BatchOfOne(), NATIVE, True))
    try:
        assert (status, body["status"]) == (200, "ready") and "served at batch 1" in (body["detail"] or "")
        model = client.get("/models").json()["models"][0]
        assert model["batching"]["max_batch"] == 1 and "fails on a batch of 2" in model["warnings"][0]
        assert (
            client.post("/transform", files={"image": ("f.png", png_bytes(), "image/png")}).status_code == 200
        )
    finally:
        client.__exit__(None, None, None)
