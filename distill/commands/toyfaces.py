"""`distill toyfaces`: the toy domain's stage commands (:mod:`training.toyfaces.commands`) and the recipe."""

from __future__ import annotations

import argparse

from training.toyfaces import recipe
from training.toyfaces.commands import add_group


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(subparsers)
    p = sub.add_parser(
        "recipe",
        help="re-create the shipped toyfaces-age model from scratch (fixed seeds)",
        description=recipe.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipe.add_arguments(p)
