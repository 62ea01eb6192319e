"""`distill evaluate`: the command line of :mod:`training.evaluate` (a zoo student against its teacher's edit
and the legacy projection)."""

from __future__ import annotations

import argparse
from pathlib import Path

import training.evaluate
from distill.commands.zoo import add_zoo_argument
from training.evaluate import EvaluateOptions
from training.evaluate.inputs import DEFAULT_NUM, HELD_OUT_SEED0
from training.evaluate.photos import PHOTOS_MD
from training.options import add_scorer_input_arguments, options_from_args


def parse_seeds(text: str) -> tuple[int, int]:
    """``"1000000:1000500"`` -> (1000000, 1000500), the half-open range [START, STOP)."""
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds {text!r}: expected START:STOP, e.g. 1000000:1000500"
        ) from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: need 0 <= START < STOP")
    return start, stop


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="measure a model-zoo student against its teacher's edit and the legacy projection",
        description=training.evaluate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "entry",
        metavar="ENTRY_OR_PATH",
        help="model-zoo entry name or entry folder (with teacher and direction)",
    )
    p.add_argument(
        "--out", required=True, help="report folder (report.md, report.json, grid.png, per_image.csv)"
    )
    add_zoo_argument(p, type=str)
    p.add_argument(
        "--dataset",
        help="the student's pair dataset, to check the seeds are held out (default: the manifest's)",
    )
    p.add_argument(
        "--seeds",
        type=parse_seeds,
        metavar="START:STOP",
        help=f"held-out teacher seeds [START, STOP) (default: --num seeds from {HELD_OUT_SEED0:,}, above the training seeds)",
    )
    p.add_argument("--num", type=int, help=f"number of seeds (default {DEFAULT_NUM}, or all of --seeds)")
    p.add_argument("--truncation", type=float, help="truncation psi (default: the entry's)")
    p.add_argument(
        "--scorer", metavar="MODEL.onnx", help="ONNX attribute model for edit success and preservation"
    )
    p.add_argument("--attribute", metavar="NAME=INDEX", help="scorer output the edit changes, e.g. age=0")
    p.add_argument(
        "--other",
        metavar="NAME=INDEX",
        action="append",
        default=[],
        help="another scorer output that the edit should preserve (repeatable)",
    )
    add_scorer_input_arguments(p)
    p.add_argument(
        "--legacy-num", type=int, default=20, help="seeds also edited the legacy way (default 20; 0: skip)"
    )
    p.add_argument(
        "--legacy-steps", type=int, default=200, help="projection steps of the legacy path (default 200)"
    )
    p.add_argument(
        "--variants",
        default="fp32,int8",
        help="student variants to run when the entry has them (default fp32,int8)",
    )
    p.add_argument(
        "--timing-num",
        type=int,
        default=100,
        help="inputs (the first seeds' originals) timed per student variant (default 100)",
    )
    p.add_argument(
        "--clean-renders",
        type=int,
        default=0,
        metavar="N",
        help="toy-face teachers only: also run every path on N held-out adult clean renders and compare with "
        "the renderer's truly aged face (default 0: skip)",
    )
    p.add_argument(
        "--clean-legacy-num",
        type=int,
        default=10,
        metavar="N",
        help="of the clean renders, how many also go the legacy way (default 10; 0: skip)",
    )
    p.add_argument(
        "--clean-age-change",
        type=float,
        default=None,
        metavar="X",
        help="age rise of the true edit (default: the teacher's mean change read by --scorer)",
    )
    p.add_argument(
        "--photos",
        metavar="DIR",
        help="also measure the student and the legacy path on the photographs in DIR, through the service's face "
        "path with paste-back: identity distance (dlib's face descriptor), same-person share, edit success "
        "(with --scorer), faces found; photos.md, photos.json, photos_grid.png (needs the `faces` extra)",
    )
    p.add_argument(
        "--photos-legacy-num",
        type=int,
        default=3,
        metavar="N",
        help="of the photos with a face, how many also go the legacy way (default 3; 0: skip)",
    )
    p.add_argument(
        "--photos-only",
        action="store_true",
        help="the photos section alone, without the seed evaluation (with --scorer, the teacher's mean change "
        "that edit success is judged by is read on --num held-out seeds, default 100)",
    )
    p.add_argument(
        "--vgg16",
        help="torchvision VGG16 weights for the projector's perceptual distance (default: pixel pyramid)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device of the teacher and the legacy path: cpu (default, beside ONNX Runtime's CPU "
        "provider), cuda or auto",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime and torch threads (default 0: their defaults)"
    )
    p.add_argument(
        "--strengths",
        type=_strength_list,
        default=None,
        metavar="S,S,...",
        help="strength-conditioned entries: the strengths of the strength section, relative (1 = the "
        "entry's alpha), written --strengths=-1,-0.5,0.5,1 (default: those within the trained range)",
    )
    p.add_argument(
        "--strength-num", type=int, default=100, help="seeds of the strength section (default 100)"
    )
    p.set_defaults(func=run)


def _strength_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma list of numbers, e.g. -1,-0.5,0.5,1"
        ) from None


def run(args: argparse.Namespace) -> int:
    """``distill evaluate``: the options from the flags."""
    from app.offline import edit_photos

    report = training.evaluate.evaluate(
        options_from_args(
            EvaluateOptions, args, variants=[v.strip() for v in args.variants.split(",") if v.strip()]
        ),
        photo_editor=edit_photos if args.photos else None,
    )
    out = Path(args.out)
    if args.photos_only:
        print(photos_line(out / PHOTOS_MD, report))
        return 0
    fp32 = report["fidelity"]["student_fp32"]["psnr"]["mean"]
    print(
        f"wrote {out / 'report.md'}: {report['seeds']['count']} seeds, student fp32 PSNR {fp32:.2f} dB vs the teacher's edit, "
        f"{report['latency']['student_fp32']['mean_ms']:.1f} ms/img"
        + (
            f", legacy {report['latency']['legacy']['mean_ms'] / 1e3:.2f} s/img"
            if "legacy" in report["latency"]
            else ""
        )
    )
    if report.get("clean_renders"):
        c = report["clean_renders"]["paths"]
        print(
            f"clean renders: student fp32 {c['student_fp32']['psnr']['mean']:.2f} dB vs identity {c['identity']['psnr']['mean']:.2f} dB "
            "against the renderer's true edit"
        )
    if report.get("photos"):
        print(photos_line(out / PHOTOS_MD, report["photos"]))
    return 0


def photos_line(path: Path, photos: dict) -> str:
    """One line of the photos section: faces, the student's identity distance and same-person share."""
    if not photos["paths"]:
        return f"wrote {path}: no face found in the {len(photos['files'])} photos"
    s = photos["paths"]["student"]
    return (
        f"wrote {path}: {photos['faces']} faces in {len(photos['files'])} photos, student identity distance "
        f"{s['identity_distance']['mean']:.3f} (same person {s['same_person']:.0%})"
        + (f", edit success {s['edit']['edit_success']:.0%}" if s["edit"] else "")
    )
