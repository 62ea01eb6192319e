"""The service's `edits`: /models lists every model's edits, /transform, the legacy endpoints and `distill transform`
take them by name (checked against the manifest), and micro-batches mix students' strength vectors [K]."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.batching import MicroBatcher
from app.config import Settings
from app.main import create_app
from app.runtime import load_runtime
from core.errors import DistillError
from distill.cli import main
from editing.directions import LatentEdit, apply_direction, apply_edits
from engines.base import EngineSpec
from engines.ort import OrtEngine
from engines.ov import OpenVinoEngine, openvino_version
from model_zoo.registry import write_entry
from tests.app_helpers import MULTI_EDITS, encode, gradient, make_entry, make_multi_edit_entry, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def zoo(conditional_entry, tmp_path_factory) -> Path:
    """``multi`` (three edits, with a teacher), ``cond`` (a one-edit dial named age) and ``plain`` (one fixed edit)."""
    root = tmp_path_factory.mktemp("zoo")
    make_multi_edit_entry(root, "multi")
    shutil.copytree(conditional_entry, root / "cond")
    manifest = json.loads((root / "cond" / "manifest.json").read_text())
    manifest["edit"]["attribute"] = "age"
    write_entry(root / "cond", manifest)
    make_entry(root, "plain", teacher=False, samples=False)
    return root


@pytest.fixture(scope="module")
def client(zoo):
    settings = Settings(
        model_zoo=zoo,
        default_model="multi",
        warmup_runs=1,
        intra_op_threads=1,
        legacy_workers=1,
        legacy_steps=2,
        legacy_max_steps=10,
        legacy_timeout_s=60,
        max_wait_ms=300.0,
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def post(client, model: str, endpoint: str = "/transform", **fields):
    data = encode(Image.fromarray(gradient(32, 32)))
    return client.post(
        endpoint,
        files={"image": ("p.png", data, "image/png")},
        data={"model": model, "format": "png", **fields},
    )


def pixels(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


def test_models_lists_every_models_edits(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["multi"]["edits"] == [
        {"attribute": name, "range": list(r), "default": 0.0} for name, r in MULTI_EDITS.items()
    ]
    assert models["multi"]["strength"] is None
    assert models["cond"]["edits"] == [{"attribute": "age", "range": [-1.5, 1.5], "default": 1.0}]
    assert models["plain"]["edits"] == [{"attribute": "age", "range": [1.0, 1.0], "default": 1.0}]


def test_edits_by_name_and_all_zeros_give_back_the_input(client):
    zero = post(client, "multi")  # every edit left out: its default, 0
    assert zero.status_code == 200 and zero.headers["x-edits"] == "age=0,smile=0,glasses=0"
    assert np.abs(pixels(zero) - gradient(32, 32).astype(int)).max() <= 1
    explicit = post(client, "multi", edits='{"age": 0, "smile": 0, "glasses": 0}')
    assert np.array_equal(pixels(explicit), pixels(zero))
    r = post(client, "multi", edits='{"age": 1.0, "smile": -0.5}')
    assert r.status_code == 200 and r.headers["x-edits"] == "age=1,smile=-0.5,glasses=0"
    assert np.abs(pixels(r) - pixels(zero)).max() > 2
    assert not np.array_equal(pixels(post(client, "multi", edits='{"age": 1.0}')), pixels(r))


@pytest.mark.parametrize(
    "model, fields, error",
    [
        ("multi", {"edits": '{"age": 1, "beard": 1}'}, "unknown_edit"),
        ("multi", {"edits": '{"smile": 1.6}'}, "edit_out_of_range"),
        ("multi", {"edits": '{"age": 1'}, "invalid_edits"),
        ("multi", {"edits": "[1, 2]"}, "invalid_edits"),
        ("multi", {"edits": '{"age": "x"}'}, "invalid_edits"),
        ("multi", {"edits": '{"age": true}'}, "invalid_edits"),
        ("multi", {"edits": '{"age": NaN}'}, "invalid_edits"),
        ("multi", {"edits": '{"age": 1' + "0" * 400 + "}"}, "invalid_edits"),
        ("multi", {"strength": "1"}, "strength_unsupported"),
        ("cond", {"strength": "1", "edits": '{"age": 1}'}, "strength_and_edits"),
        ("cond", {"edits": '{"age": 2}'}, "edit_out_of_range"),
        ("plain", {"edits": '{"age": 0.5}'}, "edit_out_of_range"),
    ],
)
def test_bad_edits_are_422_with_the_allowed_names_and_ranges(client, model, fields, error):
    r = post(client, model, **fields)
    assert (r.status_code, r.json()["error"]) == (422, error), r.text
    if error in ("unknown_edit", "edit_out_of_range") and model == "multi":
        assert r.json()["allowed"] == {name: list(rng) for name, rng in MULTI_EDITS.items()}
        assert "smile [-0.5, 1.5]" in r.json()["detail"]
    if error == "edit_out_of_range" and model == "multi":
        assert r.json()["edit"] == "smile" and r.json()["range"] == [-0.5, 1.5]
    if error == "strength_unsupported":
        assert "edits" in r.json()["detail"]


def test_a_one_edit_dial_takes_edits_as_its_strength(client):
    by_edits = post(client, "cond", edits='{"age": 0.5}')
    by_strength = post(client, "cond", strength="0.5")
    assert by_edits.status_code == 200 and by_edits.headers["x-strength"] == "0.5"
    assert np.array_equal(pixels(by_edits), pixels(by_strength))
    assert post(client, "cond", edits="{}").headers["x-strength"] == "1"  # left out: the default
    plain = post(client, "plain", edits='{"age": 1}')  # the fixed strength itself
    assert plain.status_code == 200 and np.array_equal(pixels(plain), pixels(post(client, "plain")))


VECTORS = [[1.0, 0.0, 0.0], [0.0, 1.5, 0.0], [-1.0, -0.5, 1.0], [0.0, 0.0, 0.0]]


def test_a_micro_batch_mixes_edit_vectors_item_by_item(client):
    runtime = client.app.state.service.models["multi"].runtime
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32) for _ in VECTORS]

    async def go():
        batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=0.5, queue_size=16)
        batcher.start()
        try:
            with batcher.expecting(), batcher.expecting(), batcher.expecting(), batcher.expecting():
                pass  # four requests announced, then submitted together
            return await asyncio.gather(
                *(batcher.submit(x, np.array(v, np.float32)) for x, v in zip(xs, VECTORS, strict=True))
            )
        finally:
            await batcher.stop()

    results = asyncio.run(go())
    assert all(r.batch_size == 4 for r in results)
    for x, v, r in zip(xs, VECTORS, results, strict=True):
        alone = runtime.run(x, np.array([v], np.float32))[0]
        np.testing.assert_allclose(r.output, alone, atol=1e-5)
    np.testing.assert_allclose(results[3].output, xs[3][0], atol=1e-6)  # all zeros: the input


def test_concurrent_requests_with_different_edits_each_get_their_own(client):
    fields = [json.dumps(dict(zip(MULTI_EDITS, v, strict=True))) for v in VECTORS]
    alone = [pixels(post(client, "multi", edits=f)) for f in fields]
    with ThreadPoolExecutor(len(fields)) as pool:
        together = list(pool.map(lambda f: post(client, "multi", edits=f), fields))
    for r, expected in zip(together, alone, strict=True):
        assert r.status_code == 200
        assert np.abs(pixels(r) - expected).max() <= 1  # batched or not, to float rounding


def test_several_edits_add_up_in_w(client):
    torch.manual_seed(0)
    ws, d1, d2 = torch.randn(2, 8, 4), torch.randn(8, 4), torch.randn(4)
    edits = [LatentEdit(d1, 0.5, (0, 4)), LatentEdit(d2, -2.0, (2, 8))]
    expected = apply_direction(ws, d1, 0.5, (0, 4)) + apply_direction(ws, d2, -2.0, (2, 8)) - ws
    torch.testing.assert_close(apply_edits(ws, edits), expected)


def test_the_legacy_job_scales_each_edit(client):
    service = client.app.state.service
    model = service.models["multi"]
    assert model.has_teacher
    job = service.legacy_job(model, 5, np.array([1.0, -0.5, 0.0], np.float32))
    assert [(e.direction.name, e.alpha, e.layers) for e in job.edits] == [
        ("edit_age.npy", 1.0, (0, 4)),
        ("edit_smile.npy", -1.0, (2, 6)),
        ("edit_glasses.npy", 0.0, (0, 4)),
    ]


@pytest.mark.parametrize("endpoint", ["/legacy/transform", "/legacy/jobs"])
def test_the_legacy_endpoints_take_edits(client, endpoint):
    r = post(client, "multi", endpoint, edits='{"age": 5}')
    assert (r.status_code, r.json()["error"]) == (422, "edit_out_of_range"), r.text
    r = post(client, "multi", endpoint, edits='{"age": 1, "smile": 0.5}')
    if endpoint == "/legacy/jobs":
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        for _ in range(600):
            status = client.get(f"/legacy/jobs/{job}").json()["status"]
            if status not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert status == "done"
        r = client.get(f"/legacy/jobs/{job}/result")
    assert r.status_code == 200, r.text
    assert r.headers["x-edits"] == "age=1,smile=0.5,glasses=0"


def transform(*args: object) -> int:
    return main(["transform", *map(str, args), "--quiet"])


@pytest.fixture
def cli_zoo(zoo, monkeypatch) -> Path:
    for key, value in {
        "DISTILL_ENGINE": "onnxruntime",
        "DISTILL_PROVIDER": "cpu",
        "DISTILL_WARMUP_RUNS": "1",
        "DISTILL_INTRA_OP_THREADS": "1",
        "DISTILL_MODEL_ZOO": str(zoo),
    }.items():
        monkeypatch.setenv(key, value)
    return zoo


def test_distill_transform_takes_edits_by_name(cli_zoo, client, tmp_path):
    photo = tmp_path / "in" / "g.png"
    photo.parent.mkdir()
    photo.write_bytes(encode(Image.fromarray(gradient(32, 32))))
    out = tmp_path / "out"
    argv = ("--model", "multi", "--out", out, "--format", "png", "--edit", "age=1", "--edit", "smile=-0.5")
    assert transform(photo, *argv) == 0
    served = post(client, "multi", edits='{"age": 1, "smile": -0.5}')
    assert np.abs(np.asarray(Image.open(out / "g.png")).astype(int) - pixels(served)).max() <= 1


@pytest.mark.parametrize(
    "args, says",
    [
        (("--edit", "beard=1"), "no edit 'beard'"),
        (("--edit", "smile=2"), "outside"),
        (("--strength", "1"), "edits"),
        (("--edit", "age=1", "--edit", "age=0.5"), "given twice"),
    ],
)
def test_distill_transform_edit_errors_exit_2_with_one_line(cli_zoo, tmp_path, capsys, args, says):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(encode(Image.fromarray(gradient(16, 16))))
    assert transform(photos, "--model", "multi", "--out", tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("distill transform: error: ") and err.count("\n") == 1, err
    assert says in err


def test_distill_transform_refuses_a_malformed_edit(cli_zoo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        transform(tmp_path, "--model", "multi", "--out", tmp_path / "out", "--edit", "age")
    assert exit_.value.code == 2 and "expected NAME=S" in capsys.readouterr().err


@pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed")
def test_openvino_static_shapes_take_the_strength_vectors(zoo):
    """A student of K edits compiles its static shapes with strength [N, K]: batch 1, a partial and a full batch
    answer as the dynamic-batch model, and as ONNX Runtime, to float32 rounding."""
    spec = EngineSpec("openvino", "cpu", "fp32", "fp32")
    path = zoo / "multi" / "model.onnx"
    static = OpenVinoEngine(spec, path, (32, 32), static_batches=(1, 4))
    dynamic = OpenVinoEngine(spec, path, (32, 32), static_batches=())
    reference = OrtEngine(EngineSpec("onnxruntime", "cpu", "fp32", "fp32"), path)
    assert sorted(static.static) == [1, 4] and static.strength_dims == (3,) == reference.strength_dims
    rng = np.random.default_rng(3)
    for n in (1, 3, 4):
        x = rng.uniform(-1, 1, (n, 3, 32, 32)).astype(np.float32)
        s = rng.uniform(-0.5, 1, (n, 3)).astype(np.float32)
        np.testing.assert_allclose(static.run(x, s), dynamic.run(x, s), rtol=0, atol=1e-5)
        np.testing.assert_allclose(static.run(x, s), reference.run(x, s), rtol=0, atol=1e-4)


def test_a_manifest_of_other_edits_than_the_model_is_refused_at_start(tmp_path):
    entry = make_multi_edit_entry(tmp_path, "two")
    manifest = json.loads((entry.path / "manifest.json").read_text())
    manifest["edits"] = manifest["edits"][:2]  # the model takes strength [N, 3]
    entry = write_entry(entry.path, manifest)
    runtime = load_runtime(entry, Settings(engine="onnxruntime", provider="cpu", intra_op_threads=1))
    with pytest.raises(DistillError, match=r"declares its second input .*\[N, 2\] \(its 2 edits\)"):
        runtime.check_contract()
