"""`distill align`: crops, alignment.jsonl, rejected photos with their reason, resuming, settings guard."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from distill.cli import main
from training.align import ROWS, crop_stems, read_rows

data = pytest.importorskip(
    "skimage.data", reason="scikit-image ships the test portraits (pip install -e .[dev])"
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(root / "astronaut.jpg", quality=95)
    Image.fromarray(data.coffee()).save(root / "coffee.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    face = data.astronaut()[40:300, 110:340]
    pair = np.full((320, 640, 3), 200, np.uint8)
    pair[30:290, 30:260], pair[30:290, 380:610] = face, face[:, ::-1]
    (root / "group").mkdir()
    Image.fromarray(pair).save(root / "group" / "pair.png")
    return root


def test_align_writes_crops_rows_and_a_report(photos, tmp_path, capsys):
    out = tmp_path / "aligned"
    assert main(["align", str(photos), "--out", str(out), "--size", "64", "--faces", "all"]) == 0
    rows = read_rows(out / ROWS)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert sorted(len(v) for v in by_source.values()) == [1, 2]  # the astronaut, the pair
    astronaut = by_source[str(photos / "astronaut.jpg")][0]
    assert astronaut["face"] == 0 and astronaut["size"] == 64 and astronaut["file"] == "astronaut_00.png"
    assert np.asarray(astronaut["quad"]).shape == (4, 2) and np.asarray(astronaut["landmarks"]).shape == (
        68,
        2,
    )
    assert Image.open(out / "astronaut_00.png").size == (64, 64)
    assert [r["face"] for r in by_source[str(photos / "group" / "pair.png")]] == [0, 1]
    assert (out / "pair_01.png").is_file()
    rejected = {r["source"]: r["reason"] for r in read_rows(out / "rejected.jsonl")}
    assert rejected[str(photos / "coffee.png")].startswith("no face found")
    assert rejected[str(photos / "broken.png")].startswith("unreadable image")
    report = (out / "report.md").read_text()
    assert "4 photos, 3 aligned faces, 2 photos rejected" in report and "coffee.png | no face found" in report
    assert "aligned 3 faces, rejected 2 photos, skipped 0" in capsys.readouterr().out

    # a re-run skips everything that is done; a torn last line (an interrupted append) is redone
    stamp = (out / "astronaut_00.png").stat().st_mtime_ns
    with open(out / ROWS, "a") as f:
        f.write('{"source": "half a row')
    assert main(["align", str(photos), "--out", str(out), "--size", "64", "--faces", "all"]) == 0
    assert "aligned 0 faces, rejected 0 photos, skipped 4" in capsys.readouterr().out
    assert read_rows(out / ROWS) == rows and (out / "astronaut_00.png").stat().st_mtime_ns == stamp


def test_largest_face_only_by_default(photos, tmp_path):
    out = tmp_path / "largest"
    assert main(["align", str(photos / "group" / "pair.png"), "--out", str(out), "--size", "32"]) == 0
    rows = read_rows(out / ROWS)
    assert [r["face"] for r in rows] == [0] and json.loads((out / "align.json").read_text())[
        "faces"
    ] == "largest"


def test_other_settings_in_the_same_folder_are_refused(photos, tmp_path, capsys):
    out = tmp_path / "guard"
    assert main(["align", str(photos / "coffee.png"), "--out", str(out), "--size", "32"]) == 0
    assert main(["align", str(photos / "coffee.png"), "--out", str(out), "--size", "64"]) == 2
    assert "size 32 -> 64" in capsys.readouterr().err


def test_missing_photos_are_a_one_line_error(tmp_path, capsys):
    assert main(["align", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.jpg: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["align", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_same_named_photos_get_distinct_crop_names(tmp_path):
    a, b = tmp_path / "a" / "face.jpg", tmp_path / "b" / "face.jpg"
    stems = crop_stems([a, b, tmp_path / "other.png"])
    assert stems[tmp_path / "other.png"] == "other"
    assert stems[a] != stems[b] and stems[a].startswith("face-")
