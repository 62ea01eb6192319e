"""app.batching.MicroBatcher: grouping by shape, limits, the bounded queue, batching off, failures."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.batching import MicroBatcher, QueueFullError


class SlowModel:
    """Doubles its input; every call costs ``delay`` seconds whatever the batch size (like a GPU, or ORT's threads)."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(x.shape[0])
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return x * 2


def image(value: float, size: int = 4) -> np.ndarray:
    return np.full((1, 3, size, size), value, np.float32)


async def run_concurrently(batcher: MicroBatcher, inputs: list[np.ndarray]):
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)
    finally:
        await batcher.stop()


def test_concurrent_requests_are_batched_and_answered_in_order():
    model = SlowModel()
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.05, queue_size=64)
    results = asyncio.run(run_concurrently(batcher, [image(i) for i in range(10)]))
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.output, np.full((3, 4, 4), 2 * i, np.float32))
    assert max(model.batch_sizes) == 4 and sum(model.batch_sizes) == 10
    assert len(model.batch_sizes) <= 4  # 10 requests in at most 4 calls (4+4+2, or close)
    assert all(name.startswith("infer-") for name in model.threads)  # never on the event loop's thread


def test_batching_off_runs_one_at_a_time():
    model = SlowModel(0.0)
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.05, queue_size=64)
    results = asyncio.run(run_concurrently(batcher, [image(i) for i in range(5)]))
    assert model.batch_sizes == [1] * 5 and all(r.batch_size == 1 for r in results)


def test_different_shapes_never_share_a_batch():
    model = SlowModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.05, queue_size=64)
    inputs = [image(i, size=4 if i % 2 else 8) for i in range(6)]
    results = asyncio.run(run_concurrently(batcher, inputs))
    for x, r in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(r.output, x[0] * 2)
    assert sum(model.batch_sizes) == 6 and len(model.batch_sizes) >= 2


def test_full_queue_rejects_with_retry_after():
    model = SlowModel(0.05)
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0, queue_size=2)
    results = asyncio.run(run_concurrently(batcher, [image(i) for i in range(8)]))
    rejected = [r for r in results if isinstance(r, QueueFullError)]
    served = [r for r in results if not isinstance(r, Exception)]
    assert rejected and served and len(rejected) + len(served) == 8
    assert all(r.retry_after_s >= 1 for r in rejected)


def test_lone_request_waits_at_most_max_wait():
    model = SlowModel(0.0)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.03, queue_size=8)
    [result] = asyncio.run(run_concurrently(batcher, [image(1)]))
    assert 0.02 <= result.queue_s < 0.5


def test_batching_raises_throughput_under_concurrency():
    def elapsed(max_batch: int) -> float:
        batcher = MicroBatcher(SlowModel(0.02), max_batch=max_batch, max_wait_s=0.005, queue_size=64)
        t0 = time.perf_counter()
        asyncio.run(run_concurrently(batcher, [image(i) for i in range(32)]))
        return time.perf_counter() - t0

    # 32 requests: one call each (>= 0.64 s) without batching, about 4 calls of 8 with it.
    assert elapsed(8) * 2 < elapsed(1)


def test_model_failure_fails_the_batch_not_the_batcher():
    calls = []

    def flaky(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x

    async def scenario():
        batcher = MicroBatcher(flaky, max_batch=1, max_wait_s=0.0, queue_size=4)
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit(image(1))
            return await batcher.submit(image(2))
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()).output[0, 0, 0] == 2
