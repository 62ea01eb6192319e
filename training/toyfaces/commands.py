"""The toy-face domain: renderer, attribute model and teacher training (`distill toyfaces ...`).

    distill toyfaces render --out faces/ --seeds 0-15 --grid
    distill toyfaces train-attributes --out model_zoo/toyfaces-attributes
    distill toyfaces train-teacher --out runs/teacher --minutes 60        # re-run the same to resume
    distill toyfaces evaluate-teacher --generator T.pt --direction age.npy --scorer attributes.onnx --out REPORT
    distill toyfaces recipe                                               # every artifact of toyfaces-age
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from core.errors import DistillError


def parse_seeds(text: str) -> list[int]:
    """``0-15`` / ``3,7,9`` / ``0-3,10`` -> list of seeds (ranges inclusive)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    except ValueError:
        raise DistillError(f"--seeds {text!r}: expected e.g. 0-15 or 3,7,9") from None
    if not seeds or min(seeds) < 0:
        raise DistillError(f"--seeds {text!r}: give at least one seed, all >= 0")
    return seeds


def _run_render(args: argparse.Namespace) -> int:
    from core.atomic import atomic_write_text
    from editing.images import make_grid, save_image
    from training.toyfaces.renderer import ATTRIBUTES, render, sample_params

    out = Path(args.out)
    seeds = parse_seeds(args.seeds)
    images, rows = [], []
    for s in seeds:
        p = sample_params(s)
        im = render(p, args.size)
        save_image(out / f"{s:08d}.png", im)
        images.append(im)
        rows.append(json.dumps({"seed": s, "file": f"{s:08d}.png", **dict(zip(ATTRIBUTES, p.labels().tolist(), strict=True))}))
    atomic_write_text(out / "labels.jsonl", "\n".join(rows) + "\n")
    if args.grid:
        n = 8
        save_image(out / "grid.png", make_grid([images[i : i + n] for i in range(0, len(images), n)]))
    print(f"wrote {len(seeds)} faces and labels.jsonl to {out}")
    return 0


def _run_train_attributes(args: argparse.Namespace) -> int:
    import torch

    from training.toyfaces import attributes as am

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = am.AttributeTrainConfig(train_faces=args.faces, epochs=args.epochs, batch=args.batch, lr=args.lr,
                                  seed=args.seed, eval_faces=args.eval_faces)
    model, info = am.train_attribute_model(cfg)
    onnx_path = am.export_onnx(model, out / am.ONNX_NAME)
    t0 = time.perf_counter()
    metrics = am.evaluate(am.AttributeScorer(onnx_path), faces=cfg.eval_faces)
    info["eval_seconds"] = round(time.perf_counter() - t0, 1)
    command = (f"distill toyfaces train-attributes --out {shlex.quote(str(out))} --faces {cfg.train_faces} "
               f"--epochs {cfg.epochs} --batch {cfg.batch} --lr {cfg.lr:g} --seed {cfg.seed} --eval-faces {cfg.eval_faces}")
    am.write_model_card(out, cfg, info, metrics, command)
    print(json.dumps({"training": info, "held_out": metrics}, indent=2))
    return 0


def _run_train_teacher(args: argparse.Namespace) -> int:
    from training.toyfaces.teacher import run_from_args

    return run_from_args(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("toyfaces", help="the offline toy-face domain: render, attribute model, teacher",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="toyfaces_command", required=True, metavar="ACTION")

    p = sub.add_parser("render", help="render faces by seed, with their labels (labels.jsonl)")
    p.add_argument("--out", required=True, help="output folder (PNG per seed + labels.jsonl)")
    p.add_argument("--seeds", default="0-15", help="seeds, e.g. 0-15 or 3,7,9 (default 0-15)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--grid", action="store_true", help="also write grid.png (8 per row)")
    p.set_defaults(func=_run_render)

    p = sub.add_parser("train-attributes", help="train the attribute/quality CNN, export ONNX + attributes.json")
    p.add_argument("--out", required=True, help="output folder (attributes.onnx, attributes.json)")
    p.add_argument("--faces", type=int, default=8000, help="training faces (each also gives one corrupted sample)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-faces", type=int, default=1000, help="held-out faces for the metrics (default 1000)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=_run_train_attributes)

    from training.toyfaces.teacher import add_teacher_arguments

    p = sub.add_parser("train-teacher", help="regress a StyleGAN2 generator onto the renderer (resumable)")
    add_teacher_arguments(p)
    p.set_defaults(func=_run_train_teacher)

    from training.toyfaces import recipe, teacher_report

    p = sub.add_parser("evaluate-teacher", help="quality, attribute readability and age edit of a toy-face teacher",
                       description=teacher_report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    teacher_report.add_arguments(p)

    p = sub.add_parser("recipe", help="re-create the shipped toyfaces-age model from scratch (fixed seeds)",
                       description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipe.add_arguments(p)
