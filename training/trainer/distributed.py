"""One process of a (torchrun) distributed run: its rank and device, and the resumable, seeded sampler."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from core.errors import DistillError
from training.dataset import PairDataset
from training.devices import pick_device


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[DistEnv, torch.device]:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device, start the process group (nccl/gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(), pick_device(device_name)
    env = DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world_size
        )
    return env, device


class ResumableSampler(Sampler[tuple[int, int]]):
    """DistributedSampler (seeded permutation per epoch, one shard per rank) that can start mid-epoch.

    Yields ``(epoch, index)`` keys, so the dataset's augmentation follows the epoch without holding state.
    """

    def __init__(self, dataset: PairDataset, env: DistEnv, seed: int) -> None:
        self.inner = DistributedSampler(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed
        )
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch``'s permutation and skip its first ``start`` indices (already trained on)."""
        self.inner.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in itertools.islice(iter(self.inner), self.start, None))

    def __len__(self) -> int:
        return len(self.inner) - self.start


def _worker_init(_: int) -> None:
    """Data workers leave SIGINT/SIGTERM to the main process, which checkpoints and stops cleanly: each
    worker moves to its own process group, so Ctrl-C and a shutdown signal sent to the job's group reach
    the main process only. SIGTERM keeps its default action (the fork copied the main process's
    handler): the main process's exit, after an error too, terminates the workers instead of waiting
    for them forever. A worker whose main process is killed exits by itself (DataLoader's watchdog)."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_message(text: str) -> str:
    """The one-line message of a DistillError raised in a data worker (DataLoader re-raises it with the worker's
    traceback as the message: ``Caught ... Original Traceback ...``, the message on the last line)."""
    if not text.startswith("Caught DistillError in DataLoader"):
        return text
    return (
        text.strip().splitlines()[-1].removeprefix(f"{DistillError.__module__}.{DistillError.__qualname__}: ")
    )
