"""`distill transform`: the service's /transform over files and folders, resumable, with one row per input."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from distill.cli import main
from tests.app_helpers import gradient, make_entry, make_face_entry, png_bytes, png_header_only, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

data = pytest.importorskip(
    "skimage.data", reason="scikit-image ships the test portraits (pip install -e .[dev])"
)

# One engine, one thread, one warm-up run: the CLI and the service load the same engine, quickly.
ENV = {
    "DISTILL_ENGINE": "onnxruntime",
    "DISTILL_PROVIDER": "cpu",
    "DISTILL_WARMUP_RUNS": "1",
    "DISTILL_INTRA_OP_THREADS": "1",
}


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def two_faces() -> np.ndarray:
    face = data.astronaut()[40:300, 110:340]
    photo = np.full((320, 640, 3), 200, np.uint8)
    photo[30:290, 30:260], photo[30:290, 380:610] = face, face[:, ::-1]
    return photo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A zoo of ``tiny`` (centred crop) and ``faces`` (FFHQ-aligned, inverts colours), with the test settings."""
    root = tmp_path_factory.mktemp("zoo")
    make_entry(root, "tiny", teacher=False)
    make_face_entry(root)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        mp.setenv("DISTILL_MODEL_ZOO", str(root))
        mp.delenv("JOB_COMPLETION_INDEX", raising=False)
        mp.delenv("DISTILL_NUM_SHARDS", raising=False)
        yield root


def transform(*args: object) -> int:
    return main(["transform", *map(str, args), "--quiet"])


def rows(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {Path(row["source"]).name: row for row in map(json.loads, lines)}


def test_outputs_equal_what_the_service_returns(zoo, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "g.png").write_bytes(png_bytes(48, 40))
    (photos / "pair.jpg").write_bytes(jpeg(two_faces()))
    out = tmp_path / "out"
    assert (
        transform(photos / "g.png", "--model", "tiny", "--out", out, "--format", "png", "--size", "crop") == 0
    )
    assert (
        transform(
            photos / "pair.jpg",
            *("--model", "faces", "--out", out, "--format", "png"),
            *("--size", "original", "--faces", "all"),
        )
        == 0
    )
    settings = Settings(model_zoo=zoo, legacy_workers=0, **{k[8:].lower(): v for k, v in ENV.items()})
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        for name, fields in (
            ("g.png", {"model": "tiny", "size": "crop"}),
            ("pair.jpg", {"model": "faces", "size": "original", "faces": "all"}),
        ):
            r = client.post(
                "/transform",
                files={"image": (name, (photos / name).read_bytes())},
                data={"format": "png", **fields},
            )
            assert r.status_code == 200, r.text
            assert (out / Path(name).with_suffix(".png")).read_bytes() == r.content
    by_name = rows(out)
    assert by_name["pair.jpg"]["faces"] == 2 == int(r.headers["x-faces"])
    assert by_name["pair.jpg"]["status"] == "ok" and by_name["pair.jpg"]["outputs"] == ["pair.png"]
    assert {"read", "decode", "detect", "align", "inference", "pasteback", "encode", "write"} <= set(
        by_name["pair.jpg"]["timings_ms"]
    )
    assert by_name["g.png"]["faces"] is None


def test_bad_files_are_recorded_with_the_services_codes_and_skipped(zoo, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.png").write_bytes(png_bytes(64, 48))
    (photos / "text.jpg").write_text("not a picture")
    (photos / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    (photos / "bomb.png").write_bytes(png_header_only(10_000, 10_000))
    (photos / "coffee.jpg").write_bytes(jpeg(data.coffee()))
    out = tmp_path / "out"
    assert transform(photos, "--model", "faces", "--out", out, "--align", "auto") == 0
    by_name = rows(out)
    assert {name: row["error"] for name, row in by_name.items()} == {
        "good.png": "no_face",  # a gradient: no face for the FFHQ model
        "text.jpg": "not_an_image",
        "anim.gif": "unsupported_format",
        "bomb.png": "too_many_pixels",
        "coffee.jpg": "no_face",
    }
    assert by_name["bomb.png"]["http_status"] == 413 and by_name["bomb.png"]["status"] == "error"
    assert "0 done, 0 skipped (done before), 5 errors (no_face 2, not_an_image 1" in capsys.readouterr().out
    assert not list(out.glob("*.jpg"))
    # refused for good: a re-run skips them
    assert transform(photos, "--model", "faces", "--out", out) == 0
    assert "0 done, 5 skipped" in capsys.readouterr().out


def test_a_run_killed_with_sigkill_leaves_whole_files_and_the_next_run_completes_it(zoo, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(120):
        Image.fromarray(np.roll(gradient(40, 40), i, axis=1)).save(photos / f"{i:03d}.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [
        sys.executable,
        "-m",
        "distill",
        "transform",
        str(photos),
        "--model",
        "tiny",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen([*command, "--quiet", "--format", "png"], env=env)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(list((out / ".rows").glob("*.json"))) < 3:
            assert time.monotonic() < deadline, "no row written in 120 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    kept = {Path(json.loads(p.read_text())["source"]).name for p in (out / ".rows").glob("*.json")}
    for picture in out.glob("[!.]*.png"):  # every output under its own name is whole
        with Image.open(picture) as im:
            im.load()
    (out / "000.png").unlink(missing_ok=True)  # an output lost after its row: redone
    assert transform(photos, "--model", "tiny", "--out", out, "--format", "png") == 0
    summary = capsys.readouterr().out
    by_name = rows(out)
    assert len(by_name) == 120 and all(row["status"] == "ok" for row in by_name.values())
    assert len(list(out.glob("[!.]*.png"))) == 120
    assert f" {len(kept - {'000.png'})} skipped (done before)" in summary
    assert transform(photos, "--model", "tiny", "--out", out, "--format", "png") == 0
    assert "0 done, 120 skipped" in capsys.readouterr().out


def test_shards_split_the_inputs_disjointly(zoo, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(7):
        (photos / f"{i}.png").write_bytes(png_bytes(40 + i, 40))
    out = tmp_path / "out"
    assert transform(photos, "--model", "tiny", "--out", out, "--shard", "0", "--num-shards", "2") == 0
    first = set(rows(out))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")  # an Indexed Job's pod
    monkeypatch.setenv("DISTILL_NUM_SHARDS", "2")
    assert transform(photos, "--model", "tiny", "--out", out) == 0
    second = set(rows(out)) - first
    assert first and second and not first & second
    assert first | second == {f"{i}.png" for i in range(7)}
    assert len(first) == 4


@pytest.mark.parametrize(
    "args",
    [
        ("missing/", "--model", "tiny"),
        ("{photos}", "--model", "nosuch"),
        ("{photos}", "--model", "tiny", "--strength", "0.5"),  # a fixed-strength model
        ("{photos}", "--model", "faces", "--faces", "all"),  # faces=all needs size=original
        ("{photos}", "--model", "tiny", "--shard", "2", "--num-shards", "2"),
    ],
)
def test_usage_errors_exit_2_with_one_line(zoo, tmp_path, capsys, args):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(png_bytes())
    argv = [a.format(photos=photos) for a in args]
    assert transform(*argv, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("distill transform: error: ") and err.count("\n") == 1, err
