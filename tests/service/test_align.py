"""/transform and /legacy/transform on a model that expects FFHQ-aligned faces: real portraits in, the photo back.

The student here inverts colours (y = -x), so what was edited, and where, is plain to check.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from editing.alignment.ffhq import align_face
from editing.alignment.landmarks import default_finder
from tests.app_helpers import NATIVE, make_entry, make_face_entry, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

data = pytest.importorskip(
    "skimage.data", reason="scikit-image ships the test portraits (pip install -e .[dev])"
)


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def decoded(data_: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data_)).convert("RGB"))


def two_faces() -> np.ndarray:
    face = data.astronaut()[40:300, 110:340]
    photo = np.full((320, 640, 3), 200, np.uint8)
    photo[30:290, 30:260], photo[30:290, 380:610] = face, face[:, ::-1]
    return photo


PORTRAIT = jpeg(data.astronaut())
PAIR = jpeg(two_faces())
NO_FACE = jpeg(data.coffee())


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    make_face_entry(root)
    make_entry(root, "plain", teacher=False, samples=False)
    settings = Settings(model_zoo=root, default_model="faces", warmup_runs=1, legacy_workers=0)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def post(client, data_: bytes, endpoint: str = "/transform", **fields):
    return client.post(
        endpoint, files={"image": ("photo.jpg", data_, "image/jpeg")}, data={"format": "png", **fields}
    )


def picture(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def stages(r) -> set[str]:
    return {part.split(";")[0] for part in r.headers["server-timing"].split(", ")}


def quad_region(quad: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    region = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(region, np.rint(quad).astype(np.int32), 1)
    return region.astype(bool)


def test_models_say_which_alignment_they_expect(client):
    by_name = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert by_name["faces"]["alignment"] == "ffhq" and by_name["plain"]["alignment"] == "none"


def test_original_size_returns_the_whole_photo_with_only_the_face_edited(client):
    photo = decoded(PORTRAIT)
    r = post(client, PORTRAIT, size="original")
    result = picture(r)
    assert result.shape == photo.shape
    assert r.headers["x-faces"] == "1"
    box = [int(v) for v in r.headers["x-face-boxes"].split(",")]
    assert 170 < box[0] < box[2] < 280 and 70 < box[1] < box[3] < 180
    assert {"decode", "detect", "align", "inference", "pasteback", "encode"} <= stages(r)

    face = default_finder().find(photo)[0]
    _, alignment = align_face(photo, face.landmarks, NATIVE)
    outside = ~quad_region(alignment.quad, photo.shape[:2])
    np.testing.assert_array_equal(result[outside], photo[outside])  # nothing outside the face changed
    changed = np.abs(result.astype(int) - photo).max(axis=2) > 40
    assert changed.sum() > 3000 and not changed[outside].any()
    nose = np.rint(face.landmarks[30]).astype(int)
    assert np.abs(result[nose[1], nose[0]].astype(int) + photo[nose[1], nose[0]] - 255).max() < 40  # inverted


def test_native_size_is_the_aligned_edited_face(client):
    photo = decoded(PORTRAIT)
    crop, _ = align_face(photo, default_finder().find(photo)[0].landmarks, NATIVE, resampling="opencv")
    result = picture(post(client, PORTRAIT))
    assert result.shape == (NATIVE, NATIVE, 3)
    assert np.abs(result.astype(int) - (255 - crop.astype(int))).max() <= 1


def test_crop_size_is_the_aligned_square_in_the_upload(client):
    photo = decoded(PORTRAIT)
    _, alignment = align_face(photo, default_finder().find(photo)[0].landmarks, NATIVE)
    side = round(alignment.side)
    assert picture(post(client, PORTRAIT, size="crop")).shape == (side, side, 3)


def test_no_face_is_a_422_with_a_reason(client):
    r = post(client, NO_FACE, size="original")
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "no_face" and "no face found in the 600x400 upload" in r.json()["detail"]
    assert post(client, PORTRAIT).status_code == 200
    # align=off: the centred crop, no detection, as before alignment existed
    r = post(client, NO_FACE, size="original", align="off")
    assert picture(r).shape == (400, 600, 3) and "detect" not in stages(r) and "x-faces" not in r.headers


def test_all_faces_are_edited(client):
    photo = decoded(PAIR)
    r = post(client, PAIR, size="original", faces="all")
    result = picture(r)
    assert r.headers["x-faces"] == "2" and len(r.headers["x-face-boxes"].split(";")) == 2
    for face in default_finder().find(photo):
        x, y = np.rint(face.landmarks[30]).astype(int)
        assert np.abs(result[y, x].astype(int) - photo[y, x]).max() > 60
    np.testing.assert_array_equal(result[:, 315:325], photo[:, 315:325])
    largest = picture(post(client, PAIR, size="original"))
    assert post(client, PAIR, size="original").headers["x-faces"] == "1"
    assert (np.abs(largest.astype(int) - photo).max(axis=2) > 60).sum() < (
        np.abs(result.astype(int) - photo).max(axis=2) > 60
    ).sum()


def test_all_faces_needs_the_original_size(client):
    r = post(client, PAIR, faces="all")
    assert r.status_code == 422 and r.json()["error"] == "faces_all_needs_original"


def test_a_model_without_alignment_keeps_the_centred_crop(client):
    r = post(client, PORTRAIT, model="plain", size="original")
    assert picture(r).shape == (512, 512, 3) and "detect" not in stages(r) and "x-faces" not in r.headers


def test_stage_histograms_include_align_and_pasteback(client):
    post(client, PORTRAIT, size="original")
    text = client.get("/metrics").text
    for stage in ("detect", "align", "pasteback"):
        assert (
            f'distill_stage_duration_seconds_count{{model="faces",provider="cpu",route="/transform",stage="{stage}"}}'
            in text
        )


@pytest.fixture(scope="module")
def legacy_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo-legacy")
    make_face_entry(root)
    settings = Settings(
        model_zoo=root,
        default_model="faces",
        warmup_runs=1,
        intra_op_threads=1,
        legacy_workers=1,
        legacy_queue=2,
        legacy_steps=2,
        legacy_max_steps=10,
        legacy_timeout_s=60,
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def test_legacy_path_aligns_and_pastes_back(legacy_client):
    photo = decoded(PAIR)
    r = post(legacy_client, PAIR, "/legacy/transform", size="original", faces="all")
    result = picture(r)
    assert result.shape == photo.shape and r.headers["x-faces"] == "2"
    assert {"detect", "align", "projection", "pasteback"} <= stages(r)
    np.testing.assert_array_equal(result[:, 315:325], photo[:, 315:325])
    r = post(legacy_client, NO_FACE, "/legacy/transform")
    assert r.status_code == 422 and r.json()["error"] == "no_face"


@pytest.fixture
def settings_of(client):
    """Change the running service's settings for one test (restored after)."""
    service = client.app.state.service
    original = service.settings

    def change(**values) -> None:
        service.settings = original.replace(**values)

    yield change
    service.settings = original


