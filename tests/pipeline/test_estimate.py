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
        pairs,
        epochs=10,
        preset="tiny",
        batch_size=3,
        device="cpu",
        iters=1,
        warmup=0,
        val_fraction=0,
        price_per_hour=0.526,
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


def test_planned_pairs_without_a_dataset_measure_here_and_project_onto_gpus(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "est.json"
    args = ["estimate", "--pairs", "1000", "--epochs", "10", "--preset", "tiny", "--load-size", "32"]
    args += ["--device", "cpu", "--iters", "1", "--warmup", "1", "--json", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "timing 32x32, batch 4, cpu" in captured.err  # the progress line while it times
    text = captured.out
    assert "measured here, on cpu" in text and "950 train pairs planned / batch 4" in text
    assert "give this machine's price with --price-per-hour" in text  # no GPU price on a CPU measurement
    assert "a projection, not a measurement" in text and "assumed 30% efficiency" in text
    for gpu in ("T4", "A10G", "A100", "H100"):
        assert re.search(rf"^\| {gpu} +\| ", text, flags=re.M), gpu
    est = json.loads(out.read_text())
    assert est["cost"] is None and est["pairs_source"] == "--pairs" and est["flops_per_iter"] > 0
    t4 = next(p for p in est["projections"] if p["gpu"] == "T4")
    assert t4["projection"] is True and t4["seconds_per_iter"] == pytest.approx(
        est["flops_per_iter"] / (65e12 * 0.3)
    )


def test_a_batch_that_does_not_fit_names_one_that_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from training.estimate import GIB, MemoryProbe, Probe, check_batch_fits

    probe = Probe(flops=1.0, seconds=1.0, base_bytes=1 * GIB, state_bytes=1 * GIB, per_image_bytes=2 * GIB)
    monkeypatch.setattr(MemoryProbe, "capacity", lambda self: 10 * GIB)
    assert check_batch_fits(probe, 3, torch.device("cpu"), (1024, 1024)) == 8 * GIB
    with pytest.raises(
        DistillError, match=r"--batch-size 4 at 1024x1024 needs about 10.0 GiB .* --batch-size 3 fits"
    ):
        check_batch_fits(probe, 4, torch.device("cpu"), (1024, 1024))
    monkeypatch.setattr(MemoryProbe, "capacity", lambda self: 3 * GIB)
    with pytest.raises(DistillError, match="not even batch 1 fits: lower --load-size"):
        check_batch_fits(probe, 1, torch.device("cpu"), (1024, 1024))


def test_without_a_dataset_the_size_and_pairs_are_needed() -> None:
    with pytest.raises(DistillError, match="--pairs N and --load-size"):
        estimate(None, preset="tiny", device="cpu")
    with pytest.raises(DistillError, match="--load-size"):
        estimate(None, pairs=10, preset="tiny", device="cpu")


def test_a_batch_too_slow_to_time_is_scaled_from_the_measured_batch_1_and_says_so() -> None:
    est = estimate(None, pairs=10, load_size=32, preset="tiny", batch_size=2, device="cpu", max_seconds=0)
    assert est.scaled_from_batch == 1 and est.iters_timed == 1
    assert "one iteration at batch 1 timed, x 2: batch 2 would outlast --max-seconds" in est.table()


def test_on_a_cpu_a_batch_beyond_its_memory_is_scaled_from_batch_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.estimate import MemoryProbe

    monkeypatch.setattr(MemoryProbe, "capacity", lambda self: 1.0)  # nothing fits this machine
    est = estimate(None, pairs=10, load_size=32, preset="tiny", batch_size=2, device="cpu")
    assert est.scaled_from_batch == 1 and "batch 2 does not fit this machine's memory" in est.table()
    assert est.projections  # the GPUs are still projected
