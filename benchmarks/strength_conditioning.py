"""Which strength conditioning trains better at equal steps: scale, plane and modulation.

Trains the residual ``tiny`` student (ngf 8, L1 weight 10, lr 1e-3, batch 8) with each ``--condition`` for the
same number of steps on one pair dataset made with ``distill pairs --alpha-range``, at ``--load-size`` px, then
measures each on the run's held-out pairs: PSNR against the teacher's edit, overall and on the strong edits
(|strength| >= 0.75), beside the identity. The README's table came from (160 pairs of the shipped toy teacher)::

    distill pairs --generator TEACHER.pt --direction age.npy --alpha 9.553 --alpha-range=-1.5:1.5 \\
        --truncation 0.8 --layers 0:12 --num 160 --out /tmp/str14/pairs
    python benchmarks/strength_conditioning.py /tmp/str14/pairs --steps 600 --out /tmp/str14/cond
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from networks.pix2pixhd import load_generator
from training.dataset import load_split
from training.metrics import psnr
from training.trainer import TrainOptions, train

CONDITIONS = ("scale", "plane", "modulation")


def measure(dataset: str, out: Path, steps: int, seed: int, load_size: int) -> dict[str, dict[str, float]]:
    """{condition: figures} for each condition trained ``steps`` steps into ``out/<condition>``."""
    split = load_split(dataset, 4, val_fraction=0.2, load_size=load_size, flip=False, seed=seed)
    items = [split.val[i] for i in range(len(split.val))]
    a, b = torch.stack([it["a"] for it in items]), torch.stack([it["b"] for it in items])
    s = torch.stack([it["strength"] for it in items])
    strong = s.abs() >= 0.75
    identity = psnr(a, b)
    results = {}
    for cond in CONDITIONS:
        opts = TrainOptions(
            dataset=dataset,
            out=str(out / f"{cond}-{steps}-s{seed}"),
            preset="tiny",
            batch_size=8,
            max_steps=steps,
            workers=0,
            progress=False,
            device="cpu",
            val_fraction=0.2,
            load_size=load_size,
            sample_every=10**9,
            seed=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(opts, {"residual": True, "condition": cond, "lambda_l1": 10.0, "ngf": 8, "lr": 1e-3})
        G = load_generator(Path(opts.out) / "checkpoints" / "latest.pt")
        with torch.no_grad():
            p = psnr(G(a, s), b)
        results[cond] = {
            "psnr": float(p.mean()),
            "psnr_strong": float(p[strong].mean()),
            "identity_psnr": float(identity.mean()),
            "identity_psnr_strong": float(identity[strong].mean()),
            "n_val": len(items),
            "parameters": sum(q.numel() for q in G.parameters()),
        }
        print(cond, json.dumps(results[cond]), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="pairs made with distill pairs --alpha-range")
    p.add_argument("--out", required=True, help="folder for the runs and results.json")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load-size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results = measure(args.dataset, out, args.steps, args.seed, args.load_size)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-{args.steps}-s{args.seed}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
