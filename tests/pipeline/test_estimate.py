"""`distill estimate`: a table of positive measured numbers, extrapolation linear in epochs and price."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import DistillError
from distill.cli import main
from tests.pipeline_helpers import make_pair_dataset
from training.estimate import estimate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return make_pair_dataset(tmp_path / "pairs", n=10, keep=[i != 4 for i in range(10)])


def test_cli_prints_table_and_json(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "est.json"
    args = [
        "estimate",
        str(pairs),
        "--preset",
        "tiny",
        "--epochs",
        "200",
        "--price-per-hour",
        "0.526",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--val-fraction",
        "0",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    for label in (
        "per-iteration time",
        "images/s",
        "iterations/epoch",
        "epoch time",
        "200 epochs",
        "cost at $0.526/h",
    ):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
        value = row.split("|")[2]
        numbers = [float(x.replace(",", "")) for x in re.findall(r"[\d,]*\.?\d+", value)]
        assert numbers and numbers[0] > 0, row
    assert "22 days" in text
    est = json.loads(out.read_text())
    assert est["train_pairs"] == 9 and est["iters_per_epoch"] == 5 and est["height"] == est["width"] == 32
    assert est["seconds_per_iter"] > 0 and est["cost"] == pytest.approx(est["total_hours"] * 0.526)
    assert est["total_hours"] == pytest.approx(est["seconds_per_iter"] * 5 * 200 / 3600)


def test_extrapolation_scales_linearly(pairs: Path) -> None:
    est = estimate(
        pairs, epochs=10, preset="tiny", batch_size=3, device="cpu", iters=1, warmup=0, val_fraction=0
    )
    assert est.iters_per_epoch == 3 and est.seconds_per_iter > 0
    double = replace(est, epochs=20)
    assert double.total_hours == pytest.approx(2 * est.total_hours) and double.cost == pytest.approx(
        2 * est.cost
    )
    assert replace(est, price_per_hour=1.052).cost == pytest.approx(2 * est.cost)
    # A second measurement at --epochs 20 lands near twice the first (same work, timing noise only).
    again = estimate(
        pairs, epochs=20, preset="tiny", batch_size=3, device="cpu", iters=3, warmup=1, val_fraction=0
    )
    assert again.total_hours / again.seconds_per_iter == pytest.approx(
        2 * est.total_hours / est.seconds_per_iter
    )


def test_bad_options_are_clear(pairs: Path) -> None:
    with pytest.raises(DistillError, match="--iters"):
        estimate(pairs, preset="tiny", device="cpu", iters=0)
    with pytest.raises(DistillError, match="stride"):
        estimate(pairs, preset="slim", device="cpu", load_size=20)
