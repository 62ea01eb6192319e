"""Which share of the work this process does: ``--shard i --num-shards n``, or a Kubernetes Indexed Job's index.

Shared by the commands that split their work across machines (``distill pairs``, ``distill transform``).
"""

from __future__ import annotations

import os

from core.errors import DistillError

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in every pod of an Indexed Job
NUM_SHARDS_ENV = "DISTILL_NUM_SHARDS"


def resolve_shard(
    shard: int | None, num_shards: int | None, environ: dict[str, str] | None = None
) -> tuple[int, int]:
    """This process's (shard, num_shards): the options when given, else a Kubernetes Indexed Job's environment.

    ``JOB_COMPLETION_INDEX`` stands for a missing ``--shard`` and ``DISTILL_NUM_SHARDS`` for a missing
    ``--num-shards`` (the Job's ``completions``, which Kubernetes does not pass to the pod); without them 0 of 1.
    """
    env = os.environ if environ is None else environ

    def from_env(name: str, option: str) -> int | None:
        text = env.get(name, "").strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise DistillError(f"{name}={text!r} is not an integer; fix it or pass {option}") from None

    if shard is None:
        shard = from_env(INDEX_ENV, "--shard")
        if shard is not None and num_shards is None and from_env(NUM_SHARDS_ENV, "--num-shards") is None:
            raise DistillError(
                f"{INDEX_ENV}={shard} gives the shard but not their number: set {NUM_SHARDS_ENV} "
                "(the Indexed Job's completions) or pass --num-shards"
            )
    if num_shards is None:
        num_shards = from_env(NUM_SHARDS_ENV, "--num-shards")
    return (0 if shard is None else shard), (1 if num_shards is None else num_shards)
