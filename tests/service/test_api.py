"""The HTTP API in-process (TestClient): every endpoint, every bad upload, overload, errors, metrics counts."""

from __future__ import annotations

import io
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from tests.app_helpers import NATIVE, encode, gradient, make_entry, png_bytes, png_header_only, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    make_entry(root, "tiny")
    make_entry(root, "plain", teacher=False, samples=False)
    return root


def settings_for(zoo: Path, **overrides) -> Settings:
    base = Settings(
        model_zoo=zoo,
        default_model="tiny",
        warmup_runs=1,
        legacy_workers=0,
        max_upload_bytes=200_000,
        max_pixels=4_000_000,
    )
    return base.replace(**overrides)


@pytest.fixture(scope="module")
def client(zoo):
    with TestClient(create_app(settings_for(zoo))) as c:
        wait_ready(c)
        yield c


def upload(data: bytes, name: str = "photo.png", **fields):
    return {"files": {"image": (name, data, "application/octet-stream")}, "data": fields}


def sample_counts(client: TestClient, metric: str) -> dict[tuple, float]:
    """{sorted label items: value} for one metric's samples."""
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == metric:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


# ---------------------------------------------------------------------------- endpoints


def test_transform_returns_the_edit_with_timing_headers(client):
    r = client.post("/transform", **upload(png_bytes(64, 48)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (NATIVE, NATIVE)
    assert (
        r.headers["x-model"] == "tiny"
        and r.headers["x-provider"] == "cpu"
        and r.headers["x-variant"] == "fp32"
    )
    stages = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert {"decode", "preprocess", "queue", "inference", "postprocess", "encode", "total"} <= set(stages)
    assert all(float(v) >= 0 for v in stages.values())


def test_transform_output_is_the_models_output(client):
    import onnxruntime as ort

    from editing.pixels import from_output, to_input

    pixels = gradient(NATIVE, NATIVE)
    r = client.post("/transform", **upload(encode(Image.fromarray(pixels)), format="png"))
    session = ort.InferenceSession(str(Path(client.app.state.service.models["tiny"].entry.variant_path())))
    expected = from_output(session.run(None, {"input": to_input(pixels)})[0][0])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected)


@pytest.mark.parametrize(
    ("fmt", "media"), [("png", "image/png"), ("webp", "image/webp"), ("jpeg", "image/jpeg")]
)
def test_output_formats(client, fmt, media):
    r = client.post("/transform", **upload(png_bytes(), format=fmt))
    assert r.status_code == 200 and r.headers["content-type"] == media
    assert Image.open(io.BytesIO(r.content)).format == fmt.upper()


@pytest.mark.parametrize(
    ("size", "expected"), [("native", (NATIVE, NATIVE)), ("crop", (40, 40)), ("original", (64, 40))]
)
def test_geometry_option(client, size, expected):
    r = client.post("/transform", **upload(png_bytes(64, 40), size=size, format="png"))
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == expected


def test_models_lists_entries_provider_and_samples(client):
    info = client.get("/models").json()
    assert info["default"] == "tiny" and info["ready"] is True
    assert info["legacy"] == {"enabled": False, "steps": 1000, "max_steps": 1000, "timeout_s": 300.0}
    by_name = {m["name"]: m for m in info["models"]}
    assert set(by_name) == {"tiny", "plain"}
    tiny = by_name["tiny"]
    assert (
        tiny["input_size"] == [NATIVE, NATIVE] and tiny["provider"] == "cpu" and tiny["variants"] == ["fp32"]
    )
    assert tiny["provider_reason"] and tiny["batching"]["max_batch"] == 4
    assert tiny["samples"] == ["/models/tiny/samples/face.png"] and by_name["plain"]["samples"] == []
    r = client.get(tiny["samples"][0])
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (48, 40)
    assert client.get("/models/tiny/samples/../manifest.json").status_code == 404
    assert client.get("/models/tiny/samples/nope.png").json()["error"] == "unknown_sample"


@pytest.mark.parametrize(("engine", "streams"), [("openvino", 2), ("onnxruntime", 1)])
def test_streams_are_the_engines(zoo, engine, streams):
    """DISTILL_INFERENCE_STREAMS=2 runs two micro-batches at once on OpenVINO's two streams; ONNX Runtime, whose
    one session would only split its threads, runs one (what /models says), and both answer."""
    if engine == "openvino":
        pytest.importorskip("openvino")
    settings = settings_for(zoo, engine=engine, inference_streams=2, engine_cache=zoo.parent / "cache")
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        tiny = next(m for m in c.get("/models").json()["models"] if m["name"] == "tiny")
        assert tiny["engine"] == engine and tiny["batching"]["streams"] == streams
        assert c.post("/transform", **upload(png_bytes(), model="tiny")).status_code == 200


def test_io_binding_path_gives_the_same_output(client):
    runtime = client.app.state.service.models["tiny"].runtime
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, NATIVE, NATIVE)).astype(np.float32)
    plain = runtime.run(x)
    runtime.io_binding = True  # the CUDA path's code, on CPU memory
    try:
        bound = runtime.run(x)
    finally:
        runtime.io_binding = False
    np.testing.assert_array_equal(plain, bound)
    assert plain.shape == x.shape and plain.dtype == np.float32


