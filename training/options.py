"""Stage options: each stage is a function of one typed options object (a dataclass); the CLI only builds it."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def options_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass ``cls`` from the parsed arguments of the same names; ``overrides`` replace some of them.
    A flag with no field of that name is a TypeError: a new flag needs its options field (or it would be lost)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    stray = sorted(k for k in vars(args) if k not in names and k not in ("command", "func") and not k.endswith("_command"))
    if stray:
        raise TypeError(f"{cls.__name__} has no field for the parsed argument(s) {', '.join(stray)}")
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **overrides})


def run_command(register: Callable[[argparse._SubParsersAction], None], argv: list[str]) -> int:
    """One stage's command line (its ``register``) without the ``distill`` entry point above this floor:
    for the stages the recipe still runs as commands. User errors propagate as :class:`DistillError`."""
    parser = argparse.ArgumentParser(prog="distill")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


class _Deprecated(argparse.Action):
    """Stores (or appends) like the flag it stands for, after a one-line note on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str, append: bool = False, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.append = new, append

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, *, dest: str | None = None,
                     action: str = "store", **kwargs: Any) -> None:
    """``old`` as a hidden spelling of ``new`` (same ``dest``): it still works and prints a one-line note.
    ``action``: ``store`` or ``append`` (as ``new``'s); ``kwargs`` (type, choices) as ``new``'s."""
    parser.add_argument(old, dest=dest or new.lstrip("-").replace("-", "_"), action=_Deprecated, new=new,
                        append=action == "append", default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
