"""The input alignment a model expects: `distill export --alignment`, the manifest field, old manifests."""

from __future__ import annotations

import json

import pytest
import torch

from distill.cli import main
from model_zoo.registry import ModelZooError, default_root, get_entry, list_entries, load_entry
from tests.pipeline_helpers import tiny_generator


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "latest_net_G.pth"
    torch.save(tiny_generator().state_dict(), path)
    return path


def export(checkpoint, out, *extra) -> int:
    return main(
        ["export", str(checkpoint), "--out", str(out), "--size", "32", "--timing-repeats", "0", *extra]
    )


def test_export_records_the_alignment(checkpoint, tmp_path):
    assert export(checkpoint, tmp_path / "zoo" / "faces", "--alignment", "ffhq") == 0
    assert export(checkpoint, tmp_path / "zoo" / "plain") == 0
    assert get_entry("faces", tmp_path / "zoo").alignment == "ffhq"
    plain = get_entry("plain", tmp_path / "zoo")
    assert plain.alignment == "none" and plain.manifest["input"]["alignment"] == "none"


def test_export_refuses_an_unknown_alignment(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        export(checkpoint, tmp_path / "zoo" / "x", "--alignment", "dlib5")
    assert "invalid choice: 'dlib5'" in capsys.readouterr().err


def test_manifests_without_the_field_load_as_none(checkpoint, tmp_path):
    assert export(checkpoint, tmp_path / "old") == 0
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["input"]["alignment"]
    path.write_text(json.dumps(manifest))
    assert load_entry(tmp_path / "old").alignment == "none"
    manifest["input"]["alignment"] = "dlib5"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelZooError, match="input.alignment: Input should be 'ffhq' or 'none'"):
        load_entry(tmp_path / "old")


def test_the_shipped_entries_stay_unaligned():
    assert {e.name: e.alignment for e in list_entries(default_root()) if e.name == "toyfaces-age"} == {
        "toyfaces-age": "none"
    }


def test_an_ffhq_model_must_be_square(checkpoint, tmp_path, capsys):
    assert export(checkpoint, tmp_path / "wide", "--alignment", "ffhq", "--size", "32x64") == 2
    assert "--alignment ffhq: FFHQ crops are square" in capsys.readouterr().err
