"""The multi-edit evaluation's conditions and targets (training/evaluate/edits.py), on made-up judgements."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import FieldError
from model_zoo.schema import EditSpec
from training.evaluate.edits import TARGETS, check_scoring, edit_conditions, targets

EDITS = [
    EditSpec(attribute="age", range=(-1.0, 1.0), default=0.0),
    EditSpec(attribute="smile", range=(0.0, 2.0), default=0.0),
]


def test_conditions_hold_zeros_each_edit_alone_and_each_pair():
    conditions = edit_conditions(EDITS)
    assert [c.label for c in conditions] == [
        "zeros",
        "age=-1",
        "age=-0.5",
        "age=+0.5",
        "age=+1",
        "smile=+1",
        "smile=+2",
        "age=+1,smile=+2",
    ]
    assert conditions[-1].kind == "pair" and conditions[-1].active == (0, 1)
    assert conditions[-1].vector.tolist() == [1.0, 2.0] and not conditions[0].vector.any()


def _judged(per_condition: dict[str, dict[str, float]], n: int = 3) -> tuple[list, dict]:
    """Rows and per-image scores as `measure` makes them, the student's mean changes given per condition."""
    conditions = edit_conditions(EDITS)
    base = {"age": np.full(n, 0.4), "smile": np.full(n, 0.3), "glasses": np.full(n, 0.1)}
    rows, judged = [], {"input": base}
    for c in conditions:
        change = {a: per_condition.get(c.label, {}).get(a, 0.0) for a in base}
        judged[f"{c.label}/student_fp32"] = {a: base[a] + change[a] for a in base}
        psnr = 126.0 if c.kind == "zeros" else 30.0
        rows.append(
            {
                "condition": c.label,
                "change": {"student_fp32": change},
                "psnr": {"student_fp32": {"min": psnr}},
            }
        )
    return rows, judged


GOOD = {
    "age=-1": {"age": -0.2},
    "age=-0.5": {"age": -0.1, "glasses": 0.02},
    "age=+0.5": {"age": 0.1},
    "age=+1": {"age": 0.2, "smile": -0.05},
    "smile=+1": {"smile": 0.1},
    "smile=+2": {"smile": 0.2},
    "age=+1,smile=+2": {"age": 0.18, "smile": 0.15},
}


def test_targets_met_by_a_clean_monotonic_edit():
    rows, judged = _judged(GOOD)
    res = targets(rows, edit_conditions(EDITS), EDITS, judged, "student_fp32")
    age = res["edits"]["age"]
    assert age["strengths"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and age["rise"] == pytest.approx(0.4)
    assert age["monotonic_mean"] and age["monotonic_faces"] == 1.0
    assert age["max_leak"] == pytest.approx(0.05) and age["max_leak_attribute"] == "smile"
    assert res["together"]["age=+1,smile=+2"]["ratio_to_alone"] == pytest.approx({"age": 0.9, "smile": 0.75})
    assert res["zeros_psnr_min_db"] == 126.0 and res["met"]


@pytest.mark.parametrize(
    "change, broken",
    [
        ({"age=+1": {"age": 0.2, "glasses": TARGETS["leak"] + 0.01}}, "leak"),
        ({"age=+0.5": {"age": 0.25}}, "monotonic"),  # rises past +1's level, then falls back
        (
            {
                "age=-1": {"age": -0.05},
                "age=-0.5": {"age": -0.02},
                "age=+0.5": {"age": 0.02},
                "age=+1": {"age": 0.05},
            },
            "rise",
        ),
        ({"age=+1,smile=+2": {"age": 0.1, "smile": 0.15}}, "together"),
    ],
)
def test_targets_fail_on_leak_a_fall_a_small_rise_or_a_weak_pair(change, broken):
    rows, judged = _judged({**GOOD, **change})
    res = targets(rows, edit_conditions(EDITS), EDITS, judged, "student_fp32")
    assert not res["met"]
    if broken == "together":
        assert not res["together"]["age=+1,smile=+2"]["met"] and res["edits"]["age"]["met"]
    else:
        assert not res["edits"]["age"]["met"] and res["edits"]["smile"]["met"]


def test_a_scorer_must_read_every_edit():
    with pytest.raises(FieldError, match="smile"):
        check_scoring(None, EDITS)
