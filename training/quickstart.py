"""`distill quickstart`: the whole pipeline, offline, on a tiny UNTRAINED random StyleGAN2 teacher.

It runs the same stage commands a user runs on a real checkpoint, so it doubles as the pipeline's
smoke test and as the no-download way to get a model-zoo entry the service can load:

1. ``distill teacher random``: a tiny randomly initialised StyleGAN2 (clearly marked untrained);
2. ``distill direction fit --scores``: a *brightness* direction, fitted by regression of w on the mean
   brightness of each sample (a real fit: the edit makes the teacher's pictures brighter);
3. ``distill pairs``: (original, brighter) pairs;
4. ``distill train``: a few Pix2PixHD steps (the ``tiny`` preset);
5. ``distill export``: ONNX + INT8 variant into ``OUT/zoo/quickstart-brightness``.

The pictures are abstract textures, not faces: this shows the plumbing, not a useful model.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from training.errors import DistillError

ENTRY = "quickstart-brightness"


def _stage(argv: list[str]) -> None:
    from training.cli import main

    print(f"\n$ distill {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise DistillError(f"quickstart stopped: `distill {argv[0]}` failed (see above)")


def write_brightness_scores(teacher: Path, out: Path, num: int, truncation: float) -> Path:
    """CSV ``seed,brightness``: mean pixel value in [-1, 1] of each seed's image."""
    from training.stylegan2 import load_generator
    from training.teacher import sample_images

    G = load_generator(teacher)
    seeds = list(range(num))
    brightness = sample_images(G, seeds, truncation=truncation).mean(dim=(1, 2, 3)).tolist()
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "brightness"])
        writer.writerows(zip(seeds, brightness, strict=True))
    return out


def run_quickstart(out: Path, resolution: int = 64, num_pairs: int = 96, steps: int = 120,
                   num_fit: int = 512, alpha: float = 2.0, truncation: float = 0.7) -> Path:
    """Run every stage into ``out``; return the model-zoo root that holds the exported entry."""
    out.mkdir(parents=True, exist_ok=True)
    teacher, direction, data, run = out / "teacher.pt", out / "brightness.npy", out / "pairs", out / "run"
    zoo = out / "zoo"
    _stage(["teacher", "random", "--resolution", str(resolution), "--out", str(teacher)])
    scores = write_brightness_scores(teacher, out / "brightness.csv", num_fit, truncation)
    _stage(["direction", "fit", "--generator", str(teacher), "--scores", str(scores), "--method", "regression",
            "--attribute", "brightness", "--truncation", str(truncation), "--out", str(direction)])
    _stage(["pairs", "--generator", str(teacher), "--direction", str(direction), "--alpha", str(alpha),
            "--truncation", str(truncation), "--num", str(num_pairs), "--out", str(data)])
    train = ["train", str(data), "--out", str(run), "--preset", "tiny", "--max-steps", str(steps),
             "--batch-size", "4", "--workers", "0", "--sample-every", str(steps)]
    _stage(train + (["--resume"] if (run / "checkpoints" / "latest.pt").is_file() else []))
    _stage(["export", str(run), "--out", str(zoo / ENTRY), "--variants", "int8", "--overwrite",
            "--description", "UNTRAINED random teacher, brightness edit: a pipeline smoke test, not a face model"])
    print(f"\nquickstart done. Serve it with:\n  DISTILL_MODEL_ZOO={zoo} distill serve")
    return zoo


def run(args: argparse.Namespace) -> int:
    run_quickstart(Path(args.out), resolution=args.resolution, num_pairs=args.pairs, steps=args.steps)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("quickstart", help="run the whole pipeline offline on a tiny random teacher",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="working folder (default runs/quickstart)")
    p.add_argument("--resolution", type=int, default=64, help="teacher and student resolution (default 64)")
    p.add_argument("--pairs", type=int, default=96, help="number of pairs (default 96)")
    p.add_argument("--steps", type=int, default=120, help="student training steps (default 120)")
    p.set_defaults(func=run)
