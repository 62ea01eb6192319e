"""Trainer and dataset: kept rows only, stable split, paired flips, exact resume, SIGTERM checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.errors import DistillError
from editing.images import load_image
from networks.pix2pixhd import load_generator
from tests.pipeline_helpers import make_pair_dataset, tiny_options
from training.dataset import PairDataset, load_split, resolve_geometry, split_rows
from training.manifest import PairRecord, read_manifest
from training.trainer import CHECKPOINT, learning_rate, load_checkpoint, resolve_epochs, train

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return make_pair_dataset(tmp_path / "pairs", keep=[i % 5 != 3 for i in range(12)])


def all_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    return {f"G.{k}": v for k, v in ckpt["G"].items()} | {f"D.{k}": v for k, v in ckpt["D"].items()}


# ---------------------------------------------------------------------------------------------- dataset


def test_split_disjoint_stable_and_only_kept(pairs: Path) -> None:
    split = load_split(pairs, stride=4, val_fraction=0.25, seed=3)
    train_seeds = {r.seed for r in split.train.rows}
    val_seeds = {r.seed for r in split.val.rows}
    rejected = {r.seed for r in read_manifest(pairs) if r.keep is False}
    assert rejected and not (train_seeds | val_seeds) & rejected
    assert not train_seeds & val_seeds and val_seeds
    assert len(train_seeds | val_seeds) == split.n_kept == 12 - len(rejected)
    # Stable as the dataset grows: new pairs never move an existing pair to the other side.
    rows = read_manifest(pairs)
    more = rows + [
        PairRecord(seed=10_000 + i, a="x", b="y", alpha=1, truncation=1, direction="d") for i in range(200)
    ]
    train2, val2 = split_rows(more, 0.25, seed=3)
    assert {r.seed for r in val2} & {r.seed for r in rows} == {r.seed for r in split_rows(rows, 0.25, 3)[1]}
    assert 0.15 < len(val2) / len(more) < 0.35


def test_unfiltered_dataset_warns_and_uses_all_rows(tmp_path: Path) -> None:
    root = make_pair_dataset(tmp_path / "raw", n=6)
    with pytest.warns(UserWarning, match="no filter has run"):
        split = load_split(root, stride=4, val_fraction=0.0)
    assert len(split.train) == 6 and len(split.val) == 0


def test_paired_flip_is_a_pure_function_of_seed_epoch_index(pairs: Path) -> None:
    split = load_split(pairs, stride=4, val_fraction=0.2, flip=True, seed=5)
    ds = split.train
    flips = [[ds.flipped(i, e) for i in range(len(ds))] for e in range(4)]
    assert any(any(f) for f in flips) and not all(all(f) for f in flips)
    again = PairDataset(ds.root, ds.rows, ds.geometry, flip=True, seed=5)
    assert flips == [[again.flipped(i, e) for i in range(len(ds))] for e in range(4)]
    e, i = next((e, i) for e in range(4) for i in range(len(ds)) if flips[e][i])
    item = ds[(e, i)]
    assert torch.equal(ds[i]["a"], ds[(0, i)]["a"])
    a = torch.from_numpy(load_image(pairs / ds.rows[i].a).copy()).permute(2, 0, 1).float() / 127.5 - 1
    b = torch.from_numpy(load_image(pairs / ds.rows[i].b).copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(item["a"], a.flip(-1)) and torch.allclose(item["b"], b.flip(-1))
    assert item["a"].shape == (3, 32, 32) and item["a"].min() >= -1 and item["a"].max() <= 1


def test_load_size_must_match_stride(pairs: Path) -> None:
    with pytest.raises(DistillError, match="multiple of the generator stride 8"):
        resolve_geometry((32, 32), 8, 20)
    with pytest.raises(DistillError, match="--load-size"):
        resolve_geometry((36, 36), 8, None)
    split = load_split(pairs, stride=8, load_size=16, val_fraction=0.2)
    assert split.train[0]["a"].shape == (3, 16, 16)


def test_lr_schedule_and_epochs() -> None:
    from networks.pix2pixhd import get_preset

    cfg = resolve_epochs(get_preset("tiny"), 4, None, None)
    assert (cfg.niter, cfg.niter_decay) == (2, 2)
    assert [learning_rate(cfg, e) / cfg.lr for e in range(4)] == [1.0, 1.0, 1.0, 0.5]
    with pytest.raises(DistillError):
        resolve_epochs(cfg, 4, 1, 1)


# ---------------------------------------------------------------------------------------------- training


def test_resume_mid_epoch_equals_uninterrupted_run(pairs: Path, tmp_path: Path) -> None:
    """6 steps in one go vs 3 steps + resume to 5 + resume to 6 (all mid-epoch): identical G, D and Adam state."""
    epochs = 3  # 8 or 9 train pairs / batch 2 = 4 or 5 steps an epoch: every stop falls inside an epoch
    full = train(tiny_options(pairs, tmp_path / "full", max_steps=6), epochs=epochs)
    assert full.progress.global_step == 6 and full.status == "max_steps"
    out = tmp_path / "parts"
    first = train(tiny_options(pairs, out, max_steps=3), epochs=epochs)
    assert (first.progress.epoch, first.progress.step_in_epoch) == (0, 3)
    with pytest.raises(DistillError, match="already holds a run"):
        train(tiny_options(pairs, out, max_steps=5), epochs=epochs)
    with pytest.raises(DistillError, match="batch_size"):
        train(tiny_options(pairs, out, max_steps=5, batch_size=4), resume=True, epochs=epochs)
    train(tiny_options(pairs, out, max_steps=5, preset=None, batch_size=None), resume=True, epochs=epochs)
    second = train(tiny_options(pairs, out, max_steps=6), resume=True, epochs=epochs)
    per_epoch = json.loads((out / "run.json").read_text())["steps_per_epoch"]
    assert 3 < per_epoch < 6 and second.progress.global_step == 6
    assert (second.progress.epoch, second.progress.step_in_epoch) == (1, 6 - per_epoch)

    a, b = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(out / CHECKPOINT)
    wa, wb = all_weights(a), all_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = a["optimizer_G"]["state"], b["optimizer_G"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # Training moved the weights away from the initialisation.
    fresh = train(tiny_options(pairs, tmp_path / "zero", max_steps=0), epochs=epochs)
    assert fresh.progress.global_step == 0
    w0 = all_weights(load_checkpoint(tmp_path / "zero" / CHECKPOINT))
    assert any(not torch.equal(w0[k], wa[k]) for k in wa)

    # The metrics log of the resumed run matches the uninterrupted one, step for step.
    def steps(run: Path) -> list[tuple[int, float]]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss_G"]) for r in rows if r["kind"] == "step"]

    assert steps(out) == steps(tmp_path / "full") and len(steps(out)) == 6


def test_run_folder_contents(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(tiny_options(pairs, out), {"lambda_l1": 1.0}, epochs=2)
    assert result.status == "finished" and result.progress.epoch == 2
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["lambda_l1"] == 1.0
    assert info["loss_terms"] == ["G_GAN", "G_feat", "G_l1"]
    assert info["data"]["kept"] == 10 and info["data"]["train"] + info["data"]["val"] == 10
    assert info["dataset_metadata"]["teacher"] == "synthetic"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(r["val_psnr"] > 0 and -1 <= r["val_ssim"] <= 1 for r in epochs)
    step_rows = [r for r in rows if r["kind"] == "step"]
    assert all(r["images_per_s"] > 0 and "loss_G_l1" in r and "loss_D" in r for r in step_rows)
    samples = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_00000003.png", "step_00000006.png", "step_00000009.png"][
        : len(samples)
    ]
    grid = load_image(samples[0])
    assert grid.shape[0] == 3 * 34 + 2  # three rows (input | student | target) of 32 px, 2 px padding
    G = load_generator(out / CHECKPOINT)
    assert G(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_training_learns_the_edit(tmp_path: Path) -> None:
    """On a learnable edit (B = channel roll + brightness of A) held-out PSNR climbs epoch after epoch."""
    pairs = make_pair_dataset(tmp_path / "pairs", n=16)
    out = tmp_path / "run"
    train(tiny_options(pairs, out, val_fraction=0.25, sample_every=1000), {"lambda_l1": 10.0}, epochs=8)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [r["val_psnr"] for r in rows if r["kind"] == "epoch"]
    assert len(curve) == 8 and curve[-1] > curve[0] + 6, curve


def test_vgg_term_with_weights_file(pairs: Path, tmp_path: Path) -> None:
    """--vgg19 with a file in torchvision's layout adds the perceptual term; a wrong file is a clear error."""
    from networks.pix2pixhd.losses import VGG19Features

    vgg_path = tmp_path / "vgg19.pth"
    torch.manual_seed(0)
    torch.save(VGG19Features().state_dict(), vgg_path)
    out = tmp_path / "run"
    train(tiny_options(pairs, out, max_steps=2, vgg19=str(vgg_path)), {"lambda_vgg": 10.0}, epochs=2)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_G_vgg"] > 0 for r in rows if r["kind"] == "step")
    assert json.loads((out / "run.json").read_text())["loss_terms"] == ["G_GAN", "G_feat", "G_vgg"]
    torch.save({"features.0.weight": torch.zeros(1)}, vgg_path)
    with pytest.raises(DistillError, match="VGG19"):
        train(
            tiny_options(pairs, tmp_path / "bad", max_steps=1, vgg19=str(vgg_path)),
            {"lambda_vgg": 10.0},
            epochs=1,
        )


