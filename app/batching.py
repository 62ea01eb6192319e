"""Dynamic micro-batching in front of one model: a bounded queue, max batch size, max wait.

Requests are queued as [1,3,H,W] arrays. One asyncio task per model takes the oldest request and
batches it with the queued requests *of the same shape* (up to ``max_batch``), concatenates them and
runs the model in a dedicated worker thread, so the event loop never blocks. While a batch runs, new
arrivals queue up and form the next batch: under load, batches grow by themselves. With ``concurrency``
N > 1 up to N batches run at once, each in its own worker thread (for an engine with N streams, as
OpenVINO's throughput mode: one small batch per core can beat one batch spread over every core); the
next batch is formed as soon as a thread is free.

Waiting for company only pays when company is coming. Callers mark a request as *on its way* with
:meth:`MicroBatcher.expecting` while they decode it; the batcher waits (at most ``max_wait_s``,
counted from the oldest request's arrival) only while such requests exist and the batch is not full.
A lone request, with nothing else queued or on its way, is dispatched at once instead of paying
``max_wait_s`` for company that cannot come (a fixed delay would add ``max_wait_s`` to every request
of an idle service). Requests that are still being received over HTTP are not known yet, so they
join the next batch. ``max_batch=1`` turns batching off (every request runs alone, no waiting);
``max_wait_s=0`` is greedy batching (a batch is whatever is queued when the model frees up, as
Triton's default).

A strength-conditioned model takes a strength vector per request (``submit(x, strength)``, float32 [K]: one
strength per edit, K = 1 for a one-edit dial): requests of different vectors share a batch, which runs as
``run_batch(x, strengths)`` with the per-item float32 [N, K] matrix; a batch without strengths runs as
``run_batch(x)``.

The queue is bounded: a request arriving when ``queue_size`` are already waiting gets
:class:`QueueFullError` (the service answers 503 with ``Retry-After``) instead of unbounded latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class QueueFullError(Exception):
    """The model's queue is full; ``retry_after_s`` estimates when there will be room."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        super().__init__(f"{depth} requests are already waiting for this model")
        self.depth = depth
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BatchResult:
    """One request's output [3,H,W] and how it was served."""

    output: np.ndarray
    queue_s: float  # from submit() to its batch starting
    inference_s: float  # the whole batch's model time
    batch_size: int


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    strength: np.ndarray | None = None  # float32 [K]: the request's strength per edit


class MicroBatcher:
    """Groups same-shape requests for ``run_batch`` ([N,3,H,W] -> [N,3,H,W]); see the module docstring."""

    def __init__(
        self,
        run_batch: Callable[..., np.ndarray],  # (x [N,3,H,W]) or (x, strengths [N, K]) -> [N,3,H,W]
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        name: str = "model",
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or concurrency < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch {max_batch}, queue_size {queue_size} and concurrency {concurrency} must be >= 1, "
                f"max_wait_s {max_wait_s} >= 0"
            )
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s if max_batch > 1 else 0.0
        self.queue_size = queue_size
        self.name = name
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._pending: deque[_Pending] = deque()
        self._arrived = (
            asyncio.Event()
        )  # set on every change that may end a wait: an arrival, one less on its way
        self._on_its_way = 0
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"infer-{name}")
        self._slots = asyncio.Semaphore(concurrency)  # batches that may run at once
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._batch_s_ewma = 0.0

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._pending)

    @property
    def on_its_way(self) -> int:
        """Requests announced by :meth:`expecting` that have not reached :meth:`submit` yet."""
        return self._on_its_way

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark one request as on its way (being decoded) for the block: queued requests wait for it.

        Leave the block right before :meth:`submit` (nothing awaited in between, so the batcher never
        sees the request as neither on its way nor queued). Leaving it on an error (a bad upload) ends
        any wait for it at once.
        """
        self._on_its_way += 1
        try:
            yield
        finally:
            self._on_its_way -= 1
            self._arrived.set()

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop the task and the running batches, fail queued requests, release the inference threads."""
        for task in [self._task, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the service is shutting down"))
        self._set_depth()
        self._executor.shutdown(wait=True)

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained (at least 1), from the recent batch time."""
        batches = math.ceil(self.depth / (self.max_batch * self.concurrency))
        return max(1, math.ceil(batches * self._batch_s_ewma))

    async def submit(self, x: np.ndarray, strength: np.ndarray | None = None) -> BatchResult:
        """Queue one [1,3,H,W] input (with its edit strengths [K] for a conditional model) and wait for its output;
        QueueFullError when the queue is full."""
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"submit one image [1,3,H,W], got {x.shape}")
        if self.depth >= self.queue_size:
            raise QueueFullError(self.depth, self.retry_after_s())
        item = _Pending(x, asyncio.get_running_loop().create_future(), strength=strength)
        self._pending.append(item)
        self._set_depth()
        self._arrived.set()
        return await item.future

    def _set_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self.depth)

    def _take_batch(self) -> list[_Pending]:
        """Remove and return up to max_batch live requests with the oldest request's shape (FIFO within it)."""
        shape = self._pending[0].x.shape
        batch: list[_Pending] = []
        keep: deque[_Pending] = deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():  # the client went away (cancelled) before its turn
                continue
            if item.x.shape == shape and len(batch) < self.max_batch:
                batch.append(item)
            else:
                keep.append(item)
        self._pending = keep
        self._set_depth()
        return batch

    def _ready_count(self) -> int:
        shape = self._pending[0].x.shape
        return sum(1 for item in self._pending if item.x.shape == shape)

    def _worth_waiting(self) -> bool:
        """Whether the oldest request's batch can still grow: not full, and requests on their way to join it."""
        return self._on_its_way > 0 and self._ready_count() < self.max_batch

    def _run(self, inputs: list[np.ndarray], strengths: list[np.ndarray | None] | None = None) -> np.ndarray:
        """In the inference thread: stack the batch (megabytes at 512 px, so off the event loop) and run it, with
        the per-item strength vectors stacked [N, K] when any item has strengths."""
        x = np.concatenate(inputs) if len(inputs) > 1 else inputs[0]
        if not strengths or all(s is None for s in strengths):
            return self.run_batch(x)
        if any(s is None for s in strengths):
            raise ValueError("a batch mixes requests with and without a strength")
        return self.run_batch(x, np.asarray(strengths, np.float32))

    async def _loop(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()  # a free inference thread; meanwhile arrivals join the next batch
            deadline = self._pending[0].enqueued + self.max_wait_s
            while self._worth_waiting() and (remaining := deadline - time.perf_counter()) > 0:
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        """Run one batch in an inference thread and answer its requests; frees its slot when done."""
        try:
            started = time.perf_counter()
            try:
                y = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run, [item.x for item in batch], [item.strength for item in batch]
                )
            except Exception as e:  # a model failure fails this batch's requests, not the batcher
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                return
            inference_s = time.perf_counter() - started
            self._batch_s_ewma = (
                inference_s if not self._batch_s_ewma else 0.8 * self._batch_s_ewma + 0.2 * inference_s
            )
            if self._on_batch is not None:
                self._on_batch(len(batch), inference_s)
            for i, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result(
                        BatchResult(y[i], started - item.enqueued, inference_s, len(batch))
                    )
        finally:
            self._slots.release()
