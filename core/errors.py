"""User-facing errors: raised for bad input, printed by the CLI as one clear line (no traceback)."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class DistillError(Exception):
    """An error the user can fix: the message names the file or option at fault and the fix."""


class FieldError(DistillError):
    """A bad value of one options field (or of several named together). The library's message starts with the
    field's name (``size 4: ...``) and names any other field it mentions, marked ``{name}`` in ``detail`` and
    listed in ``refs``, by its name; the command line prints each one's flag there instead (``--size 4: ...``,
    see :meth:`as_flag`). ``field`` may be a tuple: several fields joined by ``/`` (``attribute/other ...``),
    or none, for a message that names its fields in ``detail`` alone."""

    def __init__(self, field: str | tuple[str, ...], detail: str, refs: tuple[str, ...] = ()) -> None:
        self.fields = (field,) if isinstance(field, str) else field
        self.field = self.fields[0] if self.fields else ""
        self.detail, self.refs = detail, refs
        super().__init__(self._text(lambda name: name))

    def _text(self, name: Callable[[str], str]) -> str:
        detail = self.detail
        for ref in self.refs:
            detail = detail.replace("{" + ref + "}", name(ref))
        head = "/".join(name(f) for f in self.fields)
        return f"{head} {detail}" if head else detail

    def as_flag(self, flag: Callable[[str], str] | None = None) -> str:
        """The message with each field's flag in its place: ``flag(field)``, by default :func:`default_flag`."""
        return self._text(flag or default_flag)


def default_flag(field: str) -> str:
    """The flag of an options field when its command gives no other: ``--`` and the name with dashes."""
    return "--" + field.replace("_", "-")


def parser_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Callable[[str], str]:
    """field -> flag as the command that parsed ``args`` spells it: the first option string of the argument
    whose ``dest`` is the field, in the (sub)command chosen (a deprecated alias is added after its flag, so
    the current spelling wins); :func:`default_flag` for a field no argument stores."""
    flags: dict[str, str] = {}
    level: argparse.ArgumentParser | None = parser
    while level is not None:  # the command's own flags over its parent's
        chosen: argparse.ArgumentParser | None = None
        own: dict[str, str] = {}
        for action in level._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest or "", None) or "")
            elif action.option_strings:
                long = [o for o in action.option_strings if o.startswith("--")]
                own.setdefault(action.dest, (long or action.option_strings)[0])
        flags.update(own)
        level = chosen
    return lambda field: flags.get(field) or default_flag(field)


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
