"""User-facing errors: raised for bad input, printed by the CLI as one clear line (no traceback)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


class DistillError(Exception):
    """An error the user can fix: the message names the file or option at fault and the fix."""


class FieldError(DistillError):
    """A bad value of one options field. The library's message starts with the field's name (``size 4: ...``);
    the command line prints the flag there instead (``--size 4: ...``, see :meth:`as_flag`)."""

    def __init__(self, field: str, detail: str) -> None:
        self.field, self.detail = field, detail
        super().__init__(f"{field} {detail}")

    def as_flag(self, flag: str | None = None) -> str:
        """The message with ``flag`` (default: ``--`` and the field's name with dashes) in the field's place."""
        return f"{flag or '--' + self.field.replace('_', '-')} {self.detail}"


_FIXES = {  # errno of a failed file operation -> what the user can do about it ({out}: the output option)
    errno.ENOSPC: "free space on that disk (then re-run the same command to resume) or choose another {out}",
    errno.EDQUOT: "free space within your quota (then re-run the same command to resume) or choose another {out}",
    errno.EFBIG: "the file is larger than the file system or `ulimit -f` allows; choose another {out}",
    errno.EROFS: "the file system is read-only; choose another {out}",
    errno.EACCES: "give this user access to it or choose another {out}",
    errno.EPERM: "give this user access to it or choose another {out}",
}


@contextmanager
def file_errors(folder: str | os.PathLike, option: str = "--out") -> Iterator[None]:
    """Turn a disk-full, quota, read-only or permission error inside the block into a DistillError: one line
    naming the file (else ``folder``, the command's output) and the fix, where ``option`` names the output.
    Other OSErrors (bugs, not the user's to fix) pass through."""
    try:
        yield
    except OSError as e:
        if e.errno not in _FIXES:
            raise
        path = e.filename if e.filename is not None else folder
        raise DistillError(
            f"{path}: {e.strerror or os.strerror(e.errno)}; {_FIXES[e.errno].format(out=option)}"
        ) from None
