"""Atomic writes: readers see the old file or the whole new one, never a partial file or a stray temp."""

from __future__ import annotations

import os
import stat

import pytest

from core.atomic import atomic_duplicate, atomic_write, atomic_write_bytes, atomic_write_text


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = atomic_write_text(tmp_path / "a.json", "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]


def test_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    mode = stat.S_IMODE(os.stat(atomic_write_text(tmp_path / "b.txt", "x")).st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_duplicate_keeps_the_source_and_replaces_the_target_whole(tmp_path, monkeypatch):
    src, dst = tmp_path / "latest.pt", tmp_path / "previous.pt"
    src.write_bytes(b"step 4")
    dst.write_bytes(b"step 2")
    atomic_duplicate(src, dst)
    assert src.read_bytes() == dst.read_bytes() == b"step 4"
    atomic_write_bytes(src, b"step 6")  # replacing the source leaves the duplicate as it was (a new inode)
    assert dst.read_bytes() == b"step 4" and src.read_bytes() == b"step 6"

    def no_links(*_):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)  # a filesystem without hard links: a byte copy instead
    atomic_duplicate(src, dst)
    assert dst.read_bytes() == b"step 6" and sorted(p.name for p in tmp_path.iterdir()) == [
        "latest.pt",
        "previous.pt",
    ]
