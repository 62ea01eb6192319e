"""`distill quickstart`: the command line of :mod:`training.quickstart` (the whole pipeline offline on a tiny random teacher)."""

from __future__ import annotations

import argparse
from pathlib import Path

import training.quickstart
from training.quickstart import run_quickstart


def run(args: argparse.Namespace) -> int:
    run_quickstart(Path(args.out), resolution=args.resolution, num_pairs=args.pairs, steps=args.steps)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="run the whole pipeline offline on a tiny random teacher",
        description=training.quickstart.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/quickstart", help="working folder (default runs/quickstart)")
    p.add_argument("--resolution", type=int, default=64, help="teacher and student resolution (default 64)")
    p.add_argument("--pairs", type=int, default=96, help="number of pairs (default 96)")
    p.add_argument("--steps", type=int, default=120, help="student training steps (default 120)")
    p.set_defaults(func=run)
