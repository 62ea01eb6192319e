"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A reader (or a resumed job) therefore sees either the old file or the complete new one, never a
half-written file, even when the writer is killed with SIGKILL or the disk fills up (the temp file is
removed and the OSError names the target, for :func:`core.errors.file_errors`).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO


@cache
def _umask() -> int:
    """The process umask (mkstemp creates 0600 files; atomic writes get the usual 0666 & ~umask).

    Read from /proc where it is exposed; elsewhere set and restored once, at the first write.
    """
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        match = re.search(r"^Umask:\s*([0-7]+)$", status, re.M)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a temp file in ``path``'s folder, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() or fsync(): name the file
            e.filename = str(path)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_duplicate(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` a copy of ``src`` in one rename, leaving ``src`` in place: a hard link where the filesystem
    allows one, else a byte copy. Rotating a checkpoint this way (keep the old one as ``previous``, then
    replace ``latest`` atomically) leaves no moment at which ``latest`` is missing, as moving it away first did."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.dup.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