def test_sigterm_checkpoints_then_resume(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "train",
        str(pairs),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--epochs",
        "50",
        "--val-fraction",
        "0.2",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGTERM" in err
    ckpt = load_checkpoint(out / CHECKPOINT)
    stopped = ckpt["global_step"]
    assert stopped >= 2 and json.loads((out / "run.json").read_text())["status"] == "interrupted"
    done = train(tiny_options(pairs, out, max_steps=stopped + 2, preset=None, batch_size=None), resume=True)
    assert done.status == "max_steps" and load_checkpoint(out / CHECKPOINT)["global_step"] == stopped + 2
    logged = [
        row["step"] for row in map(json.loads, metrics.read_text().splitlines()) if row["kind"] == "step"
    ]
    assert logged == sorted(set(logged))  # no step logged twice after the resume


def test_cli_errors_are_one_line(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from distill.cli import main

    args = [
        "train",
        str(pairs),
        "--out",
        str(tmp_path / "r"),
        "--preset",
        "slim",
        "--load-size",
        "20",
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        "multiple of the generator stride 8" in err
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    )


def test_cli_resume_keeps_the_runs_options_and_says_where_it_resumes(
    pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from distill.cli import main

    out = tmp_path / "r"
    first = ["train", str(pairs), "--out", str(out), "--preset", "tiny", "--batch-size", "2"]
    first += ["--device", "cpu", "--workers", "0", "--max-steps", "2", "--sample-every", "1", "--no-progress"]
    assert main(first) == 0
    capsys.readouterr()

    assert main(["train", str(pairs), "--out", str(out), "--resume"]) == 0  # the run's --max-steps 2 holds
    err = capsys.readouterr().err
    assert "resuming" in err and "at step 2 of 2" in err and "--max-steps above 2" in err
    assert load_checkpoint(out / CHECKPOINT)["global_step"] == 2

    assert main(["train", str(pairs), "--out", str(out), "--resume", "--max-steps", "4"]) == 0
    err = capsys.readouterr().err
    assert "at step 2 of 4" in err and "max_steps 2 -> 4" in err
    assert (out / "samples" / "step_00000003.png").is_file()  # --sample-every 1 kept
    options = load_checkpoint(out / CHECKPOINT)["options"]
    assert options["workers"] == 0 and options["progress"] is False and options["max_steps"] == 4
