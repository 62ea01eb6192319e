"""`distill filter`: the command line of :mod:`training.filters` (score pairs and mark keep/reject in the manifest)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.filters import SIDES, FilterOptions, run_filter
from training.options import (
    ACTIVATIONS,
    add_scorer_input_arguments,
    deprecated_alias,
    options_from_args,
    parse_channels,
    parse_input_size,
)


def run(args: argparse.Namespace) -> int:
    """``distill filter``: the options from the flags."""
    report = run_filter(options_from_args(FilterOptions, args))
    print(
        f"{args.dataset}: kept {report['kept']} of {report['total']} pairs, "
        f"rejected {report['rejected']} ({100 * report['rejection_rate']:.1f}%)"
    )
    for reason, n in report["reasons"].items():
        print(f"  {n:6d}  {reason}")
    if report["warning"]:
        print(f"warning: {report['warning']}", file=sys.stderr)
    print(f"report: {Path(args.dataset) / 'filter_report.md'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "filter",
        help="score pairs (face detector, ONNX models) and mark keep/reject in the manifest",
        description="Never deletes. Example: distill filter data/age --face-detector --scorer age.onnx "
        "--input-size 64 --attribute age=0 --keep age=18:65 --on a",
    )
    p.add_argument("dataset", help="pair dataset folder (made by `distill pairs`)")
    p.add_argument("--spec", help="JSON file with several scorers (see the module docs)")
    p.add_argument(
        "--on", choices=tuple(SIDES), default="both", help="score originals (a), edited (b) or both"
    )
    p.add_argument("--face-detector", action="store_true", help="reject images without a face (OpenCV Haar)")
    p.add_argument("--face-min-neighbors", type=int, default=5, help="Haar minNeighbors (higher = stricter)")
    p.add_argument(
        "--face-min-size", type=float, default=0.1, help="smallest face, as a fraction of the image side"
    )
    p.add_argument(
        "--face-min-confidence", type=float, help="also reject faces with a lower cascade level weight"
    )
    p.add_argument("--scorer", metavar="MODEL.onnx", help="ONNX classifier/regressor taking NCHW float RGB")
    p.add_argument(
        "--attribute",
        dest="attributes",
        metavar="NAME=INDEX",
        action="append",
        help="a scorer output to keep by: its name and column in the first output (repeatable; "
        "default score=0)",
    )
    add_scorer_input_arguments(p)
    p.add_argument("--keep", action="append", help="NAME=LOW:HIGH keep range of an --attribute (repeatable)")
    # The spellings before the scorer options were shared with evaluate and direction fit: hidden, still read.
    deprecated_alias(p, "--onnx", "--scorer")
    deprecated_alias(p, "--onnx-output", "--attribute", dest="attributes", action="append")
    deprecated_alias(p, "--onnx-input-size", "--input-size", dest="input_size", type=parse_input_size)
    deprecated_alias(p, "--onnx-mean", "--mean", dest="mean", type=parse_channels)
    deprecated_alias(p, "--onnx-std", "--std", dest="std", type=parse_channels)
    deprecated_alias(p, "--onnx-activation", "--activation", dest="activation", choices=ACTIVATIONS)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)
