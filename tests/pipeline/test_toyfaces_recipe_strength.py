"""The recipe's strength-dial setting on its tiny size: pairs over a range, a conditional student,
an entry with its trained range and an evaluation with a row per strength."""

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
