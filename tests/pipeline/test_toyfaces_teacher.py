"""Teacher regression training: it learns, it resumes exactly, it stops cleanly on SIGTERM, its output loads."""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np
import pytest
import torch

from core.errors import DistillError
from distill.cli import main
from networks.stylegan2 import load_generator
from training.devices import cpu_has_native_bf16
from training.toyfaces.teacher import TeacherConfig, TeacherTrainer, make_batch, trained_aligned

TINY = dict(
    resolution=16,
    z_dim=32,
    w_dim=32,
    mapping_layers=2,
    channels={4: 32, 8: 32, 16: 16},
    batch=4,
    eval_faces=4,
)
TINY_CLI = [
    "--resolution",
    "16",
    "--z-dim",
    "32",
    "--w-dim",
    "32",
    "--mapping-layers",
    "2",
    "--channels",
    "4:32,8:32,16:16",
    "--batch",
    "4",
    "--eval-faces",
    "4",
    "--eval-every",
    "2",
    "--checkpoint-every",
    "2",
    "--precision",
    "fp32",
    "--threads",
    "1",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_are_a_pure_function_of_seed_and_step():
    z1, x1 = make_batch(0, 5, 2, 32, 16)
    z2, x2 = make_batch(0, 5, 2, 32, 16)
    z3, _ = make_batch(0, 6, 2, 32, 16)
    assert torch.equal(z1, z2) and torch.equal(x1, x2) and not torch.equal(z1, z3)
    assert x1.shape == (2, 3, 16, 16) and x1.min() >= -1 and x1.max() <= 1


def test_a_few_steps_lower_the_loss(tmp_path):
    trainer = TeacherTrainer(tmp_path, TeacherConfig(**TINY, lr=5e-3, precision="fp32"))
    z, target = make_batch(0, 0, 8, 32, 16)
    losses = [trainer.train_step(z, target)["total"] for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_resume_continues_exactly(tmp_path):
    straight = TeacherTrainer(tmp_path / "a", TeacherConfig(**TINY))
    straight.train(steps=4, checkpoint_every=100, eval_every=2, progress=False)

    first = TeacherTrainer(tmp_path / "b", TeacherConfig(**TINY))
    first.train(steps=2, checkpoint_every=100, eval_every=2, progress=False)
    resumed = TeacherTrainer.resume(tmp_path / "b")
    assert resumed.step == 2
    resumed.train(steps=4, checkpoint_every=100, eval_every=2, progress=False)

    assert states_equal(straight.G.state_dict(), resumed.G.state_dict())
    assert states_equal(straight.G_ema.state_dict(), resumed.G_ema.state_dict())
    rows = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert "held_out_psnr" in rows[-1] and rows[-1]["held_out_psnr"] > 0


def test_sigterm_checkpoints_and_stops(tmp_path):
    trainer = TeacherTrainer(tmp_path, TeacherConfig(**TINY))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        reason = trainer.train(steps=100_000, checkpoint_every=100_000, eval_every=100_000, progress=False)
    finally:
        timer.cancel()
    assert reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    resumed = TeacherTrainer.resume(tmp_path)
    assert resumed.step == trainer.step > 0
    assert states_equal(resumed.G.state_dict(), trainer.G.state_dict())


def test_teacher_file_loads_with_the_project_loader(tmp_path):
    trainer = TeacherTrainer(tmp_path, TeacherConfig(**TINY, precision="fp32"))
    trainer.train(steps=2, checkpoint_every=100, eval_every=100, progress=False)
    G = load_generator(tmp_path / "teacher.pt")
    z = torch.randn(2, 32)
    ref = trainer.G_ema.synthesis(trainer.G_ema.mapping(z), noise_mode="const")
    assert torch.allclose(G(z, noise_mode="const"), ref, atol=1e-5)


def test_cli_new_run_refuses_to_overwrite_and_resumes(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        main(["toyfaces", "train-teacher", "--out", out, "--steps", "2", "--device", "cpu", *TINY_CLI]) == 0
    )
    assert (
        main(["toyfaces", "train-teacher", "--out", out, "--steps", "3", "--device", "cpu", *TINY_CLI]) == 2
    )
    assert "--resume" in capsys.readouterr().err
    assert (
        main(
            [
                "toyfaces",
                "train-teacher",
                "--out",
                out,
                "--steps",
                "3",
                "--resume",
                "--device",
                "cpu",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert TeacherTrainer.resume(out).step == 3
    assert main(["toyfaces", "train-teacher", "--out", str(tmp_path / "new"), "--resume"]) == 2


def test_bad_configs_are_clear_errors():
    with pytest.raises(DistillError, match="channels"):
        TeacherConfig(**{**TINY, "channels": {4: 8, 16: 8}})
    with pytest.raises(DistillError, match="z-dim"):
        TeacherConfig(**{**TINY, "z_dim": 8})
    with pytest.raises(DistillError, match="attribute-model"):
        TeacherConfig(**TINY, perceptual_weight=0.1)


def test_warm_start_copies_a_teacher_and_needs_the_same_architecture(tmp_path):
    first = TeacherTrainer(tmp_path / "a", TeacherConfig(**TINY, precision="fp32"))
    first.train(steps=2, checkpoint_every=100, eval_every=100, progress=False)
    source = tmp_path / "a" / "teacher.pt"
    warm = TeacherTrainer(tmp_path / "b", TeacherConfig(**TINY, precision="fp32", init=str(source)))
    assert warm.step == 0 and states_equal(warm.G.state_dict(), load_generator(source).state_dict())
    warm.train(steps=2, checkpoint_every=100, eval_every=100, progress=False)
    source.unlink()  # a resumed run needs its checkpoint only, not the file it started from
    assert TeacherTrainer.resume(tmp_path / "b").step == 2
    with pytest.raises(DistillError, match="different architecture"):
        TeacherTrainer(
            tmp_path / "c",
            TeacherConfig(
                **{**TINY, "channels": {4: 16, 8: 16, 16: 16}}, init=str(tmp_path / "b" / "teacher.pt")
            ),
        )
    with pytest.raises(DistillError, match="not found"):
        TeacherTrainer(tmp_path / "d", TeacherConfig(**TINY, init=str(tmp_path / "missing.pt")))


def test_the_domain_is_aligned_unless_asked_and_old_runs_resume_unaligned(tmp_path):
    _, aligned = make_batch(0, 1, 4, 32, 32)
    _, jittered = make_batch(0, 1, 4, 32, 32, aligned=False)
    assert not torch.equal(aligned, jittered)
    trainer = TeacherTrainer(tmp_path, TeacherConfig(**TINY, precision="fp32"))
    trainer.train(steps=1, checkpoint_every=100, eval_every=100, progress=False)
    assert trained_aligned(load_generator(tmp_path / "teacher.pt"))
    ckpt = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    del ckpt["config"]["aligned"]  # as written before the aligned domain existed
    torch.save(ckpt, tmp_path / "checkpoints" / "latest.pt")
    assert TeacherTrainer.resume(tmp_path).cfg.aligned is False


def test_auto_precision_follows_the_cpu(tmp_path):
    auto = TeacherTrainer(tmp_path / "a", TeacherConfig(**TINY))
    assert auto.uses_bf16 == cpu_has_native_bf16()
    assert not TeacherTrainer(tmp_path / "b", TeacherConfig(**TINY, precision="fp32")).uses_bf16
    assert TeacherTrainer(tmp_path / "c", TeacherConfig(**TINY, precision="bf16")).uses_bf16
