"""Two CPU ranks on gloo (as torchrun would start them): identical weights after steps, only rank 0 writes."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from networks.pix2pixhd import build_discriminator, build_generator, get_preset
from tests.pipeline_helpers import make_pair_dataset, tiny_options
from training.trainer import (
    CHECKPOINT,
    Trainer,
    init_distributed,
    load_checkpoint,
    resolve_epochs,
    resolve_options,
    train,
)

REPO = Path(__file__).resolve().parents[2]
STEPS = 2
EPOCHS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, dataset: str, tmp: str, batch_size: int) -> None:
    """One rank: the environment torchrun sets, the trainer as `distill train` builds it, then dump weights."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    # Each rank is pointed at its own run folder: rank 1's must stay uncreated (only rank 0 writes).
    opts = tiny_options(
        Path(dataset), Path(tmp) / f"run_rank{rank}", max_steps=STEPS, batch_size=batch_size, sample_every=1
    )
    opts = resolve_options(opts, None, Path(opts.out) / CHECKPOINT)
    cfg = resolve_epochs(get_preset("tiny"), EPOCHS, None, None)
    env, device = init_distributed("cpu")
    assert env.rank == rank and env.world_size == world_size
    assert world_size == 1 or dist.get_backend() == "gloo"
    trainer = Trainer(opts, cfg, env, device)
    result = trainer.train()
    assert result.progress.global_step == STEPS
    weights = {f"G.{k}": v for k, v in trainer.objective.g_net.state_dict().items()}
    weights |= {f"D.{k}": v for k, v in trainer.objective.d_net.state_dict().items()}
    torch.save(weights, Path(tmp) / f"weights_rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


def _biases_before_instance_norm() -> set[str]:
    """Names ("G."/"D." prefixed) of conv biases that an InstanceNorm right after them cancels."""
    cfg = get_preset("tiny")
    names = set()
    for prefix, net in (("G.", build_generator(cfg)), ("D.", build_discriminator(cfg))):
        for name, mod in net.named_modules():
            if isinstance(mod, nn.Sequential):
                children = list(mod.children())
                for i, (layer, after) in enumerate(itertools.pairwise(children)):
                    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(
                        after, nn.InstanceNorm2d
                    ):
                        names.add(f"{prefix}{name}.{i}.bias".replace("..", ".").lstrip("."))
    return names


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pairs and a finished 2-rank run of STEPS steps (batch 2 per rank), each rank's weights dumped."""
    tmp = tmp_path_factory.mktemp("ddp")
    dataset = make_pair_dataset(tmp / "pairs", n=12)
    mp.spawn(_rank_main, args=(2, _free_port(), str(dataset), str(tmp), 2), nprocs=2, join=True)
    return tmp


def test_two_ranks_hold_identical_weights_and_only_rank0_writes(two_rank_run: Path) -> None:
    w0 = torch.load(two_rank_run / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(two_rank_run / "weights_rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    run0 = two_rank_run / "run_rank0"
    assert not (two_rank_run / "run_rank1").exists()
    ckpt = load_checkpoint(run0 / CHECKPOINT)
    assert ckpt["world_size"] == 2 and ckpt["global_step"] == STEPS
    assert all(torch.equal(ckpt["G"][k[2:]], v) for k, v in w0.items() if k.startswith("G."))
    assert len(list((run0 / "samples").glob("*.png"))) == STEPS
    rows = [json.loads(line) for line in (run0 / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == list(range(1, STEPS + 1))


def test_two_ranks_match_one_process_with_the_global_batch(two_rank_run: Path, tmp_path: Path) -> None:
    """DDP averages gradients: 2 ranks x batch 2 train like 1 process x batch 4 on the same samples.

    Conv biases followed by InstanceNorm are skipped: the norm cancels them, their true gradient is zero
    and Adam scales the float rounding noise left in it up to full-size steps of either sign.
    DistributedSampler deals the epoch's permutation round-robin, so each of the first STEPS global
    batches holds the same four pairs in both runs (the epoch end, where DDP pads, is not reached).
    """
    ddp = torch.load(two_rank_run / "weights_rank0.pt", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opts = tiny_options(two_rank_run / "pairs", tmp_path / "single", max_steps=STEPS, batch_size=4)
        train(opts, epochs=EPOCHS)
    finally:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(tmp_path / "single" / CHECKPOINT)
    one = {f"G.{k}": v for k, v in ckpt["G"].items()} | {f"D.{k}": v for k, v in ckpt["D"].items()}
    init = train(tiny_options(two_rank_run / "pairs", tmp_path / "init", max_steps=0), epochs=EPOCHS)
    assert init.progress.global_step == 0
    start = load_checkpoint(tmp_path / "init" / CHECKPOINT)["G"]
    moved = max((ddp[f"G.{k}"] - v).abs().max().item() for k, v in start.items())
    cancelled = _biases_before_instance_norm()
    compared = [k for k in ddp if k not in cancelled]
    assert len(compared) > len(ddp) // 2
    worst = max((ddp[k] - one[k]).abs().max().item() for k in compared)
    assert moved > 1e-4 and worst < 1e-6, (worst, moved)


@pytest.mark.slow
def test_torchrun_cli_two_ranks(tmp_path: Path) -> None:
    """The documented launch: `torchrun --nproc_per_node 2 -m distill train ...` (gloo on CPU), then resume."""
    dataset = make_pair_dataset(tmp_path / "pairs", n=12)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "distill",
        "train",
        str(dataset),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--epochs",
        "2",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--max-steps",
        "3",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for extra in ([], ["--resume", "--max-steps", "5"]):
        done = subprocess.run(cmd + extra, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert ckpt["world_size"] == 2 and ckpt["global_step"] == 5
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
