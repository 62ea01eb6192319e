"""argparse ``type=`` functions over the library's parsers: a FieldError becomes argparse's error, worded as
before the library named fields (argparse puts ``argument --flag:`` in front of it)."""

from __future__ import annotations

import argparse

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
