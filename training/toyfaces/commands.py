"""The toy domain's stage commands, `distill toyfaces ...`: the parsers of its render, attribute-model, teacher
and teacher-report stages, which `distill toyfaces` offers and the recipe runs by argv."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from core.errors import DistillError

DESCRIPTION = """The toy-face domain: renderer, attribute model and teacher training (`distill toyfaces ...`).

    distill toyfaces render --out faces/ --seeds 0-15 --grid
    distill toyfaces train-attributes --out model_zoo/toyfaces-attributes
    distill toyfaces train-teacher --out runs/teacher --minutes 60        # re-run the same to resume
    distill toyfaces evaluate-teacher --generator T.pt --direction age.npy --scorer attributes.onnx --out REPORT
    distill toyfaces recipe                                               # every artifact of toyfaces-age
"""


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
        rows.append(
            json.dumps(
                {"seed": s, "file": f"{s:08d}.png", **dict(zip(ATTRIBUTES, p.labels().tolist(), strict=True))}
            )
        )
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
    cfg = am.AttributeTrainConfig(
        train_faces=args.faces,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        eval_faces=args.eval_faces,
    )
    model, info = am.train_attribute_model(cfg)
    onnx_path = am.export_onnx(model, out / am.ONNX_NAME)
    t0 = time.perf_counter()
    metrics = am.evaluate(am.AttributeScorer(onnx_path), faces=cfg.eval_faces)
    info["eval_seconds"] = round(time.perf_counter() - t0, 1)
    command = (
        f"distill toyfaces train-attributes --out {shlex.quote(str(out))} --faces {cfg.train_faces} "
        f"--epochs {cfg.epochs} --batch {cfg.batch} --lr {cfg.lr:g} --seed {cfg.seed} --eval-faces {cfg.eval_faces}"
    )
    am.write_model_card(out, cfg, info, metrics, command)
    print(json.dumps({"training": info, "held_out": metrics}, indent=2))
    return 0


def parse_channels(text: str) -> dict[int, int]:
    """``4:256,8:256,...`` -> {4: 256, 8: 256, ...}."""
    try:
        return {int(k): int(v) for k, v in (p.split(":") for p in text.split(","))}
    except ValueError:
        raise DistillError(f"--channels {text!r}: expected RES:CH pairs, e.g. 4:256,8:256,16:128") from None


def add_teacher_arguments(p: argparse.ArgumentParser) -> None:
    from training.toyfaces.teacher import DEFAULT_CHANNELS, TeacherConfig

    p.add_argument(
        "--out", required=True, help="run folder (checkpoints/, teacher.pt, metrics.jsonl, samples/)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from checkpoints/latest.pt"
    )
    p.add_argument("--steps", type=int, default=100_000, help="total steps to reach (default 100000)")
    p.add_argument(
        "--minutes", type=float, default=None, help="stop (and checkpoint) after this many minutes"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--workers", type=int, default=None, help="render workers (default 0 on CPU, 6 on CUDA)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=500)
    g = p.add_argument_group("new runs only (a resumed run keeps its checkpoint's settings)")
    d = TeacherConfig()
    g.add_argument("--resolution", type=int, default=d.resolution)
    g.add_argument("--z-dim", type=int, default=d.z_dim)
    g.add_argument("--w-dim", type=int, default=d.w_dim)
    g.add_argument("--mapping-layers", type=int, default=d.mapping_layers)
    g.add_argument(
        "--channels",
        default=",".join(f"{k}:{v}" for k, v in DEFAULT_CHANNELS.items()),
        help="channels per resolution, RES:CH,...",
    )
    g.add_argument("--batch", type=int, default=d.batch)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--grad-weight", type=float, default=d.grad_weight)
    g.add_argument(
        "--perceptual",
        type=float,
        default=d.perceptual_weight,
        help="weight of the L1 loss on the attribute model's features (needs --attribute-model)",
    )
    g.add_argument(
        "--attribute-weight",
        type=float,
        default=d.attribute_weight,
        help="weight of the L1 between attributes read from G(z) and from the render",
    )
    g.add_argument(
        "--attribute-model",
        default=None,
        help="attributes.onnx (e.g. model_zoo/toyfaces-attributes/attributes.onnx)",
    )
    g.add_argument("--ema-kimg", type=float, default=d.ema_kimg)
    g.add_argument(
        "--precision",
        default=d.precision,
        choices=("auto", "bf16", "fp32"),
        help="auto (default): bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16/AMX), else fp32",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--eval-faces", type=int, default=d.eval_faces)
    g.add_argument(
        "--unaligned",
        action="store_true",
        help="keep the renderer's pose jitter (default: the FFHQ-like aligned domain)",
    )
    g.add_argument(
        "--init",
        default=None,
        help="warm start from this teacher.pt (same architecture; weights only, fresh optimiser and step 0)",
    )


def _run_train_teacher(args: argparse.Namespace) -> int:
    import torch

    from core.runfiles import CHECKPOINT
    from training.devices import pick_device
    from training.toyfaces.teacher import TeacherConfig, TeacherTrainer

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.out)
    if args.resume:
        trainer = TeacherTrainer.resume(run_dir, device)
    else:
        if (run_dir / CHECKPOINT).exists():
            raise DistillError(
                f"{run_dir}: a run already exists here; add --resume to continue it or pick a new --out"
            )
        cfg = TeacherConfig(
            resolution=args.resolution,
            z_dim=args.z_dim,
            w_dim=args.w_dim,
            mapping_layers=args.mapping_layers,
            channels=parse_channels(args.channels),
            batch=args.batch,
            lr=args.lr,
            grad_weight=args.grad_weight,
            perceptual_weight=args.perceptual,
            attribute_weight=args.attribute_weight,
            attribute_model=args.attribute_model,
            ema_kimg=args.ema_kimg,
            precision=args.precision,
            seed=args.seed,
            eval_faces=args.eval_faces,
            aligned=not args.unaligned,
            init=args.init,
        )
        trainer = TeacherTrainer(run_dir, cfg, device)
    if trainer.step >= args.steps:
        print(
            f"{run_dir}: already at step {trainer.step} >= --steps {args.steps}; raise --steps to train further"
        )
        return 0
    workers = args.workers if args.workers is not None else (6 if device.type == "cuda" else 0)
    t0, s0 = time.monotonic(), trainer.step
    reason = trainer.train(args.steps, args.minutes, args.checkpoint_every, args.eval_every, workers)
    rate = (trainer.step - s0) / max(time.monotonic() - t0, 1e-9)
    print(
        f"stopped ({reason}) at step {trainer.step} ({rate:.2f} steps/s); held-out PSNR {trainer.last_psnr}; "
        f"teacher: {run_dir / 'teacher.pt'}; re-run with --resume to continue"
    )
    return 0


def _run_evaluate_teacher(args: argparse.Namespace) -> int:
    import torch

    from training.directions import parse_layers
    from training.toyfaces.teacher_report import evaluate_teacher, write_report

    if args.threads:
        torch.set_num_threads(args.threads)
    report, grids = evaluate_teacher(
        args.generator,
        args.direction,
        args.scorer,
        num=args.num,
        alpha=args.alpha,
        truncation=args.truncation,
        layers=parse_layers(args.layers) if args.layers else None,
        steps=args.steps,
        seed0=args.seed_start,
    )
    path = write_report(args.out, report, grids)
    q, e = report["quality"], report["edit"]
    print(
        f"quality pass: teacher {q['teacher_pass_rate']:.1%} (bar {q['bar']:.0%}: {'met' if q['passes_bar'] else 'NOT met'}), "
        f"renders {q['render_pass_rate']:.1%}; age MAE teacher {report['readability']['teacher']['mae']['age']:.3f} "
        f"vs renders {report['readability']['render']['mae']['age']:.3f}"
    )
    print(
        f"edit: age {e['age_change_per_unit_alpha']:+.4f} per unit alpha ({e['age_change_at_alpha']:+.3f} at alpha "
        f"{e['alpha']:.3g}); other attributes {e['other_mean_abs_change_at_alpha']:.3f} mean abs change"
    )
    print(json.dumps({"report": str(path)}))
    return 0


def add_evaluate_teacher_arguments(p: argparse.ArgumentParser) -> None:
    from training.toyfaces.teacher_report import HELD_OUT_SEED0

    p.add_argument(
        "--generator", required=True, help="teacher checkpoint (e.g. runs/toyfaces/teacher/teacher.pt)"
    )
    p.add_argument(
        "--direction",
        required=True,
        help="age direction .npy (its .json sidecar gives alpha, layers, truncation)",
    )
    p.add_argument(
        "--scorer", required=True, help="attribute model, e.g. model_zoo/toyfaces-attributes/attributes.onnx"
    )
    p.add_argument(
        "--out", required=True, help="report folder (report.md, report.json, samples.png, edit.png)"
    )
    p.add_argument("--num", type=int, default=1000, help="held-out seeds (default 1000)")
    p.add_argument("--seed-start", type=int, default=HELD_OUT_SEED0)
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="largest alpha of the sweep (default: the direction's suggestion)",
    )
    p.add_argument(
        "--truncation",
        type=float,
        default=None,
        help="truncation of the edited samples (default: the direction's)",
    )
    p.add_argument("--layers", default=None, help="W+ layers START:STOP (default: the direction's)")
    p.add_argument("--steps", type=int, default=4, help="alphas in the sweep after 0 (default 4)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=_run_evaluate_teacher)


def add_group(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``toyfaces`` command and its stage subcommands (render, train-attributes, train-teacher,
    evaluate-teacher); returns its subparsers, to which ``distill toyfaces`` adds ``recipe``."""
    parser = subparsers.add_parser(
        "toyfaces",
        help="the offline toy-face domain: render, attribute model, teacher",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="toyfaces_command", required=True, metavar="ACTION")

    p = sub.add_parser("render", help="render faces by seed, with their labels (labels.jsonl)")
    p.add_argument("--out", required=True, help="output folder (PNG per seed + labels.jsonl)")
    p.add_argument("--seeds", default="0-15", help="seeds, e.g. 0-15 or 3,7,9 (default 0-15)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--grid", action="store_true", help="also write grid.png (8 per row)")
    p.set_defaults(func=_run_render)

    p = sub.add_parser(
        "train-attributes", help="train the attribute/quality CNN, export ONNX + attributes.json"
    )
    p.add_argument("--out", required=True, help="output folder (attributes.onnx, attributes.json)")
    p.add_argument(
        "--faces", type=int, default=8000, help="training faces (each also gives one corrupted sample)"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-faces", type=int, default=1000, help="held-out faces for the metrics (default 1000)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=_run_train_attributes)

    p = sub.add_parser("train-teacher", help="regress a StyleGAN2 generator onto the renderer (resumable)")
    add_teacher_arguments(p)
    p.set_defaults(func=_run_train_teacher)

    from training.toyfaces import teacher_report

    p = sub.add_parser(
        "evaluate-teacher",
        help="quality, attribute readability and age edit of a toy-face teacher",
        description=teacher_report.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_evaluate_teacher_arguments(p)
    return sub


def register(subparsers: argparse._SubParsersAction) -> None:
    """The toy domain's stages alone: what the recipe runs by argv (:func:`training.options.run_command`)."""
    add_group(subparsers)
