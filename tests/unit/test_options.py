"""Stage options: every flag of a stage's command lands in its options object, under the same name."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

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
    (
        FitOptions,
        [
            "direction",
            "fit",
            "--generator",
            "g.pt",
            "--scores",
            "s.csv",
            "--attribute",
            "age",
            "--out",
            "d.npy",
        ],
    ),
    (
        PairsOptions,
        ["pairs", "--generator", "g.pt", "--direction", "d.npy", "--out", "pairs", "--layers", "2:6"],
    ),
    (
        FilterOptions,
        [
            "filter",
            "pairs",
            "--scorer",
            "m.onnx",
            "--attribute",
            "age=0",
            "--input-size",
            "64",
            "--mean",
            "0.5",
            "--std",
            "0.5",
            "--activation",
            "sigmoid",
            "--keep",
            "age=18:",
        ],
    ),
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
    for argv in (
        ["evaluate", "e", "--out", "r"],
        ["direction", "fit", "--generator", "g", "--attribute", "age", "--out", "d.npy"],
        ["filter", "pairs"],
    ):
        args = vars(parser.parse_args(argv))
        assert {"scorer", "input_size", "mean", "std", "activation"} <= set(args), argv[0]
    new = parser.parse_args(
        [
            "filter",
            "pairs",
            "--scorer",
            "m.onnx",
            "--attribute",
            "age=0",
            "--attribute",
            "q=9",
            "--input-size",
            "64",
            "--mean",
            "0",
            "--std",
            "1",
            "--activation",
            "sigmoid",
        ]
    )
    assert capsys.readouterr().err == ""
    old = parser.parse_args(
        [
            "filter",
            "pairs",
            "--onnx",
            "m.onnx",
            "--onnx-output",
            "age=0",
            "--onnx-output",
            "q=9",
            "--onnx-input-size",
            "64",
            "--onnx-mean",
            "0",
            "--onnx-std",
            "1",
            "--onnx-activation",
            "sigmoid",
        ]
    )
    assert vars(old) == vars(new)
    notes = capsys.readouterr().err.splitlines()
    assert (
        notes[:2]
        == [
            "distill filter: --onnx is deprecated; use --scorer",
            "distill filter: --onnx-output is deprecated; use --attribute",
        ]
        and len(notes) == 7
    )
    opts = options_from_args(FilterOptions, old)
    assert (opts.scorer, opts.attributes, opts.input_size, opts.activation) == (
        "m.onnx",
        ["age=0", "q=9"],
        64,
        "sigmoid",
    )
    mixed = parser.parse_args(
        ["filter", "pairs", "--scorer", "m.onnx", "--attribute", "age=0", "--onnx-output", "q=9"]
    )
    assert mixed.attributes == ["age=0", "q=9"]
    with pytest.raises(SystemExit):
        parser.parse_args(["filter", "--help"])
    shown = capsys.readouterr().out
    assert "--scorer" in shown and "--attribute" in shown and "--onnx" not in shown


SCORER_COMMANDS = {
    "evaluate": ["evaluate", "e", "--out", "r"],
    "direction fit": ["direction", "fit", "--generator", "g", "--attribute", "age", "--out", "d.npy"],
    "filter": ["filter", "pairs"],
}


@pytest.mark.parametrize("command", SCORER_COMMANDS)
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {"input_size": None, "mean": [0.5], "std": [0.5], "activation": "none"}),
        (
            ["--input-size", "64", "--mean", "0", "--std", "1"],
            {"input_size": 64, "mean": [0.0], "std": [1.0]},
        ),
        (["--input-size", "64x48"], {"input_size": (64, 48)}),
        (["--input-size", "64X48"], {"input_size": (64, 48)}),
        (["--input-size", "64,48"], {"input_size": (64, 48)}),
        (
            ["--mean", "0.485", "0.456", "0.406", "--std", "0.229,0.224,0.225"],
            {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        ),
        (
            ["--mean=0.1,0.2,0.3", "--std", "0.5,", "0.5,", "0.5", "--activation", "softmax"],
            {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5], "activation": "softmax"},
        ),
        (["--mean", "-1"], {"mean": [-1.0]}),
    ],
    ids=["defaults", "N", "HxW", "HXW", "H,W", "spaces-and-commas", "equals-and-mixed", "negative"],
)
def test_the_scorer_input_flags_parse_alike_in_every_command(command, flags, expected):
    """--input-size N|HxW, --mean/--std as 1 or 3 values space- or comma-separated: one parser
    (training.options.add_scorer_input_arguments) in evaluate, direction fit and filter."""
    args = vars(build_parser().parse_args([*SCORER_COMMANDS[command], *flags]))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize("command", SCORER_COMMANDS)
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input-size", "big"], "argument --input-size: 'big': expected N or HxW"),
        (["--input-size", "0"], "argument --input-size: '0': expected N or HxW"),
        (["--input-size", "64x48x3"], "argument --input-size: '64x48x3': expected N or HxW"),
        (["--mean", "0.5", "0.5"], "argument --mean: '0.5 0.5': expected 1 or 3 numbers"),
        (["--std", "0.5,0.5,0.5,0.5"], "argument --std: '0.5,0.5,0.5,0.5': expected 1 or 3 numbers"),
        (["--std", "gray"], "argument --std: 'gray' is not a number"),
    ],
    ids=["word", "zero", "three-sides", "two-means", "four-stds", "word-std"],
)
def test_a_bad_scorer_input_value_is_an_argparse_error_naming_the_flag(command, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*SCORER_COMMANDS[command], *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_positional_after_mean_is_reported_with_the_way_out(capsys):
    """--mean takes several values, so a positional argument written after it is read as one: the error says so."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["filter", "--mean", "0.5", "pairs"])
    err = capsys.readouterr().err
    assert (
        "argument --mean: 'pairs' is not a number; an argument after --mean is read as one of its values"
        in err
    )
    args = build_parser().parse_args(["filter", "--mean=0.5", "pairs"])
    assert (args.dataset, args.mean) == ("pairs", [0.5])


def test_the_filter_aliases_parse_as_the_flags_they_stand_for(capsys):
    parser = build_parser()
    old = parser.parse_args(["filter", "pairs", "--onnx-input-size", "64x48", "--onnx-mean", "0.1,0.2,0.3"])
    new = parser.parse_args(["filter", "pairs", "--input-size", "64x48", "--mean", "0.1", "0.2", "0.3"])
    assert vars(old) == vars(new) and old.input_size == (64, 48)
    with pytest.raises(SystemExit):
        parser.parse_args(["filter", "pairs", "--onnx-std", "0.5,0.5"])
    assert "argument --onnx-std: '0.5,0.5': expected 1 or 3 numbers" in capsys.readouterr().err


def test_the_evaluate_report_command_line_parses_back_to_the_same_scorer_inputs():
    from training.evaluate import command_line

    opts = EvaluateOptions(
        entry="e",
        out="r",
        scorer="m.onnx",
        attribute="age=0",
        input_size=(64, 48),
        mean=[0.485, 0.456, 0.406],
        std=[0.5],
    )
    argv = shlex.split(command_line(opts))
    assert argv[:2] == ["distill", "evaluate"] and "64x48" in argv
    args = build_parser().parse_args(argv[1:])
    assert (args.input_size, args.mean, args.std) == ((64, 48), [0.485, 0.456, 0.406], [0.5])
