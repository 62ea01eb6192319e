"""Disk faults in ``distill pairs`` and ``pairs-merge``: a full disk or a read-only folder is one line
naming the file and the fix (exit 2), not a traceback; freeing space and re-running finishes the set."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from core.atomic import atomic_write_text
from core.errors import DistillError, file_errors
from distill.cli import main


@pytest.fixture(scope="module")
def teacher(pair_teacher: tuple[str, str]) -> tuple[str, str]:
    return pair_teacher


def pairs_args(teacher: tuple[str, str], out: Path) -> list[str]:
    return [
        "pairs",
        "--generator",
        teacher[0],
        "--direction",
        teacher[1],
        "--num",
        "12",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


def test_a_disk_that_fills_up_mid_run_is_one_line_and_a_rerun_finishes(
    teacher, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "data"
    real_fsync, calls = os.fsync, []

    def fills_up(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 6:  # the metadata and the first images fit
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    assert main(pairs_args(teacher, out)) == 2
    stderr = capsys.readouterr().err
    err = [
        line for line in stderr.splitlines() if line.startswith("distill pairs")
    ]  # beside the progress bar
    assert len(err) == 1 and err[0].startswith("distill pairs: error: ") and "Traceback" not in stderr
    assert str(out) in err[0] and "No space left on device" in err[0] and "re-run the same command" in err[0]
    assert not list(out.rglob(".*.tmp"))  # no half-written file
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(pairs_args(teacher, out)) == 0
    assert (
        len(list((out / "train_A").glob("*.png"))) == 12 and len(list((out / "train_B").glob("*.png"))) == 12
    )


def test_a_read_only_folder_is_one_line_for_pairs_and_merge(teacher, tmp_path, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.is_relative_to(tmp_path / "ro"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    assert main(pairs_args(teacher, tmp_path / "src")) == 0
    capsys.readouterr()
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(pairs_args(teacher, tmp_path / "ro" / "data")) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"distill pairs: error: {tmp_path / 'ro' / 'data'}: Read-only file system; the file system is "
        "read-only; choose another --out"
    )
    assert main(["pairs-merge", str(tmp_path / "ro" / "merged"), str(tmp_path / "src")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill pairs-merge: error: ") and err.endswith("choose another OUT")


def test_file_errors_names_the_file_or_the_folder_and_lets_bugs_through(tmp_path):
    denied = pytest.raises(DistillError, match=r"^/x/y\.png: Permission denied; give this user access")
    with denied, file_errors(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied", "/x/y.png")
    quota = pytest.raises(
        DistillError, match=rf"^{tmp_path}: Disk quota exceeded; free space within your quota"
    )
    with quota, file_errors(tmp_path):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(FileNotFoundError), file_errors(tmp_path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope")


def test_atomic_write_names_its_target_when_a_write_fails(tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_text(tmp_path / "a.json", "{}")
    assert e.value.filename == str(tmp_path / "a.json") and os.listdir(tmp_path) == []
