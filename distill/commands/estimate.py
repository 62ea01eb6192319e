"""`distill estimate`: the command line of :mod:`training.estimate` (a run's wall time and cost from a few timed iterations)."""

from __future__ import annotations

import argparse

import training.estimate
from core.atomic import atomic_write_json
from training.estimate import DEFAULT_EFFICIENCY, SEED_FIGURE, estimate, matching_gpu
from training.options import add_model_arguments, model_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "estimate",
        help="time a few training iterations here, extrapolate a whole run's time and cost, project it onto GPUs",
        description=training.estimate.__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "dataset",
        nargs="?",
        default=None,
        help="pair dataset folder (its kept pairs and image size); optional with --pairs and --load-size",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=None,
        metavar="N",
        help="the planned data set: N kept pairs (default: those of the dataset)",
    )
    p.add_argument("--epochs", type=int, default=200, help="epochs of the whole run (default 200)")
    p.add_argument(
        "--price-per-hour",
        type=float,
        default=None,
        help="this machine's price in $/h, for the measured run's cost (default: no cost; the GPU projections "
        "use each GPU's own price)",
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
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop timing after this long, once one iteration is timed (default 120)",
    )
    p.add_argument(
        "--efficiency",
        type=float,
        default=DEFAULT_EFFICIENCY,
        help=f"share of a GPU's datasheet throughput the projections assume (default {DEFAULT_EFFICIENCY})",
    )
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
        pairs=args.pairs,
        efficiency=args.efficiency,
        max_seconds=args.max_seconds,
        progress=True,
    )
    source = args.dataset or "no dataset (random images)"
    print(
        f"distill estimate: {source}, preset {est.preset}, {est.width}x{est.height} px, batch {est.batch_size}"
    )
    print(f"\nmeasured here, on {est.device}, amp {est.amp}:")
    print(est.table())
    if est.flops_per_iter is not None:
        eff = est.projections[0].efficiency if est.projections else args.efficiency
        print(
            f"\nprojected for GPUs (a projection, not a measurement): {est.flops_per_iter / 1e12:.3g} TFLOP per "
            f"iteration (counted by torch's FlopCounterMode on this machine) / (the GPU's datasheet dense fp16/bf16 "
            f"tensor TFLOPS x an assumed {eff:.0%} efficiency, --efficiency), mixed precision as `distill train` "
            "uses on CUDA, kernel-launch and data-loading overheads not modelled (they dominate small models); "
            "memory: the predicted need measured here (fp32) against the GPU's:"
        )
        print(est.projection_table())
        gpu = matching_gpu(est.device)
        if gpu is not None:
            proj = next(p for p in est.projections if p.gpu == gpu)
            off = proj.seconds_per_iter / est.seconds_per_iter - 1
            print(
                f"this {gpu}: measured {est.seconds_per_iter:.4f} s per iteration, projected "
                f"{proj.seconds_per_iter:.4f} s: the projection is off by {off:+.0%} (projected / measured - 1)"
            )
    print(f"({SEED_FIGURE})")
    if args.json:
        atomic_write_json(args.json, est.to_json())
    return 0