def test_other_model_by_name(client):
    r = client.post("/transform", **upload(png_bytes(), model="plain"))
    assert r.status_code == 200 and r.headers["x-model"] == "plain"


def test_health_ready_docs_demo(client):
    assert client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert client.get("/readyz").json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    assert {"/transform", "/legacy/transform", "/models", "/healthz", "/readyz", "/metrics"} <= set(
        spec["paths"]
    )
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_metrics_exposition(client):
    text = client.get("/metrics").text
    for name in (
        "distill_request_duration_seconds_bucket",
        "distill_stage_duration_seconds_bucket",
        "distill_batch_size_bucket",
        "distill_queue_depth",
        "distill_requests_in_flight",
        "distill_model_info",
    ):
        assert name in text
    assert 'le="120.0"' in text and 'le="0.001"' in text
    info = {
        tuple(kv for kv in key if kv[0] not in ("engine", "precision")): value  # the measured engine choice
        for key, value in sample_counts(client, "distill_model_info").items()
    }
    assert (
        info[
            (
                ("input_size", f"{NATIVE}x{NATIVE}"),
                ("model", "tiny"),
                ("provider", "cpu"),
                ("teacher", "true"),
                ("variant", "fp32"),
            )
        ]
        == 1
    )


# ---------------------------------------------------------------------------- bad input


def noise_png() -> bytes:
    return encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(gradient(40, 40)).convert("CMYK"), "JPEG")


