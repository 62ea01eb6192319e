"""`distill filter`: exact keep/reject decisions with a tiny ONNX model, the Haar face path, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import DistillError
from distill.cli import main
from editing.images import load_image, save_image
from tests.pipeline_helpers import Brightness, export_scorer, make_dataset
from training.filters import filter_dataset
from training.manifest import kept, read_manifest
from training.onnx_scorer import OnnxScorer
from training.scoring import KeepRule, parse_keep

LEVELS_A = [0, 64, 128, 192, 255]  # brightness 0, .25, .5, .75, 1
LEVELS_B = [64, 64, 255, 192, 255]


@pytest.fixture(scope="module")
def brightness_onnx(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("onnx") / "brightness.onnx"
    export_scorer(Brightness(), path, 8)
    return str(path)


def test_parse_keep_and_rule():
    assert parse_keep("age=18:65") == KeepRule("age", 18.0, 65.0)
    assert parse_keep("age=18:") == KeepRule("age", 18.0, None)
    rule = parse_keep("age=:65")
    assert rule.check({"age": 65.0}) is None and rule.check({"age": 65.5}) == "age > 65"
    assert parse_keep("age=18:65").check({"age": 17.0}) == "age < 18"
    for bad in ("age", "age=18", "age=a:b", "age=65:18", "=1:2"):
        with pytest.raises(DistillError):
            parse_keep(bad)


def test_onnx_scorer_preprocessing(brightness_onnx):
    scorer = OnnxScorer(
        brightness_onnx, outputs={"bright": 0, "red": 1}, input_size=8, mean=(0.0,), std=(1.0,)
    )
    images = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 51, 255)])
    images[2, ..., 0] = 0  # no red in the third image
    scores = scorer.score(images)
    assert [round(s["bright"], 6) for s in scores] == [0.0, 0.2, round(2 / 3, 6)]
    assert [round(s["red"], 6) for s in scores] == [-1.0, -0.8, -1.0]
    # mean/std normalisation: (x - 0.5) / 0.5 maps [0, 1] to [-1, 1]
    centred = OnnxScorer(brightness_onnx, outputs={"bright": 0}, input_size=8, mean=(0.5,), std=(0.5,))
    assert [round(s["bright"], 6) for s in centred.score(images[:2])] == [-1.0, -0.6]
    with pytest.raises(DistillError, match="out of range"):
        OnnxScorer(brightness_onnx, outputs={"x": 5}, input_size=8).score(images)
    assert OnnxScorer(brightness_onnx, outputs={"x": 0}).input_size == (8, 8)  # read from the model
    with pytest.raises(DistillError, match="model input is 8x8, not the given 16x16"):
        OnnxScorer(brightness_onnx, outputs={"x": 0}, input_size=16)


def test_filter_keep_reject_with_onnx(brightness_onnx, tmp_path):
    root = make_dataset(tmp_path / "ds", LEVELS_A, LEVELS_B)
    rc = main(
        [
            "filter",
            str(root),
            "--scorer",
            brightness_onnx,
            "--input-size",
            "8",
            "--mean",
            "0",
            "--std",
            "1",
            "--attribute",
            "bright=0",
            "--keep",
            "bright=0.2:0.8",
            "--on",
            "both",
        ]
    )
    assert rc == 0
    rows = read_manifest(root)
    assert [r.keep for r in rows] == [False, True, False, True, False]
    assert [r.reason for r in rows] == ["bright < 0.2 (A)", None, "bright > 0.8 (B)", None, "bright > 0.8"]
    assert rows[1].scores == {"a.bright": pytest.approx(64 / 255), "b.bright": pytest.approx(64 / 255)}
    assert [r.seed for r in kept(rows)] == [11, 13]
    report = json.loads((root / "filter_report.json").read_text())
    assert (report["total"], report["kept"], report["rejected"]) == (5, 2, 3)
    assert report["rejection_rate"] == pytest.approx(0.6)
    assert report["reasons"] == {"bright < 0.2 (A)": 1, "bright > 0.8": 1, "bright > 0.8 (B)": 1}
    assert report["scores"]["a.bright"]["max"] == pytest.approx(1.0)
    md = (root / "filter_report.md").read_text()
    assert "rejected: 3 (60.0%)" in md and "| bright > 0.8 (B) | 1 |" in md
    assert load_image(root / "filter_histogram.png").shape[0] >= 2 * 150
    assert load_image(root / "filter_rejected.png").shape[1] == 3 * (2 * 96 + 8)  # three rejected pairs
    # Nothing was deleted.
    assert len(list((root / "train_A").iterdir())) == 5 and len(list((root / "train_B").iterdir())) == 5

    # Re-running replaces the earlier results: only the originals, a looser range.
    report = filter_dataset(
        root,
        [
            {
                "type": "onnx",
                "path": brightness_onnx,
                "input_size": 8,
                "mean": [0],
                "std": [1],
                "outputs": {"bright": 0},
                "on": "a",
                "keep": {"bright": [0.1, 1.0]},
            }
        ],
        progress=False,
    )
    rows = read_manifest(root)
    assert [r.keep for r in rows] == [False, True, True, True, True]
    assert rows[0].reason == "bright < 0.1" and set(rows[0].scores) == {"a.bright"}
    assert report["reasons"] == {"bright < 0.1": 1}
    before = (root / "manifest.jsonl").read_bytes()
    filter_dataset(root, report["scorers"], progress=False)
    assert (root / "manifest.jsonl").read_bytes() == before


def test_a_keep_range_that_rejects_most_pairs_says_so(brightness_onnx, tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", LEVELS_A, LEVELS_B)
    argv = [
        "filter",
        str(root),
        "--scorer",
        brightness_onnx,
        "--input-size",
        "8",
        "--mean",
        "0",
        "--std",
        "1",
    ]
    assert main([*argv, "--attribute", "age=0", "--keep", "age=18:65"]) == 0  # years against a 0-1 score
    err = capsys.readouterr().err
    assert "warning: the keep ranges age=18:65 reject 100% of the pairs" in err
    assert "a.age 0 to 1" in err and "b.age" in err
    assert "warning" in (root / "filter_report.md").read_text()
    assert main([*argv, "--attribute", "age=0", "--keep", "age=0:1"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_face_detector_rejects_faceless_images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    make_dataset(root, [0, 0, 0], [0, 0, 0], size=64)
    for r in read_manifest(root):  # noise and flat images: no face
        save_image(root / r.a, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    rc = main(["filter", str(root), "--face-detector", "--on", "both"])
    assert rc == 0
    rows = read_manifest(root)
    assert all(r.keep is False and r.reason == "no face" for r in rows)
    assert rows[0].scores["a.face_count"] == 0.0 and rows[0].scores["b.face_count"] == 0.0
    assert json.loads((root / "filter_report.json").read_text())["reasons"] == {"no face": 3}


def test_face_detector_on_teacher_pairs(tmp_path):
    """The tiny random teacher's 16 px outputs through `distill pairs` then `distill filter`."""
    from networks.stylegan2 import Generator, save_generator
    from training.pairs import generate_pairs

    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8})
    save_generator(G, tmp_path / "g.pt")
    np.save(tmp_path / "d.npy", np.ones(32, np.float32))
    generate_pairs(
        tmp_path / "g.pt", tmp_path / "d.npy", tmp_path / "ds", num=3, device="cpu", progress=False
    )
    report = filter_dataset(tmp_path / "ds", [{"type": "face", "on": "a"}], progress=False)
    assert report["reasons"] == {"no face": 3} and report["kept"] == 0


