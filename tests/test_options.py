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
    (FilterOptions, ["filter", "pairs", "--scorer", "m.onnx", "--attribute", "age=0", "--input-size", "64",
                     "--mean", "0.5", "--std", "0.5", "--activation", "sigmoid", "--keep", "age=18:"]),
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


def test_filter_scorer_flags_are_spelled_as_evaluate_and_direction_fit_and_the_old_ones_still_work(capsys):
    """``--scorer``/``--attribute NAME=INDEX``/``--input-size``/``--mean``/``--std``/``--activation`` in all three;
    filter's former ``--onnx*`` flags land in the same fields, hidden from --help, with a one-line note each."""
    parser = build_parser()
    for argv in (["evaluate", "e", "--out", "r"], ["direction", "fit", "--generator", "g", "--attribute", "age",
                                                   "--out", "d.npy"], ["filter", "pairs"]):
        args = vars(parser.parse_args(argv))
        assert {"scorer", "input_size", "mean", "std", "activation"} <= set(args), argv[0]
    new = parser.parse_args(["filter", "pairs", "--scorer", "m.onnx", "--attribute", "age=0", "--attribute", "q=9",
                             "--input-size", "64", "--mean", "0", "--std", "1", "--activation", "sigmoid"])
    assert capsys.readouterr().err == ""
    old = parser.parse_args(["filter", "pairs", "--onnx", "m.onnx", "--onnx-output", "age=0", "--onnx-output", "q=9",
                             "--onnx-input-size", "64", "--onnx-mean", "0", "--onnx-std", "1",
                             "--onnx-activation", "sigmoid"])
    assert vars(old) == vars(new)
    notes = capsys.readouterr().err.splitlines()
    assert notes[:2] == ["distill filter: --onnx is deprecated; use --scorer",
                         "distill filter: --onnx-output is deprecated; use --attribute"] and len(notes) == 7
    opts = options_from_args(FilterOptions, old)
    assert (opts.scorer, opts.attributes, opts.input_size, opts.activation) == ("m.onnx", ["age=0", "q=9"], 64, "sigmoid")
    mixed = parser.parse_args(["filter", "pairs", "--scorer", "m.onnx", "--attribute", "age=0", "--onnx-output", "q=9"])
    assert mixed.attributes == ["age=0", "q=9"]
    with pytest.raises(SystemExit):
        parser.parse_args(["filter", "--help"])
    shown = capsys.readouterr().out
    assert "--scorer" in shown and "--attribute" in shown and "--onnx" not in shown
