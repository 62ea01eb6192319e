"""`distill align`: the command line of :mod:`training.align` (FFHQ-aligned crops of a folder of photos)."""

from __future__ import annotations

import argparse

from editing.alignment.landmarks import DETECT_MAX_SIDE
from training.align import MAX_SIZE, AlignOptions, align_folder
from training.options import options_from_args


def run(args: argparse.Namespace) -> int:
    done = align_folder(options_from_args(AlignOptions, args))
    print(
        f"aligned {done.faces} faces, rejected {done.rejected} photos, skipped {done.skipped} "
        f"already done; {done.rows}, report {done.report}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "align",
        help="FFHQ-aligned face crops of photos, with alignment.jsonl",
        description="Example: distill align photos/ --out data/aligned --size 1024 --faces all. Detects faces "
        "(dlib), finds 68 landmarks and crops each face as FFHQ was built; writes the crops, "
        "alignment.jsonl (quad and landmarks in the photo) and report.md. Re-run to resume.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTOS", help="photos, or folders searched recursively")
    p.add_argument("--out", required=True, help="output folder (crops, alignment.jsonl, report.md)")
    p.add_argument(
        "--size",
        type=int,
        default=1024,
        help=f"side of the aligned crops in pixels, 8 to {MAX_SIZE} (default 1024, FFHQ's)",
    )
    p.add_argument(
        "--faces",
        choices=("largest", "all"),
        default="largest",
        help="crop the largest face of each photo (default) or every face",
    )
    p.add_argument(
        "--detect-size",
        type=int,
        default=DETECT_MAX_SIDE,
        help=f"detect on a copy this many pixels on its longer side (default {DETECT_MAX_SIDE}; "
        "larger finds smaller faces, slower); landmarks always use the full photo",
    )
    p.set_defaults(func=run)
