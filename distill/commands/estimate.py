"""`distill estimate`: the command line of :mod:`training.estimate` (a run's wall time and cost from a few timed iterations)."""

from __future__ import annotations

import argparse

import training.estimate
from core.atomic import atomic_write_json
from training.estimate import SEED_FIGURE, estimate
from training.options import add_model_arguments, model_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "estimate",
        help="time a few training iterations here and extrapolate a whole run's wall time and cost",
        description=training.estimate.__doc__.split("\n\n")[0],
    )
    p.add_argument("dataset", help="pair dataset folder (its kept pairs and image size are used)")
    p.add_argument("--epochs", type=int, default=200, help="epochs of the whole run (default 200)")
    p.add_argument(
        "--price-per-hour",
        type=float,
        default=0.526,
        help="machine price in $/h (default 0.526, g4dn.xlarge)",
    )
    add_model_arguments(p, schedule=False)
    p.add_argument("--batch-size", type=int, default=4, help="images per iteration (default 4)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "off", "bf16", "fp16"],
        help="mixed precision, as in `distill train`",
    )
    p.add_argument("--iters", type=int, default=5, help="timed iterations (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    p.add_argument(
        "--load-size", type=int, default=None, help="train at this width, as `distill train --load-size`"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="held-out share, as in `distill train` (default 0.05)",
    )
    p.add_argument("--vgg19", default=None, help="include the VGG19 loss (torchvision weights path)")
    p.add_argument("--json", default=None, help="also write the estimate to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    est = estimate(
        args.dataset,
        epochs=args.epochs,
        price_per_hour=args.price_per_hour,
        preset=args.preset or "slim",
        overrides=model_overrides(args),
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        iters=args.iters,
        warmup=args.warmup,
        load_size=args.load_size,
        val_fraction=args.val_fraction,
        vgg19=args.vgg19,
    )
    print(
        f"distill estimate: {args.dataset}, preset {est.preset}, {est.width}x{est.height} px, batch {est.batch_size}, "
        f"{est.device}, amp {est.amp}"
    )
    print(est.table())
    print(f"({SEED_FIGURE})")
    if args.json:
        atomic_write_json(args.json, est.to_json())
    return 0
