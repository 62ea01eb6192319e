"""The legacy (projection) path, isolated in its own bounded pool of processes with a timeout.

A projection is hundreds of torch optimisation steps of mostly small operations. Run in the web
process, its Python work would compete with the event loop for the GIL and slow ``/transform``;
so it runs in separate processes (``spawn``, torch limited to ``legacy_threads`` threads each),
which also keeps torch out of the web process entirely. The pool admits ``workers`` running jobs
plus ``queue`` waiting ones; beyond that :class:`LegacyBusyError` (503). Every job carries an
absolute deadline that the projector polls (``should_stop``), so a timed-out job stops by itself
and frees its process; the caller gets :class:`LegacyTimeoutError` (504) at the same moment. A job
still running ``_GRACE_S`` past its deadline has a hung process (stopped, stuck in native code): the
pool's processes are killed and a fresh pool serves the next request, so a hang costs one 504 (and
503 ``legacy_unavailable`` to the jobs that shared the pool), never the endpoint. A teacher or
direction that cannot be loaded is a :class:`LegacyLoadError` with the reason.

Each submitted job holds one of the pool's ``workers + queue`` slots (from :meth:`LegacyExecutor.reserve` on, for
a request whose several faces are projected one after the other) in arrays shared with the processes
(:class:`LegacyWatch`): the process writes the steps done and its start time there, and polls the slot's
cancel flag with the deadline, so :meth:`LegacyExecutor.cancel` stops a projection at its next step
(:class:`LegacyCancelledError`) and frees its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger("app.legacy")

_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
_PARENT_POLL_S = 1.0  # how often a projection process checks that its parent is alive
_GRACE_S = 2.0  # how long past the deadline the web process waits for a job that does not poll should_stop
_CACHE: dict[tuple[str, ...], tuple[Any, Any]] = {}  # per pool process: (teacher, directions...) -> loaded
_STOP: Any = None  # per pool process: the pool's shutdown event
_SLOTS: tuple[Any, Any, Any] | None = (
    None  # per pool process: shared (steps done, cancel flag, start time) per slot
)


class LegacyBusyError(Exception):
    """Every projection slot (running + queued) is taken."""


class LegacyTimeoutError(Exception):
    """The projection did not finish before its deadline."""


class LegacyUnavailableError(Exception):
    """A projection process died (killed, out of memory); the next request gets a fresh pool."""


class LegacyCancelledError(Exception):
    """The projection was cancelled (:meth:`LegacyExecutor.cancel`) and stopped at its next step."""


class LegacyLoadError(Exception):
    """The teacher or the direction cannot be loaded (unreadable, not a checkpoint, refused pickle); raised in a
    pool process and pickled back by reference (one string argument)."""


@dataclass(frozen=True)
class LegacyEdit:
    """One edit of a projection: the direction file, its latent strength (relative strength x alpha), W+ layers."""

    direction: Path
    alpha: float
    layers: tuple[int, int]


@dataclass(frozen=True)
class LegacyJob:
    """What one projection needs: the entry's teacher, the edits (``w + sum_k alpha_k d_k``, each on its layers)
    and the optimisation budget."""

    teacher: Path
    edits: tuple[LegacyEdit, ...]
    normalize: bool
    steps: int
    vgg16: Path | None = None
    seed: int = 0


@dataclass
class LegacyWatch:
    """A caller's handle on its projections: the slot one runs in (None before submission, after it ends), and
    the slot :meth:`LegacyExecutor.reserve` holds for it across several projections (one per face)."""

    slot: int | None = None
    cancelled: bool = False
    held: int | None = None
    released: bool = False


def _init_worker(threads: int, stop: Any, slots: tuple[Any, Any, Any], parent: int) -> None:
    exit_with_parent(parent)
    import torch  # imported here: only projection processes load torch

    global _STOP, _SLOTS
    _STOP, _SLOTS = stop, slots
    torch.set_num_threads(threads)


def exit_with_parent(parent: int, poll_s: float = _PARENT_POLL_S) -> None:
    """End this process when ``parent`` (the web worker) dies, however it dies (SIGKILL, out of memory).

    A pool process never sees end-of-file from its parent (it holds both ends of the call queue's pipe), so
    it would wait forever, re-parented to PID 1. On Linux the kernel sends SIGKILL at the parent's death
    (``PR_SET_PDEATHSIG``: the pool is started from the event loop's thread, which lives as long as the
    worker); everywhere a daemon thread also checks every ``poll_s`` seconds that the parent is still ours.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _warm_worker(jobs: list[LegacyJob]) -> None:
    """Pay the start-up costs before the first request: torch import, teacher loading, W statistics,
    the optimizer's first step (lazy imports): a 2-step projection of a grey picture per teacher."""
    for job in jobs:
        res = _load(job)[0].img_resolution
        _run_job(replace(job, steps=2), np.full((res, res, 3), 128, np.uint8), time.time() + 600, None)


def _load(job: LegacyJob) -> tuple[Any, Any]:
    from editing.directions import load_direction
    from networks.stylegan2 import load_generator

    key = (str(job.teacher), *(str(e.direction) for e in job.edits))
    if key not in _CACHE:
        what = f"the teacher {job.teacher.name}"
        try:
            G = load_generator(job.teacher, device="cpu")
            directions = []
            for e in job.edits:
                what = f"the direction {e.direction.name}"
                directions.append(load_direction(e.direction, G.num_ws, G.w_dim))
            _CACHE[key] = (G, directions)
        except Exception as e:  # whatever the loaders raise: the reason goes back to the web process
            raise LegacyLoadError(f"{what} cannot be loaded ({type(e).__name__}: {e})") from None
    return _CACHE[key]


def _run_job(
    job: LegacyJob, pixels: np.ndarray, deadline: float, slot: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """In a pool process: project ``pixels`` (uint8 [H,W,3]) with the teacher, edit, synthesize, back to uint8;
    steps done go to the shared ``slot``, whose cancel flag stops the projection like the deadline does."""
    from editing.directions import LatentEdit
    from editing.images import from_uint8, to_uint8
    from editing.projector import ProjectionStopped, legacy_edits

    started = time.perf_counter()
    done, cancel, start = _SLOTS if _SLOTS is not None and slot is not None else (None, None, None)
    if start is not None:
        start[slot] = time.time()
    G, directions = _load(job)
    res = G.img_resolution
    h, w = pixels.shape[:2]
    target = from_uint8(np.array(Image.fromarray(pixels).resize((res, res), Image.Resampling.BICUBIC)))
    losses: list[float] = []
    try:
        edited = legacy_edits(
            G,
            target,
            [LatentEdit(d, e.alpha, e.layers) for d, e in zip(directions, job.edits, strict=True)],
            steps=job.steps,
            normalize=job.normalize,
            vgg16_path=job.vgg16,
            seed=job.seed,
            should_stop=lambda: (
                time.time() > deadline or _STOP.is_set() or bool(cancel is not None and cancel[slot])
            ),
            progress=lambda step, steps, loss: _progress(losses, loss, done, slot),
        )
    except ProjectionStopped as e:
        if cancel is not None and cancel[slot]:
            raise InterruptedError("the projection was cancelled") from None
        raise TimeoutError(str(e)) from None  # a builtin: custom exceptions may not survive pickling
    out = to_uint8(edited)[0]
    if out.shape[:2] != (h, w):
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.BICUBIC))
    info = {
        "steps": len(losses),
        "loss": losses[-1] if losses else None,
        "resolution": res,
        "seconds": time.perf_counter() - started,
    }
    return out, info


