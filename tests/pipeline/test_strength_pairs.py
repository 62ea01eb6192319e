"""`distill pairs --alpha-range`: a strength per pair, deterministic per seed, recorded, resumable, sharded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import DistillError, FieldError
from distill.cli import main
from editing.directions import apply_direction, load_direction
from editing.images import load_image, to_uint8
from networks.stylegan2 import load_generator
from training.directions import z_from_seeds
from training.manifest import read_manifest, read_metadata
from training.pairs import generate_pairs, merge_datasets
from training.strength import StrengthRange, parse_range, strength_for_seed

RANGE = StrengthRange(-1.5, 1.5)


def gen(teacher, out, **kw):
    g, d = teacher
    args = {
        "alpha": 2.0,
        "truncation": 0.7,
        "num": 6,
        "batch_size": 4,
        "device": "cpu",
        "progress": False,
        "alpha_range": RANGE,
        **kw,
    }
    return generate_pairs(g, d, out, **args)


def test_parse_range_and_sampling():
    assert parse_range("-1.5:1.5") == RANGE
    for bad in ("1.5", "1:1", "2:-1", "a:b"):
        with pytest.raises(
            FieldError, match="^alpha_range "
        ):  # the field; distill pairs prints --alpha-range
            parse_range(bad)
    drawn = [strength_for_seed(s, RANGE) for s in range(400)]
    assert drawn == [strength_for_seed(s, RANGE) for s in range(400)]  # a pure function of the seed
    assert all(RANGE.contains(v) for v in drawn)
    assert min(drawn) < -1.2 and max(drawn) > 1.2 and abs(np.mean(drawn)) < 0.2  # spread over the range


def test_strength_recorded_and_applied(pair_teacher, tmp_path):
    out = tmp_path / "ds"
    gen(pair_teacher, out, num=5)
    meta = read_metadata(out)
    assert (
        meta["alpha"] == 2.0 and meta["alpha_range"] == [-1.5, 1.5] and "relative" in meta["strength_units"]
    )
    rows = read_manifest(out)
    for r in rows:
        assert r.strength == strength_for_seed(r.seed, RANGE)
        assert r.alpha == pytest.approx(2.0 * r.strength, abs=1e-5)
    # the edited image is the teacher at w + strength * alpha * d, pair by pair
    g, d = pair_teacher
    G = load_generator(g)
    direction = load_direction(d, G.num_ws, G.w_dim)
    for r in rows[:2]:
        with torch.no_grad():
            ws = G.mapping(z_from_seeds([r.seed], G.z_dim), truncation_psi=0.7)
            ref = to_uint8(G.synthesis(apply_direction(ws, direction, r.alpha), noise_mode="const"))[0]
        assert np.abs(load_image(out / r.b).astype(int) - ref.astype(int)).max() <= 1


def test_resume_and_shards_draw_the_same_strengths(pair_teacher, tmp_path):
    full = tmp_path / "full"
    gen(pair_teacher, full, num=6)
    part = tmp_path / "part"
    gen(pair_teacher, part, num=3)
    gen(pair_teacher, part, num=6)  # resumes: the first three stay, three are added
    assert [r.to_json() for r in read_manifest(part)] == [r.to_json() for r in read_manifest(full)]
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, s in enumerate(shards):
        gen(pair_teacher, s, shard=i, num_shards=2)
    merged = tmp_path / "merged"
    merge_datasets(merged, shards)
    assert [r.strength for r in read_manifest(merged)] == [r.strength for r in read_manifest(full)]


def test_fixed_and_range_datasets_do_not_mix(pair_teacher, tmp_path):
    out = tmp_path / "ds"
    gen(pair_teacher, out, num=2, alpha_range=None)
    assert all(r.strength is None for r in read_manifest(out))
    assert '"strength"' not in (out / "manifest.jsonl").read_text()  # fixed-strength rows are unchanged
    with pytest.raises(DistillError, match="alpha_range"):
        gen(pair_teacher, out, num=2)


def test_cli_alpha_range(pair_teacher, tmp_path, capsys):
    g, d = pair_teacher
    out = tmp_path / "cli"
    assert (
        main(
            [
                "pairs",
                "--generator",
                g,
                "--direction",
                d,
                "--alpha",
                "1",
                "--alpha-range=-1:1",
                "--num",
                "3",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    assert [r.strength for r in read_manifest(out)] == [
        strength_for_seed(s, StrengthRange(-1, 1)) for s in range(3)
    ]
    with pytest.raises(SystemExit):
        main(["pairs", "--generator", g, "--direction", d, "--alpha-range", "1", "--out", str(out)])
    assert "expected LO:HI" in capsys.readouterr().err


def test_filter_keeps_strengths_and_reports_them(brightness_onnx_scorer, tmp_path):
    from dataclasses import replace

    from tests.pipeline_helpers import make_dataset
    from training.filters import filter_dataset
    from training.manifest import write_manifest

    root = make_dataset(tmp_path / "ds", [10, 64, 128, 200, 250, 100], [64, 64, 240, 128, 250, 100])
    write_manifest(
        root,
        [replace(r, strength=s) for r, s in zip(read_manifest(root), (-1, -0.5, 0, 0.5, 1, 1), strict=True)],
    )
    report = filter_dataset(
        root,
        [
            {
                "type": "onnx",
                "path": brightness_onnx_scorer,
                "input_size": 8,
                "mean": [0],
                "std": [1],
                "outputs": {"bright": 0},
                "on": "both",
                "keep": {"bright": [0.2, 0.8]},
            }
        ],
        progress=False,
    )
    rows = read_manifest(root)
    assert [r.strength for r in rows] == [-1, -0.5, 0, 0.5, 1, 1]  # the filter keeps each pair's strength
    bins = report["strengths"]
    assert sum(b["pairs"] for b in bins) == 6 and sum(b["rejected"] for b in bins) == report["rejected"]
    assert "By edit strength" in (root / "filter_report.md").read_text()


@pytest.fixture(scope="module")
def brightness_onnx_scorer(tmp_path_factory) -> str:

    from tests.pipeline_helpers import Brightness, export_scorer

    path = tmp_path_factory.mktemp("onnx") / "brightness.onnx"
    export_scorer(Brightness(), path, 8)
    return str(path)
