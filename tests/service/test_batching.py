"""app.batching.MicroBatcher: grouping by shape, limits, the bounded queue, batching off, failures, and
waiting for company only while requests are on their way (a lone request is dispatched at once).

No wall-clock windows: what must not wait runs under a ``max_wait`` no test could sit out (finishing proves it did
not wait), and the order of events (queued, on its way, arrived, served) is driven and checked step by step."""

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


async def arrive(batcher: MicroBatcher, x: np.ndarray, decode_s: float):
    """A request as the service makes one: on its way for ``decode_s`` (decoding), then submitted."""
    with batcher.expecting():
        await asyncio.sleep(decode_s)
    return await batcher.submit(x)


NEVER_S = 3600.0  # a max_wait no test sits out: a test that finishes shows nothing waited for it
GUARD_S = 60.0  # a batcher stuck waiting fails its test instead of hanging the suite


def run_scenario(batcher: MicroBatcher, scenario):
    async def main():
        batcher.start()
        try:
            return await asyncio.wait_for(scenario(), GUARD_S)
        finally:
            await batcher.stop()

    return asyncio.run(main())


async def settle(condition, what: str) -> None:
    """Hand the event loop to the batcher until ``condition()`` holds, then some more (no clock involved)."""
    for _ in range(10_000):
        if condition():
            for _ in range(100):  # every chance to act on it (e.g. to dispatch too early)
                await asyncio.sleep(0)
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def test_lone_request_is_dispatched_without_waiting_for_company():
    for decode_s in (0.0, 0.01):  # submitted directly, and announced while "decoding" like the service does
        batcher = MicroBatcher(SlowModel(0.0), max_batch=8, max_wait_s=NEVER_S, queue_size=8)
        result = run_scenario(batcher, lambda b=batcher, d=decode_s: arrive(b, image(1), d))
        assert result.batch_size == 1


def test_queued_request_waits_for_one_on_its_way():
    model = SlowModel(0.0)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=NEVER_S, queue_size=8)

    async def scenario():
        with batcher.expecting():  # the second request is on its way (decoding) ...
            first = asyncio.create_task(batcher.submit(image(1)))
            await settle(lambda: batcher.depth == 1, "the first request queued")
            assert model.batch_sizes == [] and not first.done()  # ... so the first waits for it
        second = await batcher.submit(image(2))  # it arrives (right after its block, as the service does)
        return await first, second

    first, second = run_scenario(batcher, scenario)
    assert model.batch_sizes == [2] and first.batch_size == second.batch_size == 2


def test_wait_for_requests_on_their_way_is_bounded_by_max_wait():
    model = SlowModel(0.0)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.05, queue_size=8)

    async def scenario():
        with batcher.expecting():  # on its way, and arriving only once the first has been served
            first = await batcher.submit(image(1))
            assert model.batch_sizes == [1]
        return first, await batcher.submit(image(2))

    first, second = run_scenario(batcher, scenario)
    assert model.batch_sizes == [1, 1] and first.batch_size == second.batch_size == 1
    assert first.queue_s >= 0.05  # it did wait for company, for max_wait


def test_a_request_that_fails_on_its_way_ends_the_wait():
    model = SlowModel(0.0)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=NEVER_S, queue_size=8)

    async def scenario():
        with pytest.raises(ValueError), batcher.expecting():  # a request on its way ...
            first = asyncio.create_task(batcher.submit(image(1)))
            await settle(lambda: batcher.depth == 1, "the first request queued")
            assert not first.done()
            raise ValueError("not an image")  # ... turns out to be a bad upload: the wait for it ends at once
        return await first

    result = run_scenario(batcher, scenario)
    assert batcher.on_its_way == 0 and result.batch_size == 1 and model.batch_sizes == [1]


def test_staggered_arrivals_under_load_still_form_batches():
    model = SlowModel(0.02)
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.005, queue_size=64)
    decode_s = np.random.default_rng(0).uniform(0.0, 0.05, 24)

    async def scenario():
        return await asyncio.gather(*(arrive(batcher, image(i), d) for i, d in enumerate(decode_s)))

    results = run_scenario(batcher, scenario)
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.output, np.full((3, 4, 4), 2 * i, np.float32))
    assert sum(model.batch_sizes) == 24 and len(model.batch_sizes) <= 12  # a mean batch of 2 or more


def test_batching_raises_throughput_under_concurrency():
    """A call costs the same whatever its batch (as on a GPU): fewer calls for the same requests is that much
    more throughput. 32 concurrent requests: 32 calls without batching, 4 of 8 with it."""

    def calls(max_batch: int) -> list[int]:
        model = SlowModel(0.0)
        batcher = MicroBatcher(model, max_batch=max_batch, max_wait_s=0.005, queue_size=64)
        asyncio.run(run_concurrently(batcher, [image(i) for i in range(32)]))
        return model.batch_sizes

    assert calls(1) == [1] * 32
    batched = calls(8)
    assert sum(batched) == 32 and max(batched) == 8 and len(batched) <= 5


def test_concurrency_runs_that_many_batches_at_once():
    """Two single-request batches that can only finish together (each waits for the other at a barrier) finish
    with ``concurrency=2``, on two inference threads; a third request waits for a free thread."""
    barrier = threading.Barrier(2, timeout=GUARD_S)
    model = SlowModel(0.0)

    def together(x: np.ndarray) -> np.ndarray:
        if x[0, 0, 0, 0] < 2:  # the first two requests
            barrier.wait()
        return model(x)

    batcher = MicroBatcher(together, max_batch=1, max_wait_s=0.0, queue_size=8, concurrency=2)
    results = asyncio.run(run_concurrently(batcher, [image(i) for i in range(3)]))
    assert [r.output[0, 0, 0] for r in results] == [0, 2, 4] and model.batch_sizes == [1, 1, 1]
    assert len(model.threads) == 2 and barrier.n_waiting == 0 and not barrier.broken
    with pytest.raises(ValueError, match="concurrency 0"):
        MicroBatcher(together, max_batch=1, max_wait_s=0.0, queue_size=8, concurrency=0)


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
