"""The entry schema: committed manifests load through it, unversioned ones migrate, the docs match the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from model_zoo.registry import default_root, list_entries, validate_manifest
from model_zoo.schema import (
    PROJECT_ROOT,
    SCHEMA_VERSION,
    EditSpec,
    EntryManifest,
    json_schema_text,
    migrate,
    parse_manifest,
    provenance,
)

SHA = "0" * 64


def _v0(**changes) -> dict:
    manifest = {
        "name": "m",
        "edit": {"attribute": "age", "alpha": 1.0, "layers": [0, 8]},
        "input": {"size": [64, 64], "stride": 8},
        "variants": {"fp32": {"file": "model.onnx"}},
        "teacher": {"file": "teacher.pt", "source": str(PROJECT_ROOT / "runs" / "t" / "teacher.pt")},
        "direction": {
            "file": "direction.npy",
            "alpha": 2.5,
            "layers": [0, 12],
            "normalize": True,
            "source": "/elsewhere/age.npy",
        },
        "data": {"dataset": "/elsewhere/pairs"},
        "training": {"checkpoint": str(PROJECT_ROOT / "runs" / "s" / "checkpoints" / "latest.pt")},
        "files": {f: {"sha256": SHA, "bytes": 1} for f in ("model.onnx", "teacher.pt", "direction.npy")},
    }
    manifest.update(changes)
    return manifest


def _strings(value) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_committed_entries_load_with_no_build_paths():
    entries = list_entries(default_root())
    assert entries, "the shipped model zoo has entries"
    for entry in entries:
        m = entry.spec
        assert m.schema_version == SCHEMA_VERSION
        sources = [
            m.teacher and m.teacher.source,
            m.direction and m.direction.source,
            m.data.dataset,
            m.training and m.training.checkpoint,
        ]
        assert not [s for s in sources if s and Path(s).is_absolute()]
        sidecar = entry.path / "direction.json"
        if sidecar.is_file():
            assert not [v for v in _strings(json.loads(sidecar.read_text())) if Path(v).is_absolute()], (
                sidecar
            )
        if m.direction is not None:
            assert m.edit.alpha is not None and m.edit.layers is not None


def test_migration_moves_the_edit_and_drops_build_paths():
    m = parse_manifest(_v0())
    assert m.edit.alpha == 2.5 and m.edit.layers == (
        0,
        12,
    )  # the direction's figures, as the legacy path used
    assert m.direction.normalize is True and not {"alpha", "layers"} & set(m.direction.model_extra)
    assert m.teacher.source == "runs/t/teacher.pt"  # inside the project: relative to it
    assert m.direction.source == "age.npy" and m.data.dataset == "pairs"  # outside: the bare name
    assert m.training.checkpoint == "runs/s/checkpoints/latest.pt"
    assert migrate(m.to_json()) == m.to_json()  # a current manifest is left as it is
    assert provenance("rel/path.pt") == "rel/path.pt"


def test_a_direction_needs_the_edit_strength_and_layers():
    manifest = _v0(edit={"attribute": "age"})
    del manifest["direction"]["alpha"]
    with pytest.raises(ValueError, match="edit.alpha or edit.layers is missing"):
        validate_manifest(manifest)
    current = parse_manifest(_v0()).to_json()
    current["direction"]["alpha"] = 3.0  # a current manifest says the edit once, in 'edit'
    with pytest.raises(ValueError, match="belong in 'edit'"):
        validate_manifest(current)


@pytest.mark.parametrize(
    ("record", "key"), [("teacher", "source"), ("data", "dataset"), ("training", "checkpoint")]
)
def test_current_manifests_refuse_absolute_paths(record, key):
    current = parse_manifest(_v0()).to_json()
    current[record][key] = "/work/build/thing"
    with pytest.raises(ValueError, match="absolute build path"):
        validate_manifest(current)


def test_engines_round_trip_and_unknown_fields_survive():
    timing = {
        "engine": "openvino",
        "variant": "int8",
        "precision": "int8",
        "median_ms": 3.2,
        "psnr_vs_fp32_db": None,
        "timed_size": [64, 64],
        "measured_on": "test cpu",
    }
    m = parse_manifest(_v0(engines=[timing], future_field={"x": 1}))
    assert m.engines[0].timed_size == (64, 64) and m.to_json()["future_field"] == {"x": 1}
    assert EntryManifest.model_validate(m.to_json()) == m
    with pytest.raises(ValueError, match="schema_version"):
        validate_manifest({**m.to_json(), "schema_version": 99})


def test_the_documented_json_schema_matches_the_model(capsys):
    doc = PROJECT_ROOT / "docs" / "model_zoo_entry.schema.json"
    assert doc.read_text() == json_schema_text(), (
        "regenerate: distill models schema --out docs/model_zoo_entry.schema.json"
    )
    assert main(["models", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["schema_version"]["const"] == SCHEMA_VERSION


@pytest.mark.parametrize("version", [True, False, 1.0, "1"])
def test_schema_version_is_the_integer_itself(version):
    current = parse_manifest(_v0()).to_json()
    with pytest.raises(ValueError, match="schema_version"):
        parse_manifest({**current, "schema_version": version})


def test_a_dataset_outside_the_project_is_recorded_relative_to_the_entry(tmp_path):
    from model_zoo.schema import PROJECT_ROOT, dataset_provenance

    assert dataset_provenance(tmp_path / "data" / "age", tmp_path / "model_zoo" / "age") == "../../data/age"
    assert dataset_provenance(PROJECT_ROOT / "runs" / "data", tmp_path / "zoo" / "x") == "runs/data"


def test_a_one_edit_entry_lists_its_edit_derived_and_unwritten():
    m = parse_manifest(_v0())
    assert m.edits == [EditSpec(attribute="age", direction="direction.npy", alpha=2.5, layers=(0, 12))]
    assert m.edits[0].range is None and m.edits[0].default == 1.0  # one fixed strength
    assert "edits" not in m.to_json()  # said once, in 'edit'
    dial = parse_manifest(_v0(strength={"range": [-1.5, 1.5], "default": 0.5}))
    assert dial.edits[0].range == (-1.5, 1.5) and dial.edits[0].default == 0.5
    bare = _v0(edit={}, files={"model.onnx": {"sha256": SHA, "bytes": 1}})
    del bare["teacher"], bare["direction"]
    assert parse_manifest(bare).edits == []  # says nothing of an edit
    for entry in list_entries(default_root()):
        if entry.spec.direction is None:  # a student of several edits writes its edits (toyfaces-multi)
            assert len(entry.spec.edits) > 1 and "edits" in json.loads(
                (entry.path / "manifest.json").read_text()
            )
            continue
        assert [(e.attribute, e.alpha, e.layers) for e in entry.spec.edits] == [
            (entry.spec.edit.attribute, entry.spec.edit.alpha, entry.spec.edit.layers)
        ]


def test_written_edits_are_kept_and_checked():
    edits = [
        {"attribute": "age", "direction": "age.npy", "alpha": 3.0, "layers": [0, 12], "range": [0, 1.5]},
        {"attribute": "smile", "direction": "smile.npy", "alpha": 2.0, "layers": [0, 8], "range": [-1, 1]},
    ]
    files = {f: {"sha256": SHA, "bytes": 1} for f in ("model.onnx", "age.npy", "smile.npy")}
    current = {**parse_manifest(_v0()).to_json(), "edits": edits}
    del current["teacher"], current["direction"]
    m = parse_manifest({**current, "edit": {}, "files": files})
    assert [e.attribute for e in m.edits] == ["age", "smile"] and m.edits[1].range == (-1.0, 1.0)
    assert m.to_json()["edits"][0]["direction"] == "age.npy"
    assert EntryManifest.model_validate(m.to_json()) == m
    with pytest.raises(ValueError, match=r"edits\[1\].direction 'smile.npy' is not listed"):
        parse_manifest({**current, "edit": {}, "files": {k: v for k, v in files.items() if k != "smile.npy"}})
    with pytest.raises(ValueError, match="outside its range"):
        parse_manifest({**current, "edits": [{**edits[0], "default": 2.0}], "files": files})
