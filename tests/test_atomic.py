"""Atomic writes: readers see the old file or the whole new one, never a partial file or a stray temp."""

from __future__ import annotations

import os
import stat

import pytest

from core.atomic import atomic_write, atomic_write_text


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
