"""The recipe's strength-dial and multi-edit settings on their tiny size: pairs over a range (of each edit), a
conditional student, an entry with its trained range(s) and an evaluation per strength (and per edit)."""

from __future__ import annotations

import json

import pytest

from distill.cli import main
from model_zoo.registry import get_entry
from training.manifest import read_manifest
from training.toyfaces.attributes import default_path
from training.toyfaces.recipe import SETTINGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_settings_share_the_teacher_but_not_the_pairs():
    full, dial = SETTINGS["full"], SETTINGS["full-strength"]
    assert dial.alpha_range == "-1.5:1.5" and dial.name == "toyfaces-age-strength" != full.name
    assert dial.student_options[-2:] == ("--condition", "modulation") and "--residual" in dial.student_options
    assert (dial.teacher_steps, dial.alpha, dial.layers) == (full.teacher_steps, full.alpha, full.layers)


def test_tiny_strength_recipe(tmp_path):
    out = tmp_path / "recipe"
    assert (
        main(
            [
                "toyfaces",
                "recipe",
                "--setting",
                "tiny-strength",
                "--out",
                str(out),
                "--zoo",
                str(out / "zoo"),
                "--attribute-model",
                str(default_path()),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    strengths = [r.strength for r in read_manifest(out / "pairs-strength")]
    assert all(s is not None and -1.5 <= s <= 1.5 for s in strengths) and len(set(strengths)) > 1
    entry = get_entry("toyfaces-age-strength-tiny", root=out / "zoo")
    assert entry.spec.strength is not None and entry.spec.strength.range == (-1.5, 1.5)
    assert entry.spec.training.config["condition"] == "modulation"
    report = json.loads((entry.path / "evaluation" / "report.json").read_text())
    assert [r["strength"] for r in report["strengths"]["rows"]] == [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    assert report["strengths"]["attribute"] == "age"


def test_tiny_multi_recipe(tmp_path):
    """Directions fitted together, pairs with a strength vector, a student of both edits warm-started from nothing,
    and an evaluation of each edit alone and of the pair, on the teacher's seeds and on clean renders."""
    out = tmp_path / "recipe"
    argv = ["toyfaces", "recipe", "--setting", "tiny-multi", "--out", str(out), "--zoo", str(out / "zoo")]
    assert main([*argv, "--attribute-model", str(default_path()), "--threads", "1"]) == 0
    log = json.loads((out / "recipe.json").read_text())
    assert [r["stage"] for r in log["stages"]] == [
        "teacher",
        "direction",
        "pairs",
        "filter",
        "student",
        "export",
        "evaluate",
    ]
    assert log["stages"][1]["call"] == "training.directions.run_fit_set"
    assert {
        r.edits is not None and set(r.edits) == {"age", "smile"} for r in read_manifest(out / "pairs-multi")
    } == {True}
    entry = get_entry("toyfaces-multi-tiny", root=out / "zoo")
    assert [(e.attribute, e.range) for e in entry.spec.edits] == [
        ("age", (-1.0, 1.0)),
        ("smile", (-1.0, 1.0)),
    ]
    assert (entry.path / "directions_leak.md").is_file() and entry.spec.domain is not None
    report = json.loads((entry.path / "evaluation" / "report.json").read_text())
    edits = report["edits"]
    assert (
        edits["judged_on"] == "clean_renders"
        and edits["clean_renders"]["n"] == SETTINGS["tiny-multi"].clean_renders
    )
    labels = [r["condition"] for r in edits["clean_renders"]["rows"]]
    assert labels[0] == "zeros" and "age=+1,smile=+1" in labels and len(labels) == 10
    assert set(edits["results"]) == {"truth", "student_fp32", "student_int8"}
    assert edits["results"]["student_fp32"]["zeros_psnr_min_db"] > 100  # all zeros gives back the input
    assert (entry.path / "evaluation" / "edits_grid.png").is_file()
    assert "| student_fp32 | age |" in (entry.path / "evaluation" / "report.md").read_text()