def _progress(losses: list[float], loss: float, done: Any, slot: int | None) -> None:
    losses.append(loss)
    if done is not None:
        done[slot] = len(losses)


class LegacyExecutor:
    """A bounded pool of projection processes (see the module docstring)."""

    def __init__(
        self,
        workers: int,
        queue: int,
        timeout_s: float,
        threads: int,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.timeout_s = timeout_s
        self.threads = threads
        self.active = 0  # slots taken: running, queued and reserved jobs, timed-out ones still stopping
        self._on_depth = on_depth
        self._pool: ProcessPoolExecutor | None = None
        self._context = multiprocessing.get_context("spawn")
        # made with the first pool and dropped at shutdown: its named semaphores are unlinked then, not reported
        # as leaked by the resource tracker when the service stops
        self._stop: Any = None
        # per slot, shared with the processes: steps done, cancel flag, wall-clock start (0 = not started)
        self._slots = (
            self._context.RawArray("q", self.capacity),
            self._context.RawArray("b", self.capacity),
            self._context.RawArray("d", self.capacity),
        )
        self._free = list(range(self.capacity))

    @property
    def enabled(self) -> bool:
        return self.workers > 0

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._stop = self._stop or self._context.Event()
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._context,
                initializer=_init_worker,
                initargs=(self.threads, self._stop, self._slots, os.getpid()),
            )
        return self._pool

    async def warm(self, jobs: list[LegacyJob]) -> None:
        """Start the processes and load ``jobs``' teachers (torch import, weights, W statistics) in them;
        LegacyLoadError when that fails, crashes a process or outlasts the timeout (the pool is then killed)."""
        if self.enabled and jobs:
            pool = self._get_pool()
            warming = asyncio.gather(
                *(asyncio.wrap_future(pool.submit(_warm_worker, jobs)) for _ in range(self.workers))
            )
            try:
                await asyncio.wait_for(warming, self.timeout_s)
            except BrokenProcessPool as e:  # the teacher crashed the process: the next job gets a fresh pool
                self._discard_pool()
                raise LegacyLoadError(
                    f"the teacher {jobs[0].teacher.name} crashed the projection process"
                ) from e
            except (TimeoutError, asyncio.TimeoutError) as e:
                self._kill_pool(pool)
                raise LegacyLoadError(
                    f"loading the teacher {jobs[0].teacher.name} took longer than "
                    f"{self.timeout_s:g} s (a hung projection process, killed)"
                ) from e

    async def run(
        self, job: LegacyJob, pixels: np.ndarray, watch: LegacyWatch | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Project-edit-synthesize ``pixels`` in the pool; LegacyBusyError / LegacyTimeoutError /
        LegacyCancelledError as documented; ``watch`` follows its progress (:meth:`steps_done`, :meth:`cancel`)."""
        watch = watch or LegacyWatch()
        if watch.cancelled:
            raise LegacyCancelledError("the projection was cancelled")
        if watch.released:
            raise ValueError("this watch's slot was released; reserve another")
        slot = watch.held if watch.held is not None else self._take_slot()
        deadline = time.time() + self.timeout_s
        for array in self._slots:
            array[slot] = 0
        try:
            pool = self._get_pool()
            try:
                future = pool.submit(_run_job, job, pixels, deadline, slot)
            except BrokenProcessPool:  # a process died since the last job: start over once
                self._discard_pool()
                pool = self._get_pool()
                future = pool.submit(_run_job, job, pixels, deadline, slot)
        except BaseException:
            if watch.held is None:
                self._give_back(slot)
            raise
        watch.slot = slot
        wrapped = asyncio.wrap_future(future)
        wrapped.add_done_callback(lambda f: self._release(f, slot, watch))
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), self.timeout_s + _GRACE_S)
        except InterruptedError as e:
            raise LegacyCancelledError(str(e)) from e
        except (TimeoutError, asyncio.TimeoutError) as e:
            if not wrapped.done():  # it ignored its deadline: its process is hung
                log.error(
                    "a projection is still running %g s past its deadline: its process is hung; "
                    "killing the pool's processes, the next request starts a fresh pool",
                    _GRACE_S,
                )
                self._kill_pool(pool)
            raise LegacyTimeoutError(f"the projection did not finish within {self.timeout_s:g} s") from e
        except BrokenProcessPool as e:
            log.error("a projection process died; the next request starts a fresh pool")
            self._discard_pool()
            raise LegacyUnavailableError("the projection process died; retry") from e

    def _kill_pool(self, pool: ProcessPoolExecutor) -> None:
        """SIGKILL ``pool``'s processes (a stopped one too) and forget the pool: its jobs fail at once with
        BrokenProcessPool, which frees their slots. ProcessPoolExecutor has no public handle on its processes."""
        for process in list((pool._processes or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        if self._pool is pool:
            self._pool = None

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _set_active(self, active: int) -> None:
        self.active = active
        if self._on_depth is not None:
            self._on_depth(active)

    def steps_done(self, watch: LegacyWatch) -> tuple[int, float | None]:
        """(steps done, wall-clock start or None when still queued) of ``watch``'s running projection."""
        if watch.slot is None:
            return 0, None
        done, _, start = self._slots
        return int(done[watch.slot]), (float(start[watch.slot]) or None)

    def cancel(self, watch: LegacyWatch) -> None:
        """Stop ``watch``'s projection at its next step (a queued one as soon as it starts); later runs refuse it."""
        watch.cancelled = True
        if watch.slot is not None:
            self._slots[1][watch.slot] = 1

    def reserve(self) -> LegacyWatch:
        """A watch holding one slot from now until :meth:`release`, for all its projections: the capacity check
        and the taking are one step (nothing awaited between), so simultaneous submissions cannot all pass it;
        LegacyBusyError when every slot is taken."""
        return LegacyWatch(held=self._take_slot())

    def release(self, watch: LegacyWatch) -> None:
        """Give back ``watch``'s held slot: now, or when its projection ends (a timed-out one still stopping)."""
        watch.released = True
        if watch.held is not None and watch.slot is None:
            self._give_back(watch.held)
            watch.held = None

    def _take_slot(self) -> int:
        if self.active >= self.capacity or not self._free:
            raise LegacyBusyError(
                f"{self.active} projections are running or queued (capacity {self.capacity})"
            )
        self._set_active(self.active + 1)
        return self._free.pop()

    def _give_back(self, slot: int) -> None:
        self._free.append(slot)
        self._set_active(self.active - 1)

    def _release(self, future: asyncio.Future, slot: int, watch: LegacyWatch) -> None:
        watch.slot = None
        if watch.held is None:
            self._give_back(slot)
        elif watch.released:
            self._give_back(slot)
            watch.held = None
        if not future.cancelled():
            future.exception()  # retrieved here: a timed-out job's late error is expected, not news

    def shutdown(self) -> None:
        """Stop the processes: queued jobs are cancelled, running ones stop at their next step."""
        if self._pool is not None:
            self._stop.set()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._stop = None