def test_more_faces_than_the_limit_is_a_422_before_any_crop(client, settings_of, monkeypatch):
    import editing.alignment.ffhq as ffhq

    def no_crops(*args, **kwargs):
        raise AssertionError("a crop was computed for a request refused for its face count")

    settings_of(max_faces=1)
    monkeypatch.setattr(ffhq, "align_face", no_crops)
    r = post(client, PAIR, size="original", faces="all")
    assert r.status_code == 422 and r.json()["error"] == "too_many_faces", r.text
    assert r.json()["limit"] == 1 and r.json()["faces"] == 2 and "DISTILL_MAX_FACES" in r.json()["detail"]


def test_face_path_pixels_in_flight_are_bounded(client):
    budget = client.app.state.service.face_pixels
    assert budget.held == 0 and budget.limit == client.app.state.service.settings.face_pixels
    budget.held = budget.limit - 512 * 512 + 1  # other photos in flight: this one does not fit
    try:
        r = post(client, PORTRAIT, size="original")
        assert r.status_code == 503 and r.json()["error"] == "face_path_busy" and r.headers["retry-after"]
    finally:
        budget.held = 0
    assert picture(post(client, PORTRAIT, size="original")).shape == (512, 512, 3)  # the retry passes
    assert post(client, NO_FACE, size="original").status_code == 422
    assert budget.held == 0  # given back after an answer and after a refusal


def test_a_crop_answer_is_held_to_the_pixel_limit():
    from app.errors import ServiceError
    from app.faces import AlignedUpload, check_crop
    from editing.alignment.ffhq import Alignment

    quad = np.array([[-500, -500], [-500, 1500], [1500, 1500], [1500, -500]], np.float64)  # beyond the photo
    upload = AlignedUpload(np.zeros((1000, 1000, 3), np.uint8), [], [], [Alignment(quad, NATIVE)])
    check_crop(upload, "png", 2000 * 2000)
    with pytest.raises(ServiceError) as refused:
        check_crop(upload, "png", 2000 * 2000 - 1)
    assert refused.value.status_code == 422 and refused.value.error == "output_too_large"
    with pytest.raises(ServiceError, match="webp"):
        check_crop(AlignedUpload(upload.photo, [], [], [Alignment(quad * 10, NATIVE)]), "webp", 10**9)
