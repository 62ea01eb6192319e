"""The model-zoo registry: listing, checksum verification, clear refusals, and the `distill models` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from model_zoo.registry import (
    MANIFEST,
    SHIPPED_ROOT,
    ModelZooError,
    default_root,
    get_entry,
    list_entries,
    load_entry,
    sha256_file,
    write_entry,
)


def _manifest(name: str, teacher: bool = True) -> dict:
    return {
        "name": name,
        "description": "test entry",
        "edit": {"attribute": "age", "alpha": 1.5, "layers": [0, 8]},
        "input": {
            "name": "input",
            "layout": "NCHW",
            "dtype": "float32",
            "size": [64, 48],
            "channels": 3,
            "range": [-1, 1],
            "stride": 16,
        },
        "output": {"name": "output"},
        "variants": {
            "fp32": {"file": "model.onnx", "providers": ["CPUExecutionProvider"]},
            "int8": {
                "file": "model.int8.onnx",
                "providers": ["CPUExecutionProvider"],
                "psnr_vs_fp32_db": 41.2,
                "median_ms": 3.5,
                "measured_on": "test",
            },
        },
        "teacher": {"file": "teacher.pt"} if teacher else None,
        "direction": {"file": "direction.npy", "layers": [0, 8], "alpha": 1.5, "normalize": False}
        if teacher
        else None,
    }


def _make_entry(root: Path, name: str, teacher: bool = True):
    dest = root / name
    dest.mkdir(parents=True)
    files = ["model.onnx", "model.int8.onnx"] + (["teacher.pt", "direction.npy"] if teacher else [])
    for i, f in enumerate(files):
        (dest / f).write_bytes(bytes(range(256)) * (i + 3))
    return write_entry(dest, _manifest(name, teacher), files)


def test_write_entry_records_checksums_and_paths(tmp_path):
    entry = _make_entry(tmp_path, "age-small")
    stored = json.loads((tmp_path / "age-small" / MANIFEST).read_text())
    assert stored == entry.manifest
    for fname, rec in stored["files"].items():
        assert rec == {
            "sha256": sha256_file(tmp_path / "age-small" / fname),
            "bytes": (tmp_path / "age-small" / fname).stat().st_size,
        }
    assert entry.input_size == (64, 48) and entry.stride == 16
    assert entry.variant_path("int8") == tmp_path / "age-small" / "model.int8.onnx"
    assert set(entry.variants) == {"fp32", "int8"}
    assert entry.teacher_path == tmp_path / "age-small" / "teacher.pt"
    assert entry.direction_path == tmp_path / "age-small" / "direction.npy"
    with pytest.raises(ModelZooError, match=r"no 'fp16' variant; available: fp32, int8"):
        entry.variant_path("fp16")


def test_list_and_get(tmp_path):
    _make_entry(tmp_path, "b-model", teacher=False)
    _make_entry(tmp_path, "a-model")
    (tmp_path / "not-an-entry").mkdir()
    _make_entry(tmp_path, ".a-model.export-tmp")  # an export in progress (or killed) is not an entry
    assert [e.name for e in list_entries(tmp_path)] == ["a-model", "b-model"]
    entry = get_entry("b-model", tmp_path)
    assert entry.teacher_path is None and entry.direction_path is None
    assert list_entries(tmp_path / "missing") == []


def test_default_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MODEL_ZOO", str(tmp_path))
    _make_entry(tmp_path, "envmodel")
    assert default_root() == tmp_path
    assert get_entry("envmodel").path == tmp_path / "envmodel"
    monkeypatch.delenv("DISTILL_MODEL_ZOO")
    assert default_root() == Path(__import__("model_zoo").__file__).resolve().parent


def test_unknown_name_lists_available(tmp_path):
    _make_entry(tmp_path, "a-model")
    _make_entry(tmp_path, "b-model")
    with pytest.raises(ModelZooError, match=r"no model 'nope'.*available: a-model, b-model"):
        get_entry("nope", tmp_path)
    with pytest.raises(ModelZooError, match=r"not a model name.*available: a-model, b-model"):
        get_entry("../a-model", tmp_path)
    with pytest.raises(ModelZooError, match="empty"):
        get_entry("x", tmp_path / "empty")


def test_flipped_byte_refused(tmp_path):
    _make_entry(tmp_path, "m")
    onnx_path = tmp_path / "m" / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelZooError, match=r"model\.onnx: sha256 does not match.*corrupt.*distill export"):
        get_entry("m", tmp_path)
    assert get_entry("m", tmp_path, verify=False).name == "m"


def test_truncated_and_missing_refused(tmp_path):
    _make_entry(tmp_path, "m")
    onnx_path = tmp_path / "m" / "model.int8.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:100])
    with pytest.raises(
        ModelZooError, match=r"model\.int8\.onnx: 100 bytes, the manifest says \d+ \(truncated"
    ):
        get_entry("m", tmp_path)
    onnx_path.unlink()
    with pytest.raises(ModelZooError, match=r"model\.int8\.onnx: missing"):
        get_entry("m", tmp_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.pop("input"), "input: Field required"),
        (lambda m: m["input"].update(size=[64]), "input.size"),
        (lambda m: m["input"].update(size=[60, 48]), "not a multiple of input.stride 16"),
        (lambda m: m["input"].update(layout="NHWC"), "input.layout: Input should be 'NCHW'"),
        (lambda m: m["variants"].pop("fp32"), "at least an 'fp32'"),
        (lambda m: m["variants"]["fp32"].update(file="other.onnx"), "'other.onnx' is not listed in 'files'"),
        (lambda m: m["files"]["model.onnx"].update(sha256="xyz"), "files.model.onnx.sha256"),
        (
            lambda m: m["files"].update({"../escape": {"sha256": "0" * 64, "bytes": 1}}),
            "inside the entry folder",
        ),
        (lambda m: m.update(teacher={"path": "t.pt"}), "teacher.file: Field required"),
    ],
)
def test_malformed_manifest_refused(tmp_path, mutate, message):
    entry = _make_entry(tmp_path, "m")
    manifest = json.loads(json.dumps(entry.manifest))
    mutate(manifest)
    (tmp_path / "m" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelZooError, match=message):
        load_entry(tmp_path / "m")
    (tmp_path / "m" / MANIFEST).write_text("{not json")
    with pytest.raises(ModelZooError, match="unreadable manifest"):
        get_entry("m", tmp_path)


def test_write_entry_refuses_missing_file(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelZooError, match="model.onnx: listed for the manifest but not written"):
        write_entry(tmp_path / "m", _manifest("m", teacher=False), ["model.onnx"])
    assert not (tmp_path / "m" / MANIFEST).exists()


def test_cli_list_show_verify(tmp_path, capsys):
    _make_entry(tmp_path, "age-small")
    assert main(["models", "--root", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NAME", "EDIT", "INPUT", "SIZE", "VARIANTS", "STRIDE", "ZOO"]
    assert "age-small" in out and "age +1.5 w[0:8]" in out and "fp32,int8" in out and "64x48" in out
    assert main(["models", "--root", str(tmp_path), "show", "age-small"]) == 0
    out = capsys.readouterr().out
    assert "PSNR vs fp32 41.20 dB" in out and "teacher.pt" in out
    assert main(["models", "--root", str(tmp_path), "show", "age-small", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "age-small"
    assert main(["models", "--root", str(tmp_path), "verify", "age-small"]) == 0
    assert "all 4 files match" in capsys.readouterr().out

    (tmp_path / "age-small" / "teacher.pt").write_bytes(b"x")
    assert main(["models", "--root", str(tmp_path), "verify", "age-small"]) == 2
    err = capsys.readouterr().err
    assert "teacher.pt: 1 bytes" in err and "Traceback" not in err
    assert main(["models", "--root", str(tmp_path), "show", "nope"]) == 2
    assert "available: age-small" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["show", "verify"])
def test_cli_a_manifest_nested_too_deeply_is_a_one_line_error(tmp_path, capsys, action):
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / MANIFEST).write_text("[" * 5000 + "]" * 5000)
    assert main(["models", "--root", str(tmp_path), action, "deep"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'deep' / MANIFEST}: unreadable manifest (JSON nested too deeply)" in err


@pytest.mark.parametrize("unreadable", ["model.onnx", "samples"])
def test_cli_verify_names_a_file_or_folder_this_user_cannot_read(unprivileged, capsys, unreadable):
    root = unprivileged.root
    entry = _make_entry(root, "m", teacher=False)
    (entry.path / "samples").mkdir()
    (entry.path / "samples" / "face.png").write_bytes(b"png")
    write_entry(
        entry.path, _manifest("m", teacher=False), ["model.onnx", "model.int8.onnx", "samples/face.png"]
    )
    (entry.path / unreadable).chmod(0)
    with unprivileged.run():
        assert main(["models", "--root", str(root), "show", "m"]) == 0
        capsys.readouterr()
        assert main(["models", "--root", str(root), "verify", "m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (
        f"{entry.path / unreadable}" in err and "Permission denied; give this user read access to it" in err
    )


def test_a_bare_name_resolves_in_the_given_zoo_else_local_else_shipped(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISTILL_MODEL_ZOO", raising=False)
    monkeypatch.chdir(tmp_path)  # a user's folder outside the repository
    _make_entry(tmp_path / "model_zoo", "mine")
    assert get_entry("mine").zoo == tmp_path / "model_zoo"
    assert get_entry("toyfaces-age", verify=False).zoo == SHIPPED_ROOT  # the shipped default, from anywhere
    zoos = {e.name: e.zoo for e in list_entries()}
    assert zoos["mine"] == tmp_path / "model_zoo" and zoos["toyfaces-age"] == SHIPPED_ROOT
    (tmp_path / "model_zoo" / "mine" / "evaluation").mkdir()
    (tmp_path / "model_zoo" / "mine" / "evaluation" / "report.md").write_text("r")
    assert main(["models", "verify", "mine"]) == 0
    out = capsys.readouterr().out
    assert "reports  evaluation/  1 files" in out and "not in the manifest" not in out
    assert f"zoo {tmp_path / 'model_zoo'}" in out
    assert main(["models", "list"]) == 0
    assert str(SHIPPED_ROOT) in capsys.readouterr().out

    other = tmp_path / "elsewhere"
    _make_entry(other, "theirs")
    for argv in (
        ["models", "verify", "theirs", "--model-zoo", str(other)],
        ["models", "--root", str(other), "verify", "theirs"],
    ):
        assert main(argv) == 0, argv
    monkeypatch.setenv("DISTILL_MODEL_ZOO", str(other))  # a given zoo alone is searched
    assert [e.name for e in list_entries()] == ["theirs"]
    with pytest.raises(
        ModelZooError, match=r"no model 'mine' in .*elsewhere; available: theirs.*--model-zoo"
    ):
        get_entry("mine")
