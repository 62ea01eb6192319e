"""The entry's ``domain``: read from the filter report, its scorer copied in, checked by the schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import DistillError
from model_zoo.registry import load_entry
from model_zoo.schema import PROJECT_ROOT, parse_manifest
from training.export.domain import DOMAIN_SCORER, add_domain, domain_from_report
from training.onnx_scorer import OnnxScorer

ATTRIBUTES = PROJECT_ROOT / "model_zoo" / "toyfaces-attributes" / "attributes.onnx"
SHIPPED = PROJECT_ROOT / "model_zoo" / "toyfaces-age"


def report(tmp_path: Path, *scorers: dict) -> Path:
    path = tmp_path / "filter_report.json"
    path.write_text(json.dumps({"scorers": list(scorers)}))
    return path


def onnx(on: str = "both", **keep: list) -> dict:
    return {
        "type": "onnx",
        "path": str(ATTRIBUTES),
        "input_size": None,
        "mean": [0.5],
        "std": [0.5],
        "outputs": {"age": 0, "smile": 1, "quality": 9},
        "activation": "none",
        "on": on,
        "keep": keep,
    }


def test_the_ranges_on_the_originals_of_one_onnx_scorer(tmp_path):
    path = report(
        tmp_path,
        {"type": "face", "on": "both"},
        onnx("both", age=[0.2, None], quality=[0.5, None]),
        onnx("b", smile=[None, 0.9]),  # judges the edited images only: never the student's domain
    )
    scorer, domain = domain_from_report(path)
    assert scorer == ATTRIBUTES and domain.scorer == DOMAIN_SCORER and domain.input_size == (64, 64)
    assert domain.keep == {"age": (0.2, None), "quality": (0.5, None)}
    assert domain.outputs == {"age": 0, "quality": 9}
    _, only_age = domain_from_report(path, ["age"])
    assert only_age.keep == {"age": (0.2, None)} and only_age.outputs == {"age": 0}
    with pytest.raises(DistillError, match="--domain smile: .* no keep range of that name on the originals"):
        domain_from_report(path, ["smile"])
    assert domain_from_report(report(tmp_path, onnx("b", age=[0.2, None]))) is None


def test_ranges_of_two_scorers_must_be_chosen(tmp_path):
    path = report(tmp_path, onnx("a", age=[0.2, None]), onnx("both", quality=[0.5, None]))
    with pytest.raises(DistillError, match="keep ranges from 2 scorers; name those of one with --domain"):
        domain_from_report(path)
    assert domain_from_report(path, ["quality"])[1].keep == {"quality": (0.5, None)}


def test_a_missing_scorer_is_named(tmp_path):
    path = report(tmp_path, {**onnx(age=[0.2, None]), "path": "gone/attributes.onnx"})
    with pytest.raises(DistillError, match="its scorer gone/attributes.onnx is not found"):
        domain_from_report(path)


def test_add_domain_ships_the_scorer_checksummed(tmp_path):
    entry_dir = tmp_path / "toyfaces-age"
    shutil.copytree(SHIPPED, entry_dir, ignore=shutil.ignore_patterns("evaluation", "domain_scorer.onnx"))
    manifest = json.loads((entry_dir / "manifest.json").read_text())
    del manifest["domain"], manifest["files"][DOMAIN_SCORER]  # as exported before domains were recorded
    (entry_dir / "manifest.json").write_text(json.dumps(manifest))
    assert load_entry(entry_dir).spec.domain is None  # an old manifest loads: no domain, never checked

    entry = add_domain(entry_dir, report(tmp_path, onnx(age=[0.2, None], quality=[0.5, None])), ["age"])
    entry.verify()
    assert (entry_dir / DOMAIN_SCORER).read_bytes() == ATTRIBUTES.read_bytes()
    assert load_entry(entry_dir).spec.domain == entry.spec.domain
    assert entry.spec.domain.keep == {"age": (0.2, None)}


def test_the_shipped_entries_record_the_filters_age_range():
    for name in ("toyfaces-age", "toyfaces-age-strength", "toyfaces-multi"):
        domain = load_entry(PROJECT_ROOT / "model_zoo" / name).spec.domain
        assert domain is not None and domain.keep == {"age": (0.2, None)} and domain.outputs == {"age": 0}


def test_the_schema_refuses_an_inconsistent_domain():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    for change, message in (
        ({"keep": {"smile": [0.1, None]}}, "domain.keep names 'smile', which is not in domain.outputs"),
        ({"keep": {"age": [None, None]}}, "has no bound"),
        ({"keep": {"age": [0.5, 0.2]}}, "low is above high"),
        ({"std": [0.5, 0.5]}, "give one value or three"),
        ({"scorer": "other.onnx"}, "domain.scorer 'other.onnx' is not listed in 'files'"),
    ):
        bad = json.loads(json.dumps(manifest))
        bad["domain"].update(change)
        with pytest.raises(ValueError, match=message):
            parse_manifest(bad)


def test_the_service_scores_as_the_filter_did():
    """app.domain re-implements the filter's preprocessing (the serving install has no training package)."""
    from app.domain import DomainCheck

    entry = load_entry(SHIPPED)
    check = DomainCheck(entry.name, entry.spec.domain, entry.path, "warn")
    filter_scorer = OnnxScorer(ATTRIBUTES, {"age": 0}, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for size in (128, 64, 97)]
    for picture in pictures:
        assert check.scores([picture])[0]["age"] == pytest.approx(
            filter_scorer.score(picture[None])[0]["age"], abs=1e-6
        )


def test_a_verdict_names_the_range_missed_by_most():
    from app.domain import judge, worst

    keep = {"age": (0.2, None), "quality": (0.5, 0.9)}
    assert judge({"age": 0.2, "quality": 0.9}, keep).text() == "inside"  # bounds are inclusive
    low = judge({"age": 0.12, "quality": 0.95}, keep)
    assert low.text() == "outside; age 0.12 below 0.20" and not low.inside
    assert judge({"age": 0.19, "quality": 0.95}, keep).text() == "outside; quality 0.95 above 0.90"
    faces = [judge({"age": 0.5, "quality": 0.7}, keep), low, judge({"age": 0.18, "quality": 0.7}, keep)]
    assert worst(faces) is low and worst(faces[:1]).inside
