"""`distill direction fit` and `fit-set`: the command line of :mod:`training.directions` (latent directions in W
from scored samples; ``fit-set`` fits several attributes at once, decorrelated, and reports their leak)."""

from __future__ import annotations

import argparse

from distill.commands import argtypes
from editing.directions import DEFAULT_LAYERS
from training.directions import METHODS, MODES, FitOptions, FitSetOptions, run_fit, run_fit_set
from training.options import add_scorer_input_arguments, options_from_args


def run(args: argparse.Namespace) -> int:
    """``distill direction fit``: the options from the flags."""
    run_fit(options_from_args(FitOptions, args))
    return 0


def run_set(args: argparse.Namespace) -> int:
    """``distill direction fit-set``: the options from the flags."""
    run_fit_set(options_from_args(FitSetOptions, args))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("direction", help="fit a latent direction in W from scored samples")
    sub = p.add_subparsers(dest="direction_command", required=True, metavar="ACTION")
    f = sub.add_parser(
        "fit",
        help="sample seeds, score them (CSV or ONNX model), fit a direction, save .npy + .json",
        description="Fit a latent direction. Example: distill direction fit --generator G.pkl "
        "--scorer age.onnx --output-index 0 --input-size 64 --num 2000 --method regression "
        "--attribute age --out age.npy",
    )
    f.add_argument("--generator", required=True, help="StyleGAN2 checkpoint (.pkl/.pt)")
    f.add_argument("--scores", help="CSV with columns seed,<score> (seeds are mapped with the CLI's seed->z)")
    f.add_argument("--column", help="score column of --scores when it has several")
    f.add_argument("--scorer", help="ONNX model that scores the synthesized images")
    f.add_argument("--output-index", type=int, default=0, help="index of the score in the model's output")
    add_scorer_input_arguments(f)
    f.add_argument("--num", type=int, default=2000, help="samples to draw with --scorer")
    f.add_argument("--seed-start", type=int, default=0)
    f.add_argument(
        "--method",
        choices=(*METHODS, "all"),
        default="regression",
        help="estimator; 'all' fits each, measures how far it moves the images, saves the strongest",
    )
    f.add_argument(
        "--check",
        type=int,
        default=32,
        help="with --scorer: unseen seeds edited at the suggested alpha and re-scored (0: skip)",
    )
    f.add_argument("--threshold", type=float, help="class split for classifiers/accuracy (default: median)")
    f.add_argument("--attribute", required=True, help="name of the attribute, e.g. age")
    f.add_argument(
        "--layers", type=argtypes.layers, default=DEFAULT_LAYERS, help="suggested W+ layers START:STOP"
    )
    f.add_argument("--truncation", type=float, default=1.0, help="truncation psi of the sampled w")
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--device", default="auto")
    f.add_argument("--out", required=True, help="output .npy (a .json sidecar is written beside it)")
    f.set_defaults(func=run)

    m = sub.add_parser(
        "fit-set",
        help="fit one direction per attribute, each decorrelated from the others; report how much each leaks",
        description="Fit several directions from one scored sample, each decorrelated from the other attributes "
        "(conditional: InterFaceGAN's projection orthogonal to their normals; joint: regression of w on all "
        "scores together), and measure on unseen seeds how much each edit changes every attribute per unit "
        "of its own (leak.md / leak.json, and each sidecar). Example: distill direction fit-set --generator "
        "G.pt --scorer attributes.onnx --attribute age=0 --attribute smile=1 --attribute glasses=6 "
        "--mode conditional --out-dir directions/",
    )
    m.add_argument("--generator", required=True, help="StyleGAN2 checkpoint (.pkl/.pt)")
    m.add_argument("--scorer", required=True, help="ONNX model that scores the synthesized images")
    m.add_argument(
        "--attribute",
        action="append",
        required=True,
        metavar="NAME=INDEX",
        help="an attribute and its column in the scorer's output; repeat for each (at least two)",
    )
    m.add_argument(
        "--mode",
        choices=MODES,
        default="conditional",
        help="marginal: each alone; conditional: projected off the others' normals; joint: regression on all",
    )
    m.add_argument(
        "--method", choices=METHODS, default="regression", help="primal estimator (not with joint)"
    )
    add_scorer_input_arguments(m)
    m.add_argument("--num", type=int, default=2000, help="samples to draw and fit on")
    m.add_argument("--seed-start", type=int, default=0)
    m.add_argument("--check", type=int, default=200, help="unseen seeds each direction is measured on")
    m.add_argument(
        "--layers", type=argtypes.layers, default=DEFAULT_LAYERS, help="W+ layers START:STOP of the edits"
    )
    m.add_argument("--truncation", type=float, default=1.0, help="truncation psi of the sampled w")
    m.add_argument("--batch-size", type=int, default=16)
    m.add_argument("--device", default="auto")
    m.add_argument(
        "--out-dir", required=True, help="folder for NAME.npy (+ .json) each, leak.json and leak.md"
    )
    m.set_defaults(func=run_set)
