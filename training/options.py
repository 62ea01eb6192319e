"""Stage options: each stage is a function of one typed options object (a dataclass); the CLI only builds it."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from core.errors import DistillError, FieldError, parser_flags
from networks.pix2pixhd import Pix2PixHDConfig
from networks.pix2pixhd.config import PRESETS

T = TypeVar("T")


def parse_name_index(text: str, field: str) -> tuple[str, int]:
    """``"age=0"`` -> ("age", 0): a scorer output's name and column; FieldError naming ``field`` otherwise."""
    name, sep, index = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, int(index)
    except ValueError:
        raise FieldError(
            field, f"{text!r}: expected NAME=INDEX (the scorer output's column), e.g. age=0"
        ) from None


def options_from_args(
    cls: type[T], args: argparse.Namespace, *, consumed: Collection[str] = (), **overrides: Any
) -> T:
    """The dataclass ``cls`` from the parsed arguments of the same names; ``overrides`` replace some of them.
    A flag with no field of that name is a TypeError: a new flag needs its options field (or it would be lost),
    unless the command reads it itself (``consumed``)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    ignored = {"command", "func", *consumed}
    stray = sorted(
        k for k in vars(args) if k not in names and k not in ignored and not k.endswith("_command")
    )
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
    try:
        return int(args.func(args) or 0)
    except FieldError as e:  # named with this command's flag, as the command line would print it
        raise DistillError(e.as_flag(parser_flags(parser, args))) from None


class _Deprecated(argparse.Action):
    """Stores (or appends) like the flag it stands for, after a one-line note on stderr."""

    def __init__(
        self, option_strings: list[str], dest: str, new: str, append: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.append = new, append

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def deprecated_alias(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    *,
    dest: str | None = None,
    action: str = "store",
    **kwargs: Any,
) -> None:
    """``old`` as a hidden spelling of ``new`` (same ``dest``): it still works and prints a one-line note.
    ``action``: ``store`` or ``append`` (as ``new``'s); ``kwargs`` (type, choices) as ``new``'s."""
    parser.add_argument(
        old,
        dest=dest or new.lstrip("-").replace("-", "_"),
        action=_Deprecated,
        new=new,
        append=action == "append",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------
# The pix2pixHD model flags, parsed alike by `distill train`, `distill estimate` and the toy-domain recipe's
# student options.

# Every Pix2PixHDConfig field but the channel counts and the number of edits, which the pairs fix.
MODEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(Pix2PixHDConfig) if f.name not in ("input_nc", "output_nc", "n_edits")
)


def add_model_arguments(parser: argparse.ArgumentParser, schedule: bool = True) -> None:
    """--preset and one flag per Pix2PixHDConfig field (NVIDIA's spelling with dashes or underscores);
    ``schedule=False`` leaves out --niter/--niter-decay (for commands that take --epochs only)."""
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="student architecture (default: slim)"
    )
    group = parser.add_argument_group("pix2pixHD options (override the preset; NVIDIA's names)")
    for f in dataclasses.fields(Pix2PixHDConfig):
        if f.name not in MODEL_FIELDS or (not schedule and f.name in ("niter", "niter_decay")):
            continue
        flags = sorted({f"--{f.name.replace('_', '-')}", f"--{f.name}"})
        kind = type(f.default)
        if kind is bool:
            group.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"default from the preset (NVIDIA: {f.default})",
            )
            continue
        group.add_argument(
            *flags,
            dest=f.name,
            type=kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"default from the preset (NVIDIA: {f.default})",
        )


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in MODEL_FIELDS if getattr(args, name, None) is not None}


def model_arguments(argv: list[str]) -> dict[str, Any]:
    """Pix2PixHDConfig overrides from pix2pixHD flags, e.g. ``["--ngf", "16", "--residual"]``."""
    parser = argparse.ArgumentParser(prog="distill train", add_help=False)
    add_model_arguments(parser)
    return model_overrides(parser.parse_args(argv))


# ----------------------------------------------------------------------------------------------
# The scorer input flags, parsed alike by every command that reads an ONNX scorer (evaluate, filter, direction fit).

ACTIVATIONS = ("none", "sigmoid", "softmax")


def parse_input_size(text: str) -> int | tuple[int, int]:
    """``N`` -> N (a square input), ``HxW`` (or ``H,W``) -> (H, W): the scorer's input size."""
    parts = text.strip().lower().replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or HxW, e.g. 64 or 64x48")
    return size[0] if len(size) == 1 else (size[0], size[1])


class _NotANumber(argparse.ArgumentTypeError):
    """A ``--mean``/``--std`` word that is no number (after several values: likely a positional argument)."""


def parse_channels(text: str) -> list[float]:
    """One value for every channel or three (R, G, B), separated by commas and/or spaces: ``--mean``/``--std``."""
    values = []
    for part in text.replace(",", " ").split():
        try:
            values.append(float(part))
        except ValueError:
            raise _NotANumber(f"{part!r} is not a number") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 1 or 3 numbers (R G B or R,G,B), e.g. 0.5 or 0.485,0.456,0.406"
        )
    return values


class _Channels(argparse.Action):
    """``--mean 0.5 0.5 0.5``, ``--mean 0.5,0.5,0.5`` and ``--mean=0.5`` alike, through :func:`parse_channels`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            setattr(namespace, self.dest, parse_channels(" ".join(values)))
        except _NotANumber as e:
            flag = option_string or self.option_strings[0]
            hint = (
                (
                    f"; an argument after {flag} is read as one of its values: put it before, or write "
                    f"{flag}=R,G,B"
                )
                if len(values) > 1
                else ""
            )
            raise argparse.ArgumentError(self, f"{e}{hint}") from None
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None


def add_scorer_input_arguments(parser: argparse.ArgumentParser) -> None:
    """``--input-size``, ``--mean``, ``--std``, ``--activation``: how images reach an ONNX scorer (see
    :class:`training.onnx_scorer.OnnxScorer`), one spelling and one parser for every command that takes one."""
    parser.add_argument(
        "--input-size",
        type=parse_input_size,
        metavar="N|HxW",
        help="scorer input size, N or HxW (default: the model's fixed size)",
    )
    parser.add_argument(
        "--mean",
        action=_Channels,
        nargs="+",
        default=[0.5],
        metavar="M",
        help="scorer input mean on [0,1] pixels: 1 or 3 values, space- or comma-separated (default 0.5)",
    )
    parser.add_argument(
        "--std",
        action=_Channels,
        nargs="+",
        default=[0.5],
        metavar="S",
        help="scorer input std on [0,1] pixels: 1 or 3 values, space- or comma-separated (default 0.5)",
    )
    parser.add_argument("--activation", choices=ACTIVATIONS, default="none", help="applied to scorer outputs")
