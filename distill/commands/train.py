"""`distill train`: the command line of :mod:`training.trainer` (a Pix2PixHD student on a pair dataset)."""

from __future__ import annotations

import argparse

import training.trainer
from core.errors import file_errors
from training.options import MODEL_FIELDS, add_model_arguments, model_overrides, options_from_args
from training.trainer import TrainOptions, train
from training.trainer.options import RESUMED_OPTIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the Pix2PixHD student on a pair dataset",
        description=training.trainer.__doc__.split("\n\n")[0],
    )
    p.add_argument("dataset", help="pair dataset folder (manifest.jsonl, train_A/, train_B/)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, samples, metrics)")
    add_model_arguments(p)
    p.add_argument(
        "--epochs", type=int, default=None, help="total epochs (niter + niter_decay; half decay if alone)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per step per process (default 4)")
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop (and checkpoint) after this many steps in all"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="also checkpoint every N steps (default: at each epoch's end only); the one before is kept "
        "as previous.pt, for --resume when latest.pt cannot be read",
    )
    p.add_argument(
        "--sample-every", type=int, default=None, help="write a sample grid every N steps (default 500)"
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=None,
        help="append mean losses to metrics.jsonl every N steps (default 10)",
    )
    p.add_argument(
        "--vgg19", default=None, help="torchvision vgg19-dcbb9e9d.pth for the VGG loss (off without it)"
    )
    p.add_argument(
        "--device",
        default=None,
        help="auto (default), cpu, cuda or cuda:N (torchrun: the local rank's GPU)",
    )
    p.add_argument(
        "--amp",
        default=None,
        choices=["auto", "off", "bf16", "fp16"],
        help="mixed precision (auto: bf16, or fp16 + loss scaling, on CUDA; off on CPU, where bf16 is far slower)",
    )
    p.add_argument("--workers", type=int, default=None, help="data loading processes (default 2)")
    p.add_argument(
        "--seed", type=int, default=None, help="initialisation, shuffling, flips and split (default 0)"
    )
    p.add_argument(
        "--val-fraction", type=float, default=None, help="held-out share of kept pairs (default 0.05)"
    )
    p.add_argument(
        "--load-size", type=int, default=None, help="resize to this width (multiple of the stride)"
    )
    p.add_argument(
        "--no-flip", dest="flip", action="store_false", default=None, help="no horizontal flip augmentation"
    )
    p.add_argument(
        "--augment",
        default=None,
        metavar="SPEC",
        help="paired augmentation, e.g. shift=4,sharpness=0.5,noise=0.3,jpeg=0.3 (training/augment.py; default none)",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="GENERATOR",
        help="a new run's generator starts from these weights: a distill checkpoint, NVIDIA latest_net_G.pth "
        "or a model-zoo entry's model.onnx (instance norms folded for --norm none)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where it stopped, with its options (--epochs, --max-steps, "
        "--sample-every, ...); an option given again overrides the run's and is reported",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Flags left out are None here: the dataclass defaults fill them on a new run, the checkpoint on --resume.
    given = [k for k in RESUMED_OPTIONS if getattr(args, k) is not None]
    set_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if v is not None})
    with file_errors(args.out):
        opts = options_from_args(TrainOptions, set_args, consumed=("epochs", "resume", *MODEL_FIELDS))
        result = train(opts, model_overrides(args), resume=args.resume, epochs=args.epochs, given=given)
    if result.status == "interrupted":
        return 130
    return 0
