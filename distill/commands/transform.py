"""`distill transform`: the command line of :mod:`app.offline` (``/transform`` over files and folders)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from app.offline import RESULTS, TransformOptions, transform_files
from app.routers.transform import Align, Faces, Format, Size
from core.errors import DistillError
from core.sharding import INDEX_ENV, NUM_SHARDS_ENV, resolve_shard
from distill.commands import argtypes
from distill.commands.zoo import add_zoo_argument


def edits_of(pairs: list[tuple[str, float]] | None) -> dict[str, float] | None:
    """The ``--edit NAME=S`` options as the ``edits`` field; a name given twice is a usage error."""
    if not pairs:
        return None
    names = [name for name, _ in pairs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise DistillError(f"--edit {twice}=...: given twice; give each edit once")
    return dict(pairs)


def run(args: argparse.Namespace) -> int:
    """Edit every input; the summary line, and exit status 0 however many inputs were refused."""
    shard, num_shards = resolve_shard(args.shard, args.num_shards)
    opts = TransformOptions(
        inputs=tuple(args.inputs),
        model=args.model,
        out=args.out,
        strength=args.strength,
        edits=edits_of(args.edit),
        align=args.align,
        faces=args.faces,
        size=args.size,
        format=args.format,
        shard=shard,
        num_shards=num_shards,
        model_zoo=args.model_zoo,
        progress=not args.quiet,
    )
    print(transform_files(opts).line())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transform",
        help="edit photos (files and folders) with a model-zoo entry, as POST /transform does",
        description="Example: distill transform photos/ --model toyfaces-age --out edited --size original. "
        "Each input goes through the service's /transform path (same limits, error codes, framing, engine); "
        f"OUT/{RESULTS} gets one row per input. Re-run to resume. In a Kubernetes Indexed Job, each pod takes "
        f"its shard from {INDEX_ENV} when --shard is not given, and the number of shards from "
        f"{NUM_SHARDS_ENV} when --num-shards is not given.",
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUTS", help="photos, or folders searched recursively"
    )
    p.add_argument("--model", required=True, help="model-zoo entry (see `distill zoo list`)")
    p.add_argument("--out", required=True, type=Path, help=f"output folder (edited images, {RESULTS})")
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="edit strength for a strength-conditioned model, relative (1.0 = the entry's alpha; default: "
        "the manifest's); fixed-strength models and students of several edits (see --edit) take none",
    )
    p.add_argument(
        "--edit",
        action="append",
        type=argtypes.edit_strength,
        metavar="NAME=S",
        help="one edit's relative strength by name, within its range (`distill models show`, /models' edits; repeatable: "
        "--edit age=1 --edit smile=-0.5); edits left out get their default (0, off, for a student of "
        "several edits); not with --strength",
    )
    p.add_argument(
        "--align",
        choices=get_args(Align),
        default="auto",
        help="auto: frame as the model expects (FFHQ alignment or a centred crop); off: centred crop",
    )
    p.add_argument(
        "--faces",
        choices=get_args(Faces),
        default="largest",
        help="with FFHQ alignment: edit the largest face, or all (needs --size original)",
    )
    p.add_argument(
        "--size",
        choices=get_args(Size),
        default="native",
        help="native: the model's size; crop: the crop's size in the photo; original: the photo, edit pasted back",
    )
    p.add_argument("--format", choices=get_args(Format), default="jpeg", help="encoding of the outputs")
    p.add_argument(
        "--shard",
        type=int,
        default=None,
        help=f"this process's shard i: every n-th input of the sorted list from i (default: ${INDEX_ENV}, "
        "an Indexed Job's index, else 0)",
    )
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help=f"the number of shards n (default: ${NUM_SHARDS_ENV}, else 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_zoo_argument(p)
    p.set_defaults(func=run)
