"""Stage options: every flag of a stage's command lands in its options object, under the same name."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from distill.cli import build_parser
from training.directions import FitOptions
from training.evaluate import EvaluateOptions
from training.export import ExportOptions
from training.filters import FilterOptions
from training.options import options_from_args
from training.pairs import PairsOptions

STAGES = [
    (ExportOptions, ["export", "RUN", "--out", "zoo/e", "--layers", "0:8", "--variants", "int8"]),
    (EvaluateOptions, ["evaluate", "e", "--out", "report", "--seeds", "5:9"]),
    (FitOptions, ["direction", "fit", "--generator", "g.pt", "--scores", "s.csv", "--attribute", "age", "--out", "d.npy"]),
    (PairsOptions, ["pairs", "--generator", "g.pt", "--direction", "d.npy", "--out", "pairs", "--layers", "2:6"]),
    (FilterOptions, ["filter", "pairs", "--onnx", "m.onnx", "--keep", "age=18:"]),
]


@pytest.mark.parametrize(("cls", "argv"), STAGES, ids=[c.__name__ for c, _ in STAGES])
def test_every_flag_is_an_options_field(cls, argv):
    args = build_parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(cls)}
    flags = {k for k in vars(args) if k not in ("command", "func") and not k.endswith("_command")}
    assert flags <= fields, f"flags without a field in {cls.__name__}: {sorted(flags - fields)}"
    overrides = {"layers": (0, 8), "variants": ["int8"]} if cls is ExportOptions else {}
    overrides |= {"variants": ["fp32", "int8"]} if cls is EvaluateOptions else {}
    opts = options_from_args(cls, args, **overrides)
    assert isinstance(opts, cls)
    if cls is PairsOptions:
        assert opts.layers == (2, 6) and opts.out == "pairs"


def test_a_flag_without_a_field_is_an_error():
    args = argparse.Namespace(command="filter", func=None, dataset="d", new_flag=1)
    with pytest.raises(TypeError, match="new_flag"):
        options_from_args(FilterOptions, args)
