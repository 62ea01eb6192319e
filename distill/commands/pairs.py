"""`distill pairs` and `distill pairs-merge`: the command line of :mod:`training.pairs`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.errors import file_errors
from core.sharding import INDEX_ENV, NUM_SHARDS_ENV, resolve_shard
from distill.commands import argtypes
from editing.directions import DEFAULT_LAYERS
from training.options import options_from_args
from training.pairs import PREVIEW, PairsOptions, edits_from_flags, make_pairs, merge_datasets, shard_seeds


def run(args: argparse.Namespace) -> int:
    """``distill pairs``: the options from the flags (several named directions become ``edits``)."""
    t0 = time.perf_counter()
    edits = edits_from_flags(args.direction, args.alpha, args.alpha_range)
    if edits is None:  # the one-direction spelling, as it always was
        one = {"direction": args.direction[0], "alpha": args.alpha[-1] if args.alpha else 1.5}
        one["alpha_range"] = args.alpha_range[-1] if args.alpha_range else None
    else:
        one = {"direction": None, "alpha": 1.5, "alpha_range": None}
    with file_errors(args.out):
        done = make_pairs(options_from_args(PairsOptions, args, edits=edits, **one))
    shard, num_shards = resolve_shard(args.shard, args.num_shards)
    count = f"{len(done.rows)} pairs"
    if num_shards > 1:  # other shards may still be writing into the same folder: say whose pairs are done
        mine = shard_seeds(args.seed_start, args.num, shard, num_shards)
        count = (
            f"shard {shard} of {num_shards} done ({sum(s in done.rows for s in mine)} of its {len(mine)} pairs); "
            f"the folder holds {len(done.rows)} of {args.num} so far"
        )
    print(
        f"{args.out}: {count} ({time.perf_counter() - t0:.1f} s this run); preview {Path(args.out) / PREVIEW}"
    )
    return 0


def run_merge(args: argparse.Namespace) -> int:
    with file_errors(args.out, "OUT"):
        merged = merge_datasets(args.out, args.sources)
    print(f"{args.out}: {len(merged.rows)} pairs merged from {len(args.sources)} folders")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pairs",
        help="generate (original, edited) pairs from a StyleGAN2 teacher and a direction",
        description="Example: distill pairs --generator G.pkl --direction age.npy --alpha 1.5 "
        "--truncation 0.7 --num 10000 --out data/age. Several edits in one dataset: name them, "
        "--direction age=age.npy --direction smile=smile.npy [--alpha age=2 --alpha-range age=0:1.5 ...]; each "
        "pair then gets a strength vector from its seed (mostly one or two edits active, some none), recorded "
        "as 'edits' in manifest.jsonl. Interrupt and re-run to resume. In a Kubernetes Indexed "
        f"Job, each pod takes its shard from {INDEX_ENV} when --shard is not given, and the number of shards "
        f"from {NUM_SHARDS_ENV} when --num-shards is not given (deploy/k8s/pairs-job.yaml).",
    )
    p.add_argument(
        "--generator", required=True, help="StyleGAN2 checkpoint (NVlabs .pkl, rosinality .pt, ours)"
    )
    p.add_argument(
        "--direction",
        type=argtypes.direction,
        action="append",
        required=True,
        metavar="[NAME=]FILE",
        help=".npy/.pt of shape (w_dim,), (1,w_dim) or (num_ws,w_dim); NAME=FILE, repeated: several named edits",
    )
    p.add_argument(
        "--alpha",
        type=argtypes.alpha,
        action="append",
        metavar="[NAME=]A",
        help="edit strength: w' = w + alpha * d (with --alpha-range: the unit, strength 1.0; default 1.5); "
        "NAME=A for a named edit (default: its sidecar's suggested alpha)",
    )
    p.add_argument(
        "--alpha-range",
        type=argtypes.named_strength_range,
        action="append",
        metavar="[NAME=]LO:HI",
        help="a strength per pair, uniform in LO:HI in units of --alpha (relative: w' = w + s * alpha * d, "
        "written --alpha-range=-1.5:1.5), drawn from the pair's seed and recorded as 'strength' in manifest.jsonl; "
        "for a conditional student (default: every pair at --alpha); NAME=LO:HI: the range of a named edit "
        "when the pair applies it (default -1:1)",
    )
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi")
    p.add_argument("--num", type=int, default=10000, help="number of seeds (all shards together)")
    p.add_argument("--out", required=True, help="dataset folder (train_A/, train_B/, manifest.jsonl, ...)")
    p.add_argument(
        "--layers", type=argtypes.layers, default=DEFAULT_LAYERS, help="W+ layers START:STOP (default 0:8)"
    )
    p.add_argument("--normalize", action="store_true", help="scale the direction to unit length per layer")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed-start", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--shard",
        type=int,
        default=None,
        help=f"this process's shard i: seeds with seed %% n == i (default: ${INDEX_ENV}, "
        "an Indexed Job's index, else 0)",
    )
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help=f"the number of shards n (default: ${NUM_SHARDS_ENV}, else 1)",
    )
    p.add_argument("--noise-mode", choices=("const", "none", "random"), default="const")
    p.set_defaults(func=run)

    m = subparsers.add_parser(
        "pairs-merge",
        help="merge pair folders made by shards into one dataset",
        description="Example: distill pairs-merge data/age data/age-0 data/age-1",
    )
    m.add_argument("out", help="merged dataset folder")
    m.add_argument("sources", nargs="+", help="shard folders (same generation settings)")
    m.set_defaults(func=run_merge)
