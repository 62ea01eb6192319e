"""`distill export`: the command line of :mod:`training.export` (a trained student -> ONNX -> a model-zoo entry)."""

from __future__ import annotations

import argparse
import sys

from core.errors import DistillError, FieldError
from engines.select import MIN_PSNR_DB
from model_zoo.registry import ALIGNMENTS
from training.directions import parse_layers
from training.export import ExportOptions, export_entry
from training.export.graph import OPSET
from training.options import options_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained student to ONNX and write a model-zoo entry",
        description="Export RUN (a `distill train` folder or a generator checkpoint such as NVIDIA's latest_net_G.pth) "
        "to ONNX, check it against PyTorch, build optional fp16/int8 variants gated on their error, and write "
        "a checksummed model-zoo entry.",
    )
    p.add_argument(
        "run",
        metavar="RUN",
        help="training run folder (RUN/checkpoints/latest.pt) or generator checkpoint file",
    )
    p.add_argument("--out", required=True, help="entry folder, e.g. model_zoo/age-slim-256")
    p.add_argument("--name", help="entry name in the manifest (default: the --out folder name)")
    p.add_argument("--description", help="one line for `distill models list` and the service")
    p.add_argument(
        "--variants",
        default="",
        help="comma list of extra variants: fp16 (CUDA provider), int8 (CPU provider)",
    )
    p.add_argument(
        "--calibration",
        metavar="DATASET",
        help="pair dataset for int8 calibration, variant error and the preview (default: the run's dataset)",
    )
    p.add_argument(
        "--num-calibration", type=int, default=64, help="training inputs used to calibrate int8 (default 64)"
    )
    p.add_argument(
        "--num-eval", type=int, default=16, help="held-out inputs used to measure variant error (default 16)"
    )
    p.add_argument(
        "--min-variant-psnr",
        type=float,
        default=MIN_PSNR_DB,
        help=f"refuse a variant whose PSNR against fp32 is below this (default {MIN_PSNR_DB:g} dB)",
    )
    p.add_argument(
        "--teacher", help="StyleGAN2 teacher to ship for the legacy endpoint (default: the dataset's)"
    )
    p.add_argument(
        "--direction", help="latent direction to ship for the legacy endpoint (default: the dataset's)"
    )
    p.add_argument("--alpha", type=float, help="edit strength (default: the dataset's)")
    p.add_argument(
        "--layers",
        nargs="+",
        metavar="START:STOP",
        help="W+ layers edited, e.g. 0:8, as in distill pairs (default: the dataset's)",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="the direction is normalized per layer (default: the dataset's)",
    )
    p.add_argument("--attribute", help="name of the edit, e.g. age (default: the direction's)")
    p.add_argument("--size", help="native input size HxW (default: the training size from run.json)")
    p.add_argument(
        "--alignment",
        choices=ALIGNMENTS,
        default="none",
        help="input framing the student expects: ffhq (a teacher trained on FFHQ-aligned faces: the service "
        "aligns uploads and pastes the edit back) or none (the upload is centre-cropped; default)",
    )
    p.add_argument(
        "--samples",
        nargs="+",
        metavar="IMAGE",
        default=None,
        help="more demo-page inputs to ship in samples/ beside the held-out teacher originals (e.g. real photos)",
    )
    p.add_argument(
        "--domain",
        action="append",
        metavar="NAME",
        default=None,
        help="a keep range of the pairs' filter report that defines the student's domain (repeat for more; "
        "default: every range on the originals); the entry ships its scorer and the service checks inputs",
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument(
        "--timing-repeats",
        type=int,
        default=5,
        help="timed runs per variant and engine at the native size (0: skip fp32 timing and the "
        "engine table)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing entry at --out")
    p.set_defaults(func=run)


def layers_option(values: list[str] | None) -> tuple[int, int] | None:
    """``--layers 0:8``; the old ``--layers 0 8`` still works, with a note on stderr."""
    if values is None:
        return None
    if len(values) == 2 and all(v.lstrip("-").isdigit() for v in values):
        print(
            f"distill export: --layers {values[0]} {values[1]} is deprecated; write --layers {values[0]}:{values[1]}",
            file=sys.stderr,
        )
        values = [f"{values[0]}:{values[1]}"]
    if len(values) != 1:
        raise DistillError(f"--layers {' '.join(values)}: expected START:STOP, e.g. 0:8")
    try:
        return parse_layers(values[0])
    except FieldError as e:  # the library names the field; this command line names its flag
        raise DistillError(e.as_flag()) from None


def run(args: argparse.Namespace) -> int:
    export_entry(
        options_from_args(
            ExportOptions,
            args,
            layers=layers_option(args.layers),
            variants=[v for v in args.variants.split(",") if v],
        )
    )
    return 0
