"""`distill pairs --direction NAME=FILE ...`: several edits, a strength vector per pair drawn from its seed,
recorded, applied as w + sum_k s_k alpha_k d_k, resumable, sharded, filtered and reported per edit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.cli import main
from editing.directions import load_direction
from editing.images import load_image, to_uint8
from networks.stylegan2 import load_generator
from training.directions import z_from_seeds
from training.manifest import read_manifest, read_metadata
from training.pairs import PairEdit, generate_pairs, merge_datasets
from training.strength import ACTIVE_EDITS, StrengthRange, apply_strengths, edit_strengths_for_seed

RANGES = [StrengthRange(-1.0, 1.0), StrengthRange(0.5, 1.5), StrengthRange(-2.0, -1.0)]


@pytest.fixture(scope="module")
def edits(pair_teacher, tmp_path_factory) -> list[PairEdit]:
    root = tmp_path_factory.mktemp("directions")
    out = []
    for k, (name, r) in enumerate(zip(("age", "smile", "glasses"), RANGES, strict=True)):
        np.save(root / f"{name}.npy", np.random.default_rng(10 + k).standard_normal(32).astype(np.float32))
        out.append(PairEdit(name, root / f"{name}.npy", alpha=1.0 + k, range=r))
    return out


def gen(pair_teacher, edits, out, **kw):
    args = {"truncation": 0.7, "num": 8, "batch_size": 3, "device": "cpu", "progress": False, **kw}
    return generate_pairs(pair_teacher[0], None, out, edits=edits, **args)


def test_the_strength_vector_is_a_function_of_the_seed_with_mostly_one_or_two_edits():
    drawn = [edit_strengths_for_seed(s, RANGES) for s in range(3000)]
    assert drawn == [edit_strengths_for_seed(s, RANGES) for s in range(3000)]
    active = np.array([sum(v != 0 for v in d) for d in drawn])
    for count, chance in enumerate(ACTIVE_EDITS):
        assert abs(np.mean(active == count) - chance) < 0.03
    for k, r in enumerate(RANGES):
        values = [d[k] for d in drawn if d[k] != 0]
        assert all(r.contains(v) for v in values) and abs(len(values) / 3000 - (0.5 + 2 * 0.4) / 3) < 0.03
    assert {sum(v != 0 for v in edit_strengths_for_seed(s, RANGES[:1])) for s in range(200)} == {0, 1}


def test_edits_are_recorded_and_applied(pair_teacher, edits, tmp_path):
    out = tmp_path / "ds"
    gen(pair_teacher, edits, out)
    meta = read_metadata(out)
    assert [(e["name"], e["alpha"], e["range"], e["layers"]) for e in meta["edits"]] == [
        ("age", 1.0, [-1.0, 1.0], [0, 6]),
        ("smile", 2.0, [0.5, 1.5], [0, 6]),
        ("glasses", 3.0, [-2.0, -1.0], [0, 6]),
    ]
    assert "direction" not in meta and "alpha" not in meta and "sum_k" in meta["strength_units"]
    rows = read_manifest(out)
    for r in rows:
        assert list(r.edits) == ["age", "smile", "glasses"] and r.alpha is None and r.direction is None
        assert list(r.edits.values()) == edit_strengths_for_seed(r.seed, RANGES)
    assert '"edits": {"age"' in (out / "manifest.jsonl").read_text()
    # train_B is the teacher at w + sum_k s_k alpha_k d_k
    G = load_generator(pair_teacher[0])
    for r in rows[:3]:
        with torch.no_grad():
            ws = G.mapping(z_from_seeds([r.seed], G.z_dim), truncation_psi=0.7)
            edited = ws.clone()
            for e in edits:
                d = load_direction(e.direction, G.num_ws, G.w_dim)
                edited += (
                    e.alpha * r.edits[e.name] * (apply_strengths(ws, d, 1.0, torch.ones(1), (0, 8)) - ws)
                )
            ref = to_uint8(G.synthesis(edited, noise_mode="const"))[0]
        assert np.abs(load_image(out / r.b).astype(int) - ref.astype(int)).max() <= 1


def test_resume_and_shards_give_the_same_dataset(pair_teacher, edits, tmp_path):
    full = tmp_path / "full"
    gen(pair_teacher, edits, full)
    part = tmp_path / "part"
    gen(pair_teacher, edits, part, num=4)
    gen(pair_teacher, edits, part)
    assert [r.to_json() for r in read_manifest(part)] == [r.to_json() for r in read_manifest(full)]
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, s in enumerate(shards):
        gen(pair_teacher, edits, s, shard=i, num_shards=2)
    merge_datasets(tmp_path / "merged", shards)
    assert [r.edits for r in read_manifest(tmp_path / "merged")] == [r.edits for r in read_manifest(full)]
    with pytest.raises(Exception, match="edits"):  # other ranges: another dataset
        gen(pair_teacher, [edits[0], PairEdit("smile", edits[1].direction, 2.0)], full)


def test_cli_named_directions(pair_teacher, edits, tmp_path, capsys):
    g = pair_teacher[0]
    age, smile = str(edits[0].direction), str(edits[1].direction)
    (edits[1].direction.with_suffix(".json")).write_text(json.dumps({"suggested_alpha": 0.75}))
    out = tmp_path / "cli"
    base = ["pairs", "--generator", g, "--num", "4", "--device", "cpu", "--out", str(out)]
    argv = [*base, "--direction", f"age={age}", "--direction", f"smile={smile}", "--alpha", "age=2"]
    assert main([*argv, "--alpha-range", "smile=0:1"]) == 0
    capsys.readouterr()
    assert [(e["name"], e["alpha"], e["range"]) for e in read_metadata(out)["edits"]] == [
        ("age", 2.0, [-1.0, 1.0]),  # the default range
        ("smile", 0.75, [0.0, 1.0]),  # the sidecar's suggested alpha
    ]
    for bad, flag, says in [
        (["--direction", f"age={age}", "--direction", smile], "--direction", "name the edit too"),
        (["--direction", age, "--direction", smile], "--direction", "must be named"),
        (["--direction", f"age={age}", "--alpha", "smile=1"], "--alpha", "no --direction smile=FILE"),
        (["--direction", age, "--alpha-range", "age=0:1"], "--alpha-range", "not named"),
        (
            ["--direction", f"age={age}", "--alpha", "age=2", "--direction", f"glasses={edits[2].direction}"],
            "--alpha",
            "glasses=A",
        ),
    ]:
        assert main([*base[:-2], "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert f"error: {flag} " in err, err
        assert says in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_filter_reports_kept_and_rejected_per_active_edit(pair_teacher, edits, tmp_path):
    from tests.pipeline_helpers import Brightness, export_scorer
    from training.filters import filter_dataset

    out = tmp_path / "ds"
    gen(pair_teacher, edits, out, num=12)
    scorer = tmp_path / "bright.onnx"
    export_scorer(Brightness(), scorer, 16)
    rows = read_manifest(out)
    spec = {"type": "onnx", "path": str(scorer), "input_size": 16, "mean": [0], "std": [1]}
    spec |= {"outputs": {"bright": 0}, "on": "b", "keep": {"bright": [0.45, 1.0]}}
    report = filter_dataset(out, [spec], progress=False)
    filtered = read_manifest(out)
    assert [r.edits for r in filtered] == [r.edits for r in rows]  # the filter keeps each pair's edits
    by_edit = {e["edit"]: e for e in report["edits"]}
    assert list(by_edit) == ["age", "smile", "glasses", None]
    for name in ("age", "smile", "glasses", None):
        inside = [r for r in filtered if (name in r.active_edits() if name else not r.active_edits())]
        assert by_edit[name]["pairs"] == len(inside)
        assert by_edit[name]["rejected"] == sum(r.keep is False for r in inside)
    assert 0 < report["rejected"] < 12
    assert "By active edit" in (out / "filter_report.md").read_text()
