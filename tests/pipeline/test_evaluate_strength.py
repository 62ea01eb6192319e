"""`distill evaluate` on a tiny strength-conditioned entry: a row per strength, the identity at 0."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.cli import main
from editing.images import load_image
from training.evaluate.strength import monotonic_fraction


def test_strength_section(conditional_entry, strength_pairs, tmp_path):
    from tests.pipeline_helpers import scorer_onnx

    scorer = tmp_path / "scorer.onnx"
    scorer_onnx(scorer)  # mean brightness and red minus green of a 16 px image
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                str(conditional_entry),
                "--out",
                str(out),
                "--num",
                "4",
                "--legacy-num",
                "0",
                "--timing-num",
                "2",
                "--dataset",
                str(strength_pairs),
                "--scorer",
                str(scorer),
                "--attribute",
                "brightness=0",
                "--strength-num",
                "3",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    section = report["strengths"]
    assert section["trained_range"] == [-1.5, 1.5]
    assert [r["strength"] for r in section["rows"]] == [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    zero = next(r for r in section["rows"] if r["strength"] == 0.0)
    for variant in ("fp32", "int8"):
        assert (
            zero["students"][variant]["identity_error"]["max_abs_uint8"] <= 1
        )  # strength 0 gives back the input
    assert zero["students"]["fp32"]["change"] == 0.0 and zero["students"]["fp32"]["change_per_unit"] is None
    one = next(r for r in section["rows"] if r["strength"] == 1.0)
    assert one["alpha"] == 1.0 and isinstance(one["students"]["fp32"]["change_per_unit"], float)
    assert set(section["monotonic"]) == {"fp32", "int8", "teacher"}
    fractions = section["monotonic_per_face"]["fraction"]
    assert set(fractions) == {"fp32", "int8", "teacher"} and all(0 <= f <= 1 for f in fractions.values())
    assert load_image(out / "strengths.png").shape[0] >= 7 * 16  # one row per strength
    md = (out / "report.md").read_text()
    assert "## Strengths" in md and "| +0.50 |" in md and "Strength 0, fp32" in md
    for row in section["rows"]:  # artifact figures against the teacher's edit at every strength
        art = row["artifacts"]
        assert art["n"] == 3 and set(art["paths"]) == {"teacher", "identity", "student_fp32", "student_int8"}
        assert art["paths"]["teacher"]["hf_energy"] > 0 and art["paths"]["student_fp32"]["blemish_peak"] >= 0
    assert (
        zero["artifacts"]["paths"]["teacher"]["hf_energy_region"] is None
    )  # strength 0 edits nothing: no region
    assert "HF / blemish" in md


def test_monotonic_fraction_counts_faces_whose_judgement_never_falls():
    judged = np.array([[0.1, 0.5, 0.3], [0.2, 0.495, 0.2], [0.3, 0.6, 0.4]])  # strengths x faces
    assert monotonic_fraction(judged) == pytest.approx(2 / 3)  # face 2 falls by 0.1; face 1 by 0.005 only
    assert monotonic_fraction(judged, tolerance=0.2) == 1.0
