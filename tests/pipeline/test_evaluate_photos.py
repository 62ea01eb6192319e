"""distill evaluate --photos on the tests' portraits (scikit-image's astronaut, the same face twice, a coffee cup):
students whose effect is known, measured through the service's face path by dlib's face descriptor.

- "keep": a student that returns its input, at 256 px: the pasted-back face stays the same person;
- "blank": a student that adds 2 to every pixel in [-1, 1], so returns white: the face is gone (a student that
  adds 1, washing the face out, still leaves the same person to dlib);
- the identity row (the photo returned unchanged) is exactly 0 from itself.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from distill.cli import main
from editing.alignment.identity import SAME_PERSON, default_descriptor
from editing.alignment.landmarks import default_finder
from model_zoo.registry import write_entry
from tests.app_helpers import make_entry
from tests.pipeline_helpers import scorer_onnx, student_onnx

pytest.importorskip("dlib", reason="dlib (the `faces` extra: pip install -e '.[faces]') reads the faces")
data = pytest.importorskip(
    "skimage.data", reason="scikit-image ships the test portraits (pip install -e .[dev])"
)


# One engine, one thread, one warm-up run: the service loads quickly.
ENV = {
    "DISTILL_ENGINE": "onnxruntime",
    "DISTILL_PROVIDER": "cpu",
    "DISTILL_WARMUP_RUNS": "1",
    "DISTILL_INTRA_OP_THREADS": "1",
}


@pytest.fixture(autouse=True)
def quick_service(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    photos = root / "photos"
    photos.mkdir()
    face = data.astronaut()[40:300, 110:340]
    pair = np.full((320, 640, 3), 200, np.uint8)
    pair[30:290, 30:260], pair[30:290, 380:610] = face, face[:, ::-1]
    Image.fromarray(data.astronaut()).save(photos / "astronaut.jpg", quality=92)
    Image.fromarray(pair).save(photos / "pair.jpg", quality=92)
    Image.fromarray(data.coffee()).save(photos / "coffee.jpg", quality=92)
    zoo = root / "zoo"
    for name, add in (("keep", 0.0), ("blank", 2.0)):
        make_entry(zoo, name, samples=False)  # a tiny teacher (for the legacy path) and a random direction
        student_onnx(zoo / name / "model.onnx", add)
        manifest = json.loads((zoo / name / "manifest.json").read_text())
        manifest["input"]["size"] = [256, 256]
        manifest["truncation"] = 0.7
        write_entry(zoo / name, manifest, list(manifest["files"]))
    scorer_onnx(root / "scorer.onnx")
    return {"root": root, "photos": photos, "zoo": zoo}


def _photos(setup, name, out, *extra):
    argv = [
        "evaluate",
        name,
        "--model-zoo",
        str(setup["zoo"]),
        "--out",
        str(out),
        "--photos",
        str(setup["photos"]),
        "--photos-legacy-num",
        "1",
        "--legacy-steps",
        "2",
        "--scorer",
        str(setup["root"] / "scorer.onnx"),
        "--attribute",
        "brightness=0",
        "--other",
        "redness=1",
        "--input-size",
        "16",
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "photos.json").read_text())


def _edit_success(report, path: str) -> float:
    """Edit success recomputed from the per-face attributes: the rise in the teacher's direction against the
    report's threshold (half the teacher's mean change)."""
    sign = 1.0 if report["edit"]["teacher_mean_change"] >= 0 else -1.0
    rises = [sign * (r["attribute"][path] - r["attribute"]["input"]) for r in report["face_rows"]]
    return float(np.mean([r >= report["edit"]["threshold"] for r in rises]))


def test_identity_is_exact_and_a_blanked_face_is_another_person(setup, tmp_path):
    keep = _photos(setup, "keep", tmp_path / "keep", "--photos-only", "--num", "4")
    blank = _photos(
        setup, "blank", tmp_path / "blank", "--photos-only", "--num", "4", "--photos-legacy-num", "0"
    )

    for report in (keep, blank):
        assert report["files"] == ["astronaut.jpg", "coffee.jpg", "pair.jpg"]
        assert report["no_face"] == ["coffee.jpg"] and report["errors"] == {} and report["faces"] == 3
        ident = report["paths"]["identity"]
        assert ident["identity_distance"]["mean"] == 0.0 and ident["same_person"] == 1.0
        assert ident["found_again"] == 1.0
        assert ident["edit"]["edit_success"] == 0.0 and ident["edit"]["mean_change"] == 0.0
        assert report["paths"]["student"]["edit"]["edit_success"] == pytest.approx(
            _edit_success(report, "student")
        )
    legacy = keep["paths"]["legacy"]
    assert legacy["photos"] == 1 and legacy["faces"] == 1  # the astronaut, the first photo with a face
    assert keep["legacy"]["steps"] == 2 and "legacy" not in blank["paths"]
    assert (tmp_path / "keep" / "photos_grid.png").is_file()

    kept, gone = keep["paths"]["student"], blank["paths"]["student"]
    assert kept["same_person"] == 1.0 and kept["found_again"] == 1.0
    assert kept["identity_distance"]["p90"] < SAME_PERSON / 2
    assert gone["same_person"] == 0.0 and gone["found_again"] == 0.0
    assert gone["identity_distance"]["p10"] > SAME_PERSON
    md = (tmp_path / "keep" / "photos.md").read_text()
    assert "| identity | 2 | 3 | 0.000 | 0.000 | 100% | 100% | 0% |" in md
    assert "no face in 1 (coffee.jpg)" in md and "--photos-only" in md


def test_photos_section_in_the_full_report(setup, tmp_path):
    argv = [
        "--num",
        "4",
        "--legacy-num",
        "0",
        "--timing-num",
        "2",
        "--variants",
        "fp32",
        "--truncation",
        "0.7",
    ]
    photos = _photos(setup, "keep", tmp_path / "full", *argv, "--photos-legacy-num", "0")
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["photos"]["paths"]["student"] == photos["paths"]["student"]
    assert "legacy" not in photos["paths"] and photos["legacy"] is None
    assert photos["edit"]["teacher_mean_change"] == report["edit"]["teacher_mean_change"]
    assert "## Photographs" in (tmp_path / "full" / "report.md").read_text()


def test_refusals(setup, tmp_path, capsys):
    zoo = str(setup["zoo"])
    assert main(["evaluate", "keep", "--model-zoo", zoo, "--out", str(tmp_path), "--photos-only"]) == 2
    assert "--photos-only needs --photos DIR" in capsys.readouterr().err
    argv = ["evaluate", "keep", "--model-zoo", zoo, "--out", str(tmp_path), "--photos-only", "--photos"]
    assert main([*argv, str(tmp_path / "none")]) == 2
    assert "none: not a folder; --photos takes a folder" in capsys.readouterr().err


def _clear_face_models() -> None:
    default_finder.cache_clear()
    default_descriptor.cache_clear()


@pytest.mark.parametrize("module", ["dlib", "face_recognition_models"])
def test_missing_faces_extra_is_named(setup, tmp_path, capsys, monkeypatch, module):
    argv = ["evaluate", "keep", "--model-zoo", str(setup["zoo"]), "--out", str(tmp_path), "--photos-only"]
    find_spec = importlib.util.find_spec
    _clear_face_models()
    try:
        with monkeypatch.context() as m:
            m.setattr(
                importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a)
            )
            assert main([*argv, "--photos", str(setup["photos"])]) == 2
    finally:
        _clear_face_models()
    err = capsys.readouterr().err
    assert "install the `faces` extra (pip install 'stylegan2-distill[faces]'" in err
    assert len(err.strip().splitlines()) == 1
