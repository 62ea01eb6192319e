"""The model zoo serves and verifies only what an entry's manifest lists; a symbolic link
that leads out of an entry fails verification (CLI and service start) and is never served."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from distill.cli import main
from model_zoo.registry import ModelZooError, get_entry
from tests.app_helpers import gradient, make_entry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    return path


def test_a_link_out_of_the_entry_fails_verification(tmp_path: Path, secret: Path, capsys) -> None:
    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny", teacher=False)
    (zoo / "tiny" / "samples" / "evil.png").symlink_to(secret)
    with pytest.raises(ModelZooError, match=r"evil\.png: a symbolic link leading out of model 'tiny'"):
        get_entry("tiny", zoo)
    assert main(["models", "--root", str(zoo), "verify", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "evil.png" in err and "delete it" in err and len(err.strip().splitlines()) == 1


def test_a_dangling_or_listed_escaping_link_fails_too(tmp_path: Path, secret: Path) -> None:
    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny", teacher=False)
    sample = zoo / "tiny" / "samples" / "face.png"
    (zoo / "tiny" / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ModelZooError, match="gone"):
        get_entry("tiny", zoo)
    (zoo / "tiny" / "gone").unlink()
    content = sample.read_bytes()  # a listed file replaced by a link to an identical copy outside
    sample.unlink()
    secret.write_bytes(content)
    sample.symlink_to(secret)
    with pytest.raises(ModelZooError, match="face.png"):
        get_entry("tiny", zoo)


def test_verify_names_unlisted_files_and_passes(tmp_path: Path, capsys) -> None:
    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny", teacher=False)
    Image.fromarray(gradient(8, 8)).save(zoo / "tiny" / "samples" / "stray.png")
    (zoo / "tiny" / "report.md").write_text("a report")
    assert main(["models", "--root", str(zoo), "verify", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "never loaded or served): samples/stray.png" in out and "report.md" in out


def test_service_lists_and_serves_only_listed_samples(tmp_path: Path, secret: Path) -> None:
    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny", teacher=False)
    samples = zoo / "tiny" / "samples"
    Image.fromarray(gradient(8, 8)).save(samples / "stray.png")
    settings = Settings(model_zoo=zoo, warmup_runs=1, legacy_workers=0)
    with TestClient(create_app(settings)) as client:
        while (ready := client.get("/readyz")).status_code != 200:
            assert ready.json()["status"] == "loading"
        info = client.get("/models").json()["models"][0]
        assert info["samples"] == ["/models/tiny/samples/face.png"] and info["zoo"] == str(zoo)
        assert client.get("/models/tiny/samples/face.png").status_code == 200
        stray = client.get("/models/tiny/samples/stray.png")
        assert stray.status_code == 404 and stray.json()["error"] == "unknown_sample"
        # swapped for a link to a secret while the service runs: refused, never the secret's bytes
        (samples / "face.png").unlink()
        (samples / "face.png").symlink_to(secret)
        r = client.get("/models/tiny/samples/face.png")
        assert r.status_code == 404 and b"root:x" not in r.content
