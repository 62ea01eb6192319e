"""The shipped default model, `model_zoo/toyfaces-age`: it loads, the service answers with it out of the box, the
edit really ages the faces, and its committed reports match the artifacts beside them."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from editing.images import from_uint8
from model_zoo.registry import default_root, get_entry, list_entries
from tests.app_helpers import wait_ready
from training.metrics import psnr
from training.toyfaces.attributes import QUALITY_INDEX, AttributeScorer, default_path, predict
from training.toyfaces.clean_renders import CLEAN_SEED0, clean_render_set

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

NAME = "toyfaces-age"
DIAL = "toyfaces-age-strength"  # the strength dial beside it
MULTI = "toyfaces-multi"  # four edits in one student
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def entry():
    return get_entry(NAME)  # verifies the size and sha256 of every file in the manifest


@pytest.fixture(scope="module")
def client():
    with TestClient(
        create_app(Settings(warmup_runs=1, legacy_workers=0))
    ) as c:  # the defaults `make serve` uses
        wait_ready(c)
        yield c


def test_it_is_in_the_default_zoo_with_teacher_direction_and_samples(entry):
    assert [e.name for e in list_entries(default_root())] == [NAME, DIAL, MULTI]
    assert entry.teacher_path is not None and entry.direction_path is not None
    assert {"fp32", "int8"} <= set(entry.variants)
    assert len(list((entry.path / "samples").glob("*.png"))) >= 4


def test_service_serves_it_by_default_and_the_faces_get_older(client, entry):
    models = client.get("/models").json()
    assert [m["name"] for m in models["models"]] == [NAME, DIAL, MULTI] and models["default"] == NAME
    assert models["models"][0]["samples"]
    scorer = AttributeScorer(default_path())
    originals, edited = [], []
    for path in sorted((entry.path / "samples").glob("*.png")):
        r = client.post(
            "/transform", files={"image": (path.name, path.read_bytes(), "image/png")}, data={"format": "png"}
        )
        assert r.status_code == 200 and r.headers["x-model"] == NAME, r.text
        originals.append(np.asarray(Image.open(path).convert("RGB")))
        edited.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")))
    before, after = predict(scorer, np.stack(originals)), predict(scorer, np.stack(edited))
    assert (after[:, 0] > before[:, 0]).all(), (before[:, 0], after[:, 0])  # every sample looks older
    assert (after[:, QUALITY_INDEX] >= 0.5).mean() >= 0.75  # and is still a clean face


def test_served_transform_moves_clean_renders_toward_their_true_edit(client, entry):
    """The domain's "photographs" (clean renders of ageable adults no teacher drew), through the service, against the
    renderer's truly aged face at the teacher's edit strength: 2 dB closer than the unchanged input, and older to the judge."""
    report = json.loads((entry.path / "evaluation" / "report.json").read_text())
    clean = clean_render_set(8, 128, 128, report["clean_renders"]["age_change"], seed0=CLEAN_SEED0 + 500_000)
    outputs = []
    for i, image in enumerate(clean.inputs):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        r = client.post(
            "/transform", files={"image": (f"{i}.png", buf.getvalue(), "image/png")}, data={"format": "png"}
        )
        assert r.status_code == 200, r.text
        outputs.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")))
    truth = from_uint8(np.stack(clean.targets))
    gain = psnr(from_uint8(np.stack(outputs)), truth) - psnr(from_uint8(np.stack(clean.inputs)), truth)
    assert gain.mean() > 2.0, gain.tolist()  # the shipped bar, on ageable adults (see clean_renders.py)
    scorer = AttributeScorer(default_path())
    before, after = predict(scorer, np.stack(clean.inputs)), predict(scorer, np.stack(outputs))
    assert (after[:, 0] > before[:, 0]).mean() >= 7 / 8, (before[:, 0], after[:, 0])


def test_committed_reports_belong_to_this_entry(entry):
    files = json.loads((entry.path / "manifest.json").read_text())["files"]
    report = json.loads((entry.path / "evaluation" / "report.json").read_text())
    assert report["entry"]["name"] == NAME and report["teacher"]["sha256"] == files["teacher.pt"]["sha256"]
    assert (
        report["seeds"]["count"] >= 500
        and report["seeds"]["held_out_verified"]
        and report["legacy"]["n"] >= 20
    )
    assert report["clean_renders"]["n"] >= 200 and "identity" in report["fidelity"]
    assert (
        report["clean_renders"]["ages"]["max"] < 1 and report["clean_renders"]["capped"]["n"] >= 100
    )  # reported apart
    teacher = json.loads((entry.path / "teacher_report" / "report.json").read_text())
    assert teacher["num"] >= 1000 and teacher["generator_sha256"] == files["teacher.pt"]["sha256"]
    assert teacher["direction_sha256"] == files["direction.npy"]["sha256"]


def test_the_shipped_dial_ages_and_de_ages_its_samples(client):
    """The strength dial, through the service: strength -1 reads younger than the sample, +1 older, 0 the sample."""
    scorer = AttributeScorer(default_path())
    dial = get_entry(DIAL)
    for path in sorted((dial.path / "samples").glob("render-*.png")):
        ages = {}
        for strength in (-1.0, 0.0, 1.0):
            r = client.post(
                "/transform",
                files={"image": (path.name, path.read_bytes(), "image/png")},
                data={"model": DIAL, "strength": str(strength), "format": "png"},
            )
            assert r.status_code == 200, r.text
            ages[strength] = predict(
                scorer, np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))[None]
            )[0, 0]
        assert ages[-1.0] < ages[0.0] < ages[1.0], (path.name, ages)


def test_the_shipped_multi_edit_student_moves_each_attribute_and_zeros_give_back_the_input(client):
    """toyfaces-multi through the service, on its sample renders: each edit at +1 raises its own attribute (by the
    judge, on average), all zeros returns the picture, and its committed evaluation belongs to this entry."""
    scorer = AttributeScorer(default_path())
    multi = get_entry(MULTI)
    names = [e.attribute for e in multi.spec.edits]
    assert names == ["age", "smile", "hair_color", "glasses"]
    column = {
        n: i
        for i, n in enumerate(
            ("age", "smile", "hair_color", "hair_style", "skin_tone", "eye_size", "glasses")
        )
    }
    paths = sorted((multi.path / "samples").glob("render-*.png"))
    inputs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    def served(edits: dict[str, float]) -> np.ndarray:
        out = []
        for path in paths:
            r = client.post(
                "/transform",
                files={"image": (path.name, path.read_bytes(), "image/png")},
                data={"model": MULTI, "edits": json.dumps(edits), "format": "png"},
            )
            assert r.status_code == 200, r.text
            out.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")))
        return np.stack(out)

    assert np.array_equal(served({}), inputs)
    before = predict(scorer, inputs)
    for name in names:
        after = predict(scorer, served({name: 1.0}))
        rise = float((after[:, column[name]] - before[:, column[name]]).mean())
        assert rise > 0.1, (name, rise)
    report = json.loads((multi.path / "evaluation" / "report.json").read_text())
    files = json.loads((multi.path / "manifest.json").read_text())["files"]
    assert report["entry"]["name"] == MULTI and report["teacher"]["sha256"] == files["teacher.pt"]["sha256"]
    assert report["edits"]["judged_on"] == "clean_renders" and report["edits"]["clean_renders"]["n"] >= 200
