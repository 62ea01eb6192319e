"""`distill toyfaces`: the toy domain's stage commands (:mod:`training.toyfaces.commands`) and the recipe
(:mod:`training.toyfaces.recipe`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from training.toyfaces import recipe
from training.toyfaces.commands import add_group
from training.toyfaces.recipe import SETTINGS, Recipe


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(subparsers)
    p = sub.add_parser(
        "recipe",
        help="re-create the shipped toyfaces-age model from scratch (fixed seeds)",
        description=recipe.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_arguments(p)


def run_recipe(args: argparse.Namespace) -> int:
    setting = SETTINGS[args.setting]
    if args.teacher_steps:
        setting = replace(setting, teacher_steps=args.teacher_steps)
    if args.student_steps:
        setting = replace(setting, student_steps=args.student_steps)
    if args.teacher_init:
        setting = replace(setting, teacher_init=args.teacher_init)
    if args.student_init:
        setting = replace(setting, student_init=args.student_init)
    recipe = Recipe(setting, Path(args.out), Path(args.zoo), args.attribute_model, args.threads)
    if args.redo_from:
        recipe.redo_from(args.redo_from)
    recipe.run()
    return 0


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--setting",
        choices=sorted(SETTINGS),
        default="full",
        help="full (the shipped model) or tiny (a smoke test); full-strength / tiny-strength: pairs over "
        "strengths -1.5:1.5 and a strength-conditioned student (the strength dial, entry "
        "toyfaces-age-strength); full-multi / tiny-multi: age, smile, hair colour and glasses in one student "
        "(entry toyfaces-multi)",
    )
    p.add_argument(
        "--out",
        default="runs/toyfaces",
        help="work folder: attribute model, teacher, direction, pairs, student",
    )
    p.add_argument(
        "--model-zoo",
        "--zoo",
        dest="zoo",
        default="model_zoo",
        metavar="DIR",
        help="model-zoo folder that receives the entry (default ./model_zoo)",
    )
    p.add_argument(
        "--attribute-model",
        type=Path,
        default=None,
        help="use this attribute model (default: ZOO/toyfaces-attributes/attributes.onnx, trained when absent)",
    )
    p.add_argument("--teacher-steps", type=int, default=None, help="override the setting's teacher steps")
    p.add_argument("--student-steps", type=int, default=None, help="override the setting's student steps")
    p.add_argument(
        "--teacher-init",
        default=None,
        metavar="TEACHER.pt",
        help="a new teacher run warm-starts from this teacher (same architecture), e.g. an earlier shipped one",
    )
    p.add_argument(
        "--student-init",
        default=None,
        metavar="GENERATOR",
        help="a new student run warm-starts from these weights (a generator .pt, or a zoo entry's model.onnx, "
        "e.g. the previous shipped one)",
    )
    p.add_argument(
        "--redo-from",
        choices=("direction", "pairs", "student", "export"),
        default=None,
        help="remove this stage's outputs and every later stage's, then run (e.g. after training the teacher further)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch/ORT threads of the stages that take it (0: default)"
    )
    p.set_defaults(func=run_recipe)