def test_filter_refuses_bad_input(brightness_onnx, tmp_path):
    root = make_dataset(tmp_path / "ds", [0], [0])
    with pytest.raises(DistillError, match="no scorer"):
        filter_dataset(root, [], progress=False)
    with pytest.raises(DistillError, match="unknown type"):
        filter_dataset(root, [{"type": "magic"}], progress=False)
    with pytest.raises(DistillError, match="keep rule 'age'"):
        filter_dataset(
            root,
            [
                {
                    "type": "onnx",
                    "path": brightness_onnx,
                    "input_size": 8,
                    "outputs": {"b": 0},
                    "keep": {"age": [1, 2]},
                }
            ],
            progress=False,
        )
    (root / "pending").mkdir()
    (root / "pending" / "00000000-00000001.npz").write_bytes(b"")
    with pytest.raises(DistillError, match="unfinished batches"):
        filter_dataset(root, [{"type": "face"}], progress=False)
    assert main(["filter", str(tmp_path / "missing"), "--face-detector"]) == 2
    assert main(["filter", str(root), "--scorer", brightness_onnx, "--keep", "age=1:2"]) == 2


def test_face_detector_keeps_faces(tmp_path):
    """Haar finds some of the toy renderer's cartoon faces: those pairs are kept, the rest say "no face"."""
    from training.toyfaces.renderer import render_seed

    root = make_dataset(tmp_path / "ds", [0] * 8, [0] * 8, size=128)
    for i, r in enumerate(read_manifest(root)):
        save_image(root / r.a, render_seed(i, 128)[0])
    report = filter_dataset(root, [{"type": "face", "on": "a", "min_neighbors": 3}], progress=False)
    rows = read_manifest(root)
    assert report["kept"] >= 1
    for r in rows:
        assert r.keep == (r.scores["a.face_count"] >= 1)
        assert r.reason == (None if r.keep else "no face")
        assert (r.scores["a.face_size"] > 0) == r.keep


def test_filter_spec_file_with_several_scorers(brightness_onnx, tmp_path):
    root = make_dataset(tmp_path / "ds", LEVELS_A, LEVELS_B, size=32)
    spec = tmp_path / "filters.json"
    spec.write_text(
        json.dumps(
            {
                "scorers": [
                    {
                        "type": "onnx",
                        "path": brightness_onnx,
                        "input_size": 8,
                        "mean": [0],
                        "std": [1],
                        "on": "b",
                        "outputs": {"bright": 0},
                        "activation": "sigmoid",
                        "keep": {"bright": [None, 0.7]},
                    },
                    {"type": "face", "on": "a"},
                ]
            }
        )
    )
    assert main(["filter", str(root), "--spec", str(spec)]) == 0
    rows = read_manifest(root)
    sig = 1 / (1 + np.exp(-np.asarray(LEVELS_B) / 255))
    assert [r.scores["b.bright"] for r in rows] == pytest.approx(sig.tolist())
    assert all("a.face_count" in r.scores and "a.bright" not in r.scores for r in rows)
    # sigmoid(1.0) = 0.731 > 0.7 for the two all-white edited images; every flat original has no face.
    assert [r.reason for r in rows] == [
        "no face",
        "no face",
        "bright > 0.7; no face",
        "no face",
        "bright > 0.7; no face",
    ]
    report = json.loads((root / "filter_report.json").read_text())
    assert report["reasons"] == {"no face": 5, "bright > 0.7": 2}
