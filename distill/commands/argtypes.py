"""argparse ``type=`` functions over the library's parsers: a FieldError becomes argparse's error, worded as
before the library named fields (argparse puts ``argument --flag:`` in front of it)."""

from __future__ import annotations

import argparse
import re

from core.errors import FieldError
from training.directions import parse_layers
from training.strength import StrengthRange, parse_range


def layers(text: str) -> tuple[int, int]:
    """``--layers START:STOP``; the message repeats the flag (``--layers '0:x': expected START:STOP, ...``)."""
    try:
        return parse_layers(text)
    except FieldError as e:
        raise argparse.ArgumentTypeError(e.as_flag()) from None


def strength_range(text: str) -> StrengthRange:
    """``--alpha-range LO:HI``; the message is the detail alone (``'1': expected LO:HI, e.g. -1.5:1.5``)."""
    try:
        return parse_range(text)
    except FieldError as e:
        raise argparse.ArgumentTypeError(e.detail) from None


_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.+)$")  # NAME=VALUE: a name before the first '='


def direction(text: str) -> str | tuple[str, str]:
    """``--direction FILE`` or ``--direction NAME=FILE`` (one of several named edits)."""
    m = _NAME.match(text)
    return (m[1], m[2]) if m else text


def alpha(text: str) -> float | tuple[str, float]:
    """``--alpha A`` or ``--alpha NAME=A``."""
    m = _NAME.match(text)
    try:
        return (m[1], float(m[2])) if m else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected A or NAME=A, e.g. 1.5 or age=1.5") from None


def named_strength_range(text: str) -> StrengthRange | tuple[str, StrengthRange]:
    """``--alpha-range LO:HI`` or ``--alpha-range NAME=LO:HI``."""
    m = _NAME.match(text)
    return (m[1], strength_range(m[2])) if m else strength_range(text)


def edit_strength(text: str) -> tuple[str, float]:
    """``--edit NAME=S``: one edit's relative strength, by name."""
    m = _NAME.match(text)
    try:
        if m is None:
            raise ValueError
        return m[1], float(m[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=S, e.g. age=1 or smile=-0.5") from None