BAD = {
    "not an image": (b"definitely not a picture", 415, "not_an_image"),
    "gif": (encode(Image.fromarray(gradient(20, 20)), "GIF"), 415, "unsupported_format"),
    "bmp": (encode(Image.fromarray(gradient(20, 20)), "BMP"), 415, "unsupported_format"),
    "tiff": (encode(Image.fromarray(gradient(20, 20)), "TIFF"), 415, "unsupported_format"),
    "truncated": (noise_png()[:2000], 400, "corrupt_image"),
    "empty": (b"", 400, "empty_file"),
    "bomb": (png_header_only(30_000, 30_000), 413, "too_many_pixels"),
    "over the byte limit": (png_bytes() + b"\0" * 300_000, 413, "payload_too_large"),
    "original too wide for webp": (encode(Image.new("RGB", (16400, 60)), "JPEG"), 422, "output_too_large"),
    "original too tall for jpeg": (encode(Image.new("RGB", (1, 70000))), 422, "output_too_large"),
}
BAD_FIELDS = {
    "original too wide for webp": {"size": "original", "format": "webp"},
    "original too tall for jpeg": {"size": "original", "format": "jpeg"},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_uploads_get_a_json_4xx_and_the_service_keeps_serving(client, case):
    data, status, error = BAD[case]
    r = client.post("/transform", **upload(data, **BAD_FIELDS.get(case, {})))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == error and r.json()["detail"]
    assert client.post("/transform", **upload(png_bytes())).status_code == 200


@pytest.mark.parametrize("kind", ["cmyk", "16-bit", "palette", "grayscale", "alpha", "exif-rotated"])
def test_unusual_but_valid_images_are_converted(client, kind):
    rgb = Image.fromarray(gradient(40, 40))
    exif = Image.Exif()
    exif[0x0112] = 8
    data = {
        "cmyk": cmyk_jpeg(),
        "16-bit": encode(Image.fromarray((np.arange(1600).reshape(40, 40) * 40).astype(np.uint16))),
        "palette": encode(rgb.convert("P")),
        "grayscale": encode(rgb.convert("L"), "JPEG"),
        "alpha": encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "exif-rotated": encode(rgb, "JPEG", exif=exif.tobytes()),
    }[kind]
    assert client.post("/transform", **upload(data)).status_code == 200


def test_missing_field_and_empty_body(client):
    r = client.post("/transform", data={"model": "tiny"})
    assert r.status_code == 422 and r.json()["error"] == "missing_field" and "image" in r.json()["detail"]
    r = client.post("/transform")
    assert r.status_code == 422 and r.json()["error"] == "missing_field"
    r = client.post("/transform", content=b"", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500 and "error" in r.json()


def test_invalid_options(client):
    r = client.post("/transform", **upload(png_bytes(), format="gif"))
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = client.post("/transform", **upload(png_bytes(), size="huge"))
    assert r.status_code == 422


def test_unknown_model_is_404_listing_the_models(client):
    r = client.post("/transform", **upload(png_bytes(), model="nope"))
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_model" and r.json()["available"] == ["plain", "tiny"]


def test_streamed_upload_over_the_limit_is_refused_while_reading(client):
    sent = []

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(100):  # 100 x 64 KiB = 6.4 MB, no Content-Length
            sent.append(1)
            yield b"\0" * 65536

    r = client.post("/transform", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_unexpected_error_is_a_json_500_without_traceback(zoo, monkeypatch):
    with TestClient(create_app(settings_for(zoo)), raise_server_exceptions=False) as c:
        wait_ready(c)
        batcher = c.app.state.service.models["tiny"].batcher
        monkeypatch.setattr(
            batcher, "run_batch", lambda x: (_ for _ in ()).throw(KeyError("secret internals"))
        )
        r = c.post("/transform", **upload(png_bytes()))
        assert r.status_code == 500 and r.json()["error"] == "internal_error"
        assert "secret" not in r.text and "Traceback" not in r.text
        monkeypatch.undo()
        assert c.post("/transform", **upload(png_bytes())).status_code == 200


# ---------------------------------------------------------------------------- readiness, overload, metrics


def test_readyz_is_503_until_models_are_warm(zoo, monkeypatch):
    import app.service as service_module

    real = service_module.load_runtime

    def slow_load(entry, settings):
        time.sleep(1.0)
        return real(entry, settings)

    monkeypatch.setattr(service_module, "load_runtime", slow_load)
    with TestClient(create_app(settings_for(zoo, models=("plain",), default_model=None))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
        assert c.get("/healthz").status_code == 200
        r = c.post("/transform", **upload(png_bytes()))
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        wait_ready(c)
        assert c.post("/transform", **upload(png_bytes())).status_code == 200


def test_broken_zoo_keeps_readyz_503_with_the_reason(tmp_path):
    with TestClient(create_app(settings_for(tmp_path, default_model=None))) as c:
        deadline = time.monotonic() + 10
        while (body := c.get("/readyz").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert body["status"] == "failed" and "no model-zoo entries" in body["detail"]
        assert c.get("/healthz").status_code == 200


def test_overload_gives_503_with_retry_after_then_recovers(zoo):
    with TestClient(create_app(settings_for(zoo, max_batch=1, queue_size=2))) as c:
        wait_ready(c)
        batcher = c.app.state.service.models["tiny"].batcher
        real_run = batcher.run_batch
        batcher.run_batch = lambda x: (time.sleep(0.25), real_run(x))[1]  # a slow model
        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda _: c.post("/transform", **upload(png_bytes())), range(12)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        assert set(statuses) <= {200, 503}
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.json()["error"] == "queue_full" and int(busy.headers["retry-after"]) >= 1
        rejected = sample_counts(c, "distill_requests_rejected_total")
        assert rejected[(("reason", "queue_full"), ("route", "/transform"))] >= statuses.count(503)
        batcher.run_batch = real_run
        assert c.post("/transform", **upload(png_bytes())).status_code == 200


def test_inference_never_blocks_the_event_loop(zoo):
    with TestClient(create_app(settings_for(zoo, max_batch=1))) as c:
        wait_ready(c)
        batcher = c.app.state.service.models["tiny"].batcher
        real_run = batcher.run_batch
        batcher.run_batch = lambda x: (time.sleep(1.0), real_run(x))[1]  # a 1 s model
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(c.post, "/transform", **upload(png_bytes())) for _ in range(2)]
            time.sleep(0.2)
            t0 = time.perf_counter()
            assert c.get("/healthz").status_code == 200
            assert c.get("/models").status_code == 200
            answered_in = time.perf_counter() - t0
            assert all(f.result().status_code == 200 for f in slow)
        assert answered_in < 0.5, f"/healthz took {answered_in:.2f} s while inference ran"
        batcher.run_batch = real_run


def test_metrics_count_every_request(client):
    key_ok = (("model", "tiny"), ("provider", "cpu"), ("route", "/transform"), ("status", "200"))
    key_bad = (("model", "tiny"), ("provider", "cpu"), ("route", "/transform"), ("status", "415"))
    before = sample_counts(client, "distill_request_duration_seconds_count")
    stages_before = sample_counts(client, "distill_stage_duration_seconds_count")
    batches_before = sample_counts(client, "distill_batch_size_sum")
    for _ in range(7):
        assert client.post("/transform", **upload(png_bytes())).status_code == 200
    for _ in range(3):
        assert client.post("/transform", **upload(b"GIF89a....")).status_code == 415
    after = sample_counts(client, "distill_request_duration_seconds_count")
    assert after[key_ok] - before.get(key_ok, 0) == 7
    assert after[key_bad] - before.get(key_bad, 0) == 3
    stage_key = (("model", "tiny"), ("provider", "cpu"), ("route", "/transform"), ("stage", "inference"))
    assert (
        sample_counts(client, "distill_stage_duration_seconds_count")[stage_key] - stages_before[stage_key]
        == 7
    )
    batch_key = (("model", "tiny"), ("provider", "cpu"))
    assert sample_counts(client, "distill_batch_size_sum")[batch_key] - batches_before[batch_key] == 7


def test_concurrent_requests_share_batches(zoo):
    with TestClient(create_app(settings_for(zoo, max_batch=8, max_wait_ms=50))) as c:
        wait_ready(c)
        alone = c.post("/transform", **upload(png_bytes(), format="png"))
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda _: c.post("/transform", **upload(png_bytes(), format="png")), range(16))
            )
        assert all(r.status_code == 200 for r in responses)
        assert max(int(r.headers["x-batch-size"]) for r in responses) > 1
        assert all(r.content == alone.content for r in responses)  # batching does not change the pictures
