"""`distill teacher`: the command line of :mod:`training.teacher` (inspect, sample, convert or make a StyleGAN2 teacher)."""

from __future__ import annotations

import argparse
import json
import math

import training.teacher
from core.errors import DistillError
from editing.images import make_grid, save_image, to_uint8
from networks.stylegan2 import load_generator, save_generator
from training.devices import exact_float32, pick_device
from training.teacher import describe, sample_images, write_per_seed, write_random_generator


def run_info(args: argparse.Namespace) -> int:
    info = {k: v for k, v in describe(load_generator(args.path)).items() if v is not None or k != "note"}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        if key == "channels":
            value = ", ".join(f"{r}:{c}" for r, c in value.items())
        elif key == "parameters":
            value = f"{value:,}"
        print(f"{key:<{width}}  {value}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise DistillError("--num must be at least 1")
    if args.batch < 1:
        raise DistillError("--batch must be at least 1")
    device = pick_device(args.device)
    exact_float32()
    G = load_generator(args.path, device=device)
    seeds = list(range(args.seed, args.seed + args.num))
    if args.per_seed:
        csv = write_per_seed(G, seeds, args.out, args.truncation, args.noise_mode, args.batch, progress=True)
        print(
            f"wrote {args.out}: {len(seeds)} images seed{seeds[0]:06d}.png..seed{seeds[-1]:06d}.png (truncation "
            f"{args.truncation}) and {csv}; score them into a seed,<score> CSV for `distill direction fit "
            f"--scores CSV --truncation {args.truncation}`"
        )
        return 0
    images = to_uint8(sample_images(G, seeds, args.truncation, args.noise_mode, args.batch, progress=True))
    cols = args.cols or math.ceil(math.sqrt(len(seeds)))
    rows = [list(images[i : i + cols]) for i in range(0, len(images), cols)]
    save_image(args.out, make_grid(rows))
    print(
        f"wrote {args.out}: {len(seeds)} images (seeds {seeds[0]}..{seeds[-1]}, truncation {args.truncation}, "
        f"noise {args.noise_mode}) from {args.path} on {device}"
    )
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from training.directions import file_sha256

    G = load_generator(args.path, **({"conv_clamp": args.conv_clamp} if args.conv_clamp is not None else {}))
    info = G.checkpoint_info
    extra = dict(info.get("metadata") or {})
    extra.update(
        source={"path": str(args.path), "format": info["format"], "sha256": file_sha256(args.path)},
        w_avg_source=info["w_avg_source"],
    )
    save_generator(G, args.out, extra=extra)
    print(
        f"wrote {args.out}: {info['format']} generator from {args.path} ({G.img_resolution} px, "
        f"{G.num_ws} ws, w_avg {info['w_avg_source']})"
    )
    return 0


def run_random(args: argparse.Namespace) -> int:
    print(
        write_random_generator(
            args.out,
            args.resolution,
            seed=args.seed,
            z_dim=args.z_dim,
            w_dim=args.w_dim,
            mapping_layers=args.mapping_layers,
            channel_base=args.channel_base,
            channel_max=args.channel_max,
        )
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "teacher",
        help="inspect, sample or create a StyleGAN2 teacher",
        description=training.teacher.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="teacher_command", required=True, metavar="ACTION")

    p = sub.add_parser("info", help="print the configuration inferred from a checkpoint")
    p.add_argument("path", help="NVlabs .pkl / state_dict, rosinality .pt, or a stylegan2-distill file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_info)

    p = sub.add_parser("sample", help="write a grid of generated images")
    p.add_argument("path", help="generator checkpoint (any supported format)")
    p.add_argument("--num", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="first seed; images use seeds seed..seed+num-1")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi (default 1.0 = none)")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--cols", type=int, default=0, help="grid columns (default: about sqrt(num))")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    p.add_argument("--out", required=True, help="output image (.png or .jpg), or a folder with --per-seed")
    p.add_argument(
        "--per-seed",
        action="store_true",
        help="one PNG per seed in the --out folder (seed000000.png, ...) and seeds.csv, to score with your own "
        "tool for `direction fit --scores`",
    )
    p.set_defaults(func=run_sample)

    p = sub.add_parser("convert", help="rewrite any supported checkpoint in this project's format (.pt)")
    p.add_argument("path", help="NVlabs .pkl / state_dict, rosinality .pt, or a stylegan2-distill file")
    p.add_argument(
        "--conv-clamp", type=float, default=None, help="override conv_clamp (not visible in tensors)"
    )
    p.add_argument("--out", required=True, help="output file (.pt)")
    p.set_defaults(func=run_convert)

    p = sub.add_parser(
        "random", help="write a tiny UNTRAINED random generator (smoke tests, offline quickstart)"
    )
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z-dim", type=int, default=64)
    p.add_argument("--w-dim", type=int, default=64)
    p.add_argument("--mapping-layers", type=int, default=2)
    p.add_argument("--channel-base", type=int, default=None, help="default 16 x resolution")
    p.add_argument("--channel-max", type=int, default=64)
    p.add_argument("--out", required=True, help="output file (stylegan2-distill format, .pt)")
    p.set_defaults(func=run_random)
