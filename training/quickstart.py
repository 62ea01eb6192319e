"""`distill quickstart`: the whole pipeline, offline, on a tiny UNTRAINED random StyleGAN2 teacher.

It runs the same stages a user runs on a real checkpoint (as functions with their options objects, the
teacher as its command), so it doubles as the pipeline's smoke test and as the no-download way to get a
model-zoo entry the service can load:

1. ``distill teacher random``: a tiny randomly initialised StyleGAN2 (clearly marked untrained);
2. ``distill direction fit --scores``: a *brightness* direction, fitted by regression of w on the mean
   brightness of each sample (a real fit: the edit makes the teacher's pictures brighter);
3. ``distill pairs``: (original, brighter) pairs;
4. ``distill train``: a few Pix2PixHD steps (the ``tiny`` preset);
5. ``distill export``: ONNX + INT8 variant into ``OUT/zoo/quickstart-brightness``.

The pictures are abstract textures, not faces: this shows the plumbing, not a useful model.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from core.errors import file_errors
from core.runfiles import CHECKPOINT

ENTRY = "quickstart-brightness"


def _call(name: str, func: Any, opts: Any, **kwargs: Any) -> Any:
    """Run one stage function on its options, saying which; disk-full and permission errors as one line."""
    print(f"\n[{name}] {func.__module__}.{func.__name__}({opts})", flush=True)
    with file_errors(opts.out):
        return func(opts, **kwargs)


def write_brightness_scores(teacher: Path, out: Path, num: int, truncation: float) -> Path:
    """CSV ``seed,brightness``: mean pixel value in [-1, 1] of each seed's image."""
    from networks.stylegan2 import load_generator
    from training.teacher import sample_images

    G = load_generator(teacher)
    seeds = list(range(num))
    brightness = sample_images(G, seeds, truncation=truncation).mean(dim=(1, 2, 3)).tolist()
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "brightness"])
        writer.writerows(zip(seeds, brightness, strict=True))
    return out


def run_quickstart(
    out: Path,
    resolution: int = 64,
    num_pairs: int = 96,
    steps: int = 120,
    num_fit: int = 512,
    alpha: float = 2.0,
    truncation: float = 0.7,
) -> Path:
    """Run every stage into ``out``; return the model-zoo root that holds the exported entry."""
    out.mkdir(parents=True, exist_ok=True)
    teacher, direction, data, run = out / "teacher.pt", out / "brightness.npy", out / "pairs", out / "run"
    zoo = out / "zoo"
    from training.directions import FitOptions, run_fit
    from training.export import ExportOptions, export_entry
    from training.pairs import PairsOptions, make_pairs
    from training.teacher import write_random_generator
    from training.trainer import TrainOptions, train

    print(f"\n$ distill teacher random --resolution {resolution} --out {teacher}", flush=True)
    print(write_random_generator(teacher, resolution))
    scores = write_brightness_scores(teacher, out / "brightness.csv", num_fit, truncation)
    _call(
        "direction",
        run_fit,
        FitOptions(
            generator=teacher,
            scores=scores,
            method="regression",
            attribute="brightness",
            truncation=truncation,
            out=direction,
        ),
    )
    _call(
        "pairs",
        make_pairs,
        PairsOptions(
            generator=teacher,
            direction=direction,
            alpha=alpha,
            truncation=truncation,
            num=num_pairs,
            out=data,
        ),
    )
    resume = (run / CHECKPOINT).is_file()
    result = _call(
        "train",
        train,
        TrainOptions(
            dataset=str(data),
            out=str(run),
            preset="tiny",
            max_steps=steps,
            batch_size=4,
            workers=0,
            sample_every=steps,
        ),
        resume=resume,
    )
    if result.status == "interrupted":
        raise KeyboardInterrupt
    _call(
        "export",
        export_entry,
        ExportOptions(
            run=run,
            out=zoo / ENTRY,
            variants=["int8"],
            overwrite=True,
            description="UNTRAINED random teacher, brightness edit: a pipeline smoke test, not a face model",
        ),
    )
    print(f"\nquickstart done. Serve it with:\n  DISTILL_MODEL_ZOO={zoo} distill serve")
    return zoo
