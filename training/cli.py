"""`distill`: the pipeline's command line, one subcommand per stage.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets ``func``.
User errors (:class:`DistillError`) print one line naming the file and the fix, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from training.errors import DistillError

STAGES = (  # in pipeline order, as `distill --help` lists them
    "training.teacher",
    "training.directions",
    "training.pairs",
    "training.filters",
    "training.estimate",
    "training.trainer",
    "training.export",
    "model_zoo.cli",
    "training.alignment.cli",
    "training.evaluate",
    "app.cli",
    "training.quickstart",
    "training.toyfaces",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in STAGES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DistillError as e:
        print(f"distill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
