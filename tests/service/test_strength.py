"""The service's `strength`: default, 422 outside the trained range and on fixed models, mixed batches."""

from __future__ import annotations

import asyncio
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.batching import MicroBatcher
from app.config import Settings
from app.main import create_app
from engines.base import EngineSpec
from engines.ov import OpenVinoEngine, openvino_version
from tests.app_helpers import encode, gradient, make_entry, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def zoo(conditional_entry, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    shutil.copytree(conditional_entry, root / "cond")
    make_entry(root, "plain", teacher=False, samples=False)
    return root


@pytest.fixture(scope="module")
def client(zoo):
    settings = Settings(
        model_zoo=zoo, default_model="cond", warmup_runs=1, legacy_workers=0, max_wait_ms=200.0
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def post(client, model: str, **fields):
    data = encode(Image.fromarray(gradient(16, 16)))
    return client.post(
        "/transform",
        files={"image": ("p.png", data, "image/png")},
        data={"model": model, "format": "png", **fields},
    )


def pixels(response) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


def test_models_lists_the_range(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["cond"]["strength"]["range"] == [-1.5, 1.5] and models["cond"]["strength"]["default"] == 1.0
    assert models["plain"]["strength"] is None


def test_default_strength_and_identity_at_zero(client):
    r = post(client, "cond")
    assert r.status_code == 200 and r.headers["X-Strength"] == "1"
    assert np.array_equal(pixels(r), pixels(post(client, "cond", strength="1.0")))
    zero = post(client, "cond", strength="0")
    assert zero.status_code == 200
    assert np.abs(pixels(zero) - gradient(16, 16).astype(int)).max() <= 1  # strength 0 gives back the input
    assert not np.array_equal(pixels(post(client, "cond", strength="-1.5")), pixels(r))


def test_out_of_range_and_fixed_models_are_422(client):
    r = post(client, "cond", strength="2")
    assert r.status_code == 422 and r.json()["error"] == "strength_out_of_range"
    assert r.json()["range"] == [-1.5, 1.5] and "[-1.5, 1.5]" in r.json()["detail"]
    r = post(client, "plain", strength="0.5")
    assert r.status_code == 422 and r.json()["error"] == "strength_unsupported"
    assert post(client, "plain").status_code == 200  # the fixed model's one-input contract is unchanged
    assert post(client, "cond", strength="abc").status_code == 422


def test_the_runtime_answers_a_mixed_batch_item_by_item(client):
    runtime = client.app.state.service.models["cond"].runtime
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    s = np.array([-1.0, 0.0, 1.5], np.float32)
    together = runtime.run(x, s)
    for i in range(3):
        np.testing.assert_allclose(together[i], runtime.run(x[i : i + 1], s[i : i + 1])[0], atol=1e-5)
    np.testing.assert_allclose(together[1], x[1], atol=1e-6)


def test_requests_of_different_strengths_share_a_batch():
    calls: list[tuple[int, list[float] | None]] = []

    def run_batch(x: np.ndarray, strengths: np.ndarray | None = None) -> np.ndarray:
        calls.append((len(x), None if strengths is None else strengths.tolist()))
        return x * (1.0 if strengths is None else strengths[:, :, None, None])

    async def go():
        batcher = MicroBatcher(run_batch, max_batch=8, max_wait_s=0.2, queue_size=16)
        batcher.start()
        try:
            with batcher.expecting(), batcher.expecting(), batcher.expecting():
                pass  # three requests announced, then submitted together
            x = np.ones((1, 3, 4, 4), np.float32)
            return await asyncio.gather(
                *(batcher.submit(x, np.array([s], np.float32)) for s in (-1.0, 0.5, 2.0))
            )
        finally:
            await batcher.stop()

    results = asyncio.run(go())
    assert calls == [(3, [[-1.0], [0.5], [2.0]])]  # the one-edit dial's vectors [1], stacked [N, 1]
    assert [float(r.output[0, 0, 0]) for r in results] == [-1.0, 0.5, 2.0]
    assert all(r.batch_size == 3 for r in results)


def test_the_legacy_path_takes_the_same_strength(client):
    service = client.app.state.service
    model = service.models["cond"]
    alpha = model.entry.spec.edit.alpha
    assert [e.alpha for e in service.legacy_job(model, 5).edits] == [alpha]
    assert [e.alpha for e in service.legacy_job(model, 5, np.array([-0.5], np.float32)).edits] == [
        -0.5 * alpha
    ]


@pytest.fixture(scope="module")
def legacy_client(conditional_entry, tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy-zoo")
    shutil.copytree(conditional_entry, root / "cond")
    make_entry(root, "fixed", samples=False)  # a fixed-strength model with a teacher
    settings = Settings(
        model_zoo=root,
        default_model="cond",
        warmup_runs=1,
        intra_op_threads=1,
        legacy_workers=1,
        legacy_steps=2,
        legacy_max_steps=10,
        legacy_timeout_s=60,
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.mark.parametrize("endpoint", ["/legacy/transform", "/legacy/jobs"])
def test_the_legacy_endpoints_keep_the_strength_contract(legacy_client, endpoint):
    for model, strength, error in (
        ("cond", "1.50000001", "strength_out_of_range"),
        ("cond", "-2", "strength_out_of_range"),
        ("fixed", "0.5", "strength_unsupported"),
    ):
        data = encode(Image.fromarray(gradient(16, 16)))
        r = legacy_client.post(
            endpoint,
            files={"image": ("p.png", data, "image/png")},
            data={"model": model, "strength": strength},
        )
        assert (r.status_code, r.json()["error"]) == (422, error), r.text


def test_the_legacy_answer_names_its_strength(legacy_client):
    data = encode(Image.fromarray(gradient(16, 16)))
    for fields, shown in (({}, "1"), ({"strength": "-0.5"}, "-0.5")):
        r = legacy_client.post(
            "/legacy/transform",
            files={"image": ("p.png", data, "image/png")},
            data={"model": "cond", "format": "png", **fields},
        )
        assert r.status_code == 200 and r.headers["x-strength"] == shown, r.text


@pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed")
def test_openvino_static_shapes_take_the_strength_as_the_dynamic_batch(conditional_entry):
    """A conditional model's static shapes fix its strength [N] too; batch 1, a partial and a full batch answer
    as the dynamic-batch model, to float32 rounding (constants fold differently once the shape is static)."""
    spec = EngineSpec("openvino", "cpu", "fp32", "fp32")
    path = conditional_entry / "model.onnx"
    static = OpenVinoEngine(spec, path, (16, 16), static_batches=(1, 4))
    dynamic = OpenVinoEngine(spec, path, (16, 16), static_batches=())
    rng = np.random.default_rng(3)
    for n in (1, 3, 4):
        x = rng.uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32)
        s = rng.uniform(-1, 1.5, n).astype(np.float32)
        np.testing.assert_allclose(static.run(x, s), dynamic.run(x, s), rtol=0, atol=1e-6)
