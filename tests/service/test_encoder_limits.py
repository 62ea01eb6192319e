"""Encoder limits: a valid upload whose answer is beyond the encoder's size limits (WebP 16383 px a side,
JPEG 65535) gets a 422 with the limit before any work is done, never a 500."""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from app import imaging
from app.config import Settings
from app.errors import ServiceError
from app.main import create_app
from tests.app_helpers import encode, make_entry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PANORAMA = encode(Image.new("RGB", (17000, 1000), (90, 120, 150)), "JPEG", quality=50)
NEEDLE = encode(Image.new("RGB", (1, 100000), (200, 40, 40)))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    zoo = tmp_path_factory.mktemp("zoo")
    make_entry(zoo, "tiny", teacher=False)
    settings = Settings(model_zoo=zoo, warmup_runs=1, legacy_workers=0, max_pixels=20_000_000)
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield c


@pytest.mark.parametrize(("data", "fmt", "limit"), [(PANORAMA, "webp", 16383), (NEEDLE, "jpeg", 65535)])
def test_original_size_beyond_the_encoder_is_422_with_the_limit(client, data, fmt, limit):
    started = time.perf_counter()
    r = client.post(
        "/transform",
        files={"image": ("p", data, "application/octet-stream")},
        data={"size": "original", "format": fmt},
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "output_too_large" and body["limit"] == limit and str(limit) in body["detail"]
    assert "format=png" in body["detail"]
    assert time.perf_counter() - started < 2.0  # refused from the header, nothing decoded


def test_the_same_uploads_work_where_the_encoder_can_write_them(client):
    r = client.post(
        "/transform",
        files={"image": ("p", NEEDLE, "application/octet-stream")},
        data={"size": "original", "format": "png"},
    )
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (1, 100000)
    r = client.post(
        "/transform",
        files={"image": ("p", PANORAMA, "application/octet-stream")},
        data={"size": "crop", "format": "webp"},
    )
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (1000, 1000)


def test_encode_refuses_beyond_the_limit_whatever_the_path():
    with pytest.raises(ServiceError) as e:
        imaging.encode(np.zeros((2, 16384, 3), np.uint8), "webp", 90)
    assert e.value.status_code == 422 and e.value.extra["limit"] == 16383
    assert imaging.encode(np.zeros((2, 16383, 3), np.uint8), "webp", 90)[:4] == b"RIFF"


def test_header_check_happens_before_decoding(monkeypatch):
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(ServiceError, match="output_too_large|beyond the webp encoder"):
        imaging.decode(
            PANORAMA,
            native_hw=(32, 32),
            max_bytes=1 << 24,
            max_pixels=20_000_000,
            keep_original=True,
            output_format="webp",
        )
