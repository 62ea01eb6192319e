"""`distill align`: crops, alignment.jsonl, rejected photos with their reason, resuming, settings guard, photos
the service accepts (16-bit greys, non-UTF-8 names), and one-line errors for every bad output folder or option."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_a_16_bit_grey_photo_is_scaled_as_the_service_scales_it(tmp_path):
    grey = np.asarray(Image.fromarray(data.astronaut()).convert("L"), np.uint16) * 257  # full 16-bit range
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode.startswith("I")  # Pillow reads it as 16/32-bit integers, which convert("RGB") clips
    out = tmp_path / "aligned"
    assert main(["align", str(tmp_path / "grey16.png"), "--out", str(out), "--size", "32"]) == 0
    assert [r["file"] for r in read_rows(out / ROWS)] == ["grey16_00.png"]


def test_photos_with_non_utf8_names_are_reported_and_the_folder_re_runs(tmp_path, capsys):
    photos = tmp_path / "photos"
    for sub in ("a", "b"):  # the same Latin-1 name twice: the crop names hash the path's bytes
        (photos / sub).mkdir(parents=True)
        Path(os.fsdecode(os.fsencode(photos / sub) + b"/caf\xe9.png")).write_bytes(
            b"\x89PNG\r\n\x1a\n not really"
        )
    out = tmp_path / "out"
    assert main(["align", str(photos), "--out", str(out), "--size", "32"]) == 0
    assert "rejected 2 photos" in capsys.readouterr().out
    assert main(["align", str(photos), "--out", str(out), "--size", "32"]) == 0
    assert "skipped 2" in capsys.readouterr().out
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.count("caf\\xe9.png | unreadable image") == 2, report


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("size", [7, 4097, 100000])
def test_crop_sizes_out_of_range_are_refused(photos, tmp_path, capsys, size):
    assert main(["align", str(photos / "coffee.png"), "--out", str(tmp_path / "o"), "--size", str(size)]) == 2
    assert f"--size {size}: the crop side must be 8 to 4096 pixels" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_an_output_path_through_a_symlink_loop_or_to_nothing_is_refused(photos, tmp_path, capsys):
    loop, dangling = tmp_path / "loop", tmp_path / "dangling"
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "missing")
    for out, what in ((loop, "loops"), (loop / "sub", "loops"), (dangling, "a symbolic link to nothing")):
        assert main(["align", str(photos / "coffee.png"), "--out", str(out), "--size", "32"]) == 2
        err = one_line_error(capsys)
        assert f"--out {out}: " in err and what in err and "choose another folder" in err


def test_an_unwritable_output_folder_is_a_one_line_error(photos, unprivileged, capsys):
    photo = unprivileged.root / "coffee.png"
    photo.write_bytes((photos / "coffee.png").read_bytes())
    locked = unprivileged.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for out in (locked, locked / "sub"):
        with unprivileged.run():
            assert main(["align", str(photo), "--out", str(out), "--size", "32"]) == 2
        err = one_line_error(capsys)
        assert "Permission denied; give this user access to it or choose another --out" in err


@pytest.mark.parametrize(
    "settings,what",
    [
        ("{not json", "Expecting property name"),
        ("[32, 64]", "a JSON list, not an object"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("\xff\xfe", "codec can't decode"),
    ],
)
def test_a_corrupt_settings_file_is_a_one_line_error(photos, tmp_path, capsys, settings, what):
    out = tmp_path / "out"
    out.mkdir()
    (out / "align.json").write_bytes(settings.encode("latin-1"))
    assert main(["align", str(photos / "coffee.png"), "--out", str(out), "--size", "32"]) == 2
    err = one_line_error(capsys)
    assert f"{out / 'align.json'}: not the settings of a distill align run" in err and what in err
    assert "delete the folder and re-run" in err


def test_a_row_that_is_not_an_object_is_a_one_line_error(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["align", str(photos / "coffee.png"), "--out", str(out), "--size", "32"]) == 0
    (out / "rejected.jsonl").write_text('["a list"]\n{"source": "x", "reason": "y"}\n')
    capsys.readouterr()
    assert main(["align", str(photos / "coffee.png"), "--out", str(out), "--size", "32"]) == 2
    assert "rejected.jsonl:1: not a row of distill align" in one_line_error(capsys)
