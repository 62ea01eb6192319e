"""Legacy projections as job resources: started by ``POST /legacy/jobs``, followed by ``GET`` (steps done,
estimated time left), cancelled by ``DELETE`` (the projection stops at its next step), the image fetched from
``/legacy/jobs/{id}/result``.

Jobs live in the memory of the worker process that accepted them: with several uvicorn workers a poll may
reach another worker and get 404 (the demo and the images run one worker up to 4 CPUs). Finished jobs are
kept for ``KEEP_S`` seconds, at most ``KEEP_JOBS`` of them, and their images within a byte budget
(``DISTILL_LEGACY_RESULT_BYTES``): the oldest images are dropped first, and a job whose image alone exceeds
the budget fails with ``result_too_large``. A dropped image, or a job forgotten, answers 410 with the reason
(the last ``KEEP_GONE`` forgotten ids are remembered for that).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from fastapi.responses import Response
from pydantic import BaseModel

from app.legacy import LegacyExecutor, LegacyWatch

KEEP_S = 900.0
KEEP_JOBS = 64
KEEP_GONE = 4096
Status = Literal["queued", "running", "done", "failed", "cancelled"]


class JobError(BaseModel):
    status: int
    error: str
    detail: str


class LegacyJobInfo(BaseModel):
    """What ``GET /legacy/jobs/{id}`` answers."""

    id: str
    model: str
    status: Status
    steps: int  # projection steps per face
    faces: int  # projections the job runs, one after the other (faces=all)
    steps_total: int
    steps_done: int
    elapsed_s: float  # since the job was accepted
    eta_s: float | None  # estimated seconds left (None until the first step, and once finished)
    projection_s: float | None  # the projection's own time, once done
    result: str | None  # the image's URL, once done (and while the image is kept)
    error: JobError | None = None
    result_dropped: str | None = None  # why the image of a done job is no longer kept


@dataclass
class JobRecord:
    """One job's state, in the accepting worker's memory."""

    model: str
    steps: int
    faces: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: Status = "queued"
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None
    faces_done: int = 0
    face_steps: int = 0  # steps done in the current face's projection, as last read
    watch: LegacyWatch = field(default_factory=LegacyWatch)
    task: asyncio.Task | None = None
    response: Response | None = None
    projection_s: float | None = None
    error: JobError | None = None
    dropped: str | None = None  # why the image is no longer kept (the byte budget)

    @property
    def result_bytes(self) -> int:
        """The bytes the kept image takes."""
        return 0 if self.response is None else len(self.response.body)

    def info(self, executor: LegacyExecutor) -> LegacyJobInfo:
        """The job as JSON: steps done so far and the time left, read from the projection's shared slot."""
        done, started = executor.steps_done(self.watch)
        if self.watch.slot is not None:
            self.face_steps = done  # kept: a cancelled or failed job reports where it stopped
        steps_done = self.faces_done * self.steps + self.face_steps
        eta = None
        if self.status in ("queued", "running"):
            if started is not None and self.status == "queued":
                self.status = "running"
            if started is not None and done > 0:
                per_step = max(0.0, time.time() - started) / done
                eta = per_step * (self.steps * self.faces - steps_done)
        elif self.status == "done":
            steps_done = self.steps * self.faces
        end = self.finished if self.finished is not None else time.monotonic()
        return LegacyJobInfo(
            id=self.id,
            model=self.model,
            status=self.status,
            steps=self.steps,
            faces=self.faces,
            steps_total=self.steps * self.faces,
            steps_done=steps_done,
            elapsed_s=round(end - self.created, 3),
            eta_s=None if eta is None else round(eta, 2),
            projection_s=self.projection_s,
            result=f"/legacy/jobs/{self.id}/result"
            if self.status == "done" and self.dropped is None
            else None,
            error=self.error,
            result_dropped=self.dropped,
        )

    def finish(
        self, status: Status, *, response: Response | None = None, error: JobError | None = None
    ) -> None:
        """Record the outcome (a job cancelled meanwhile stays cancelled, its image dropped)."""
        if self.status != "cancelled":
            self.status, self.response, self.error = status, response, error
        self.finished = time.monotonic()


class JobStore:
    """The jobs of this worker process: the finished ones forgotten after ``KEEP_S`` or beyond ``KEEP_JOBS``,
    their images kept within ``max_result_bytes`` (oldest dropped first)."""

    def __init__(self, max_result_bytes: int) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.max_result_bytes = max_result_bytes
        self.gone: OrderedDict[str, str] = OrderedDict()  # forgotten job id -> why

    @property
    def result_bytes(self) -> int:
        """The bytes all kept images take."""
        return sum(r.result_bytes for r in self.jobs.values())

    def add(self, record: JobRecord) -> JobRecord:
        self._evict()
        self.jobs[record.id] = record
        return record

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def gone_reason(self, job_id: str) -> str | None:
        """Why a job this store no longer has was forgotten (None: never known here)."""
        return self.gone.get(job_id)

    def keep_result(self, record: JobRecord) -> None:
        """Fit ``record``'s new image into the budget: drop the oldest other images until it fits; an image
        larger than the whole budget fails its job instead (``result_too_large``)."""
        size = record.result_bytes
        if size > self.max_result_bytes:
            record.status, record.response = "failed", None
            record.error = JobError(
                status=422,
                error="result_too_large",
                detail=f"the image is {size} bytes; this server keeps at most {self.max_result_bytes} bytes "
                "of job results (DISTILL_LEGACY_RESULT_BYTES): ask for format=jpeg or webp, or a smaller size",
            )
            return
        kept = sorted(
            (r for r in self.jobs.values() if r is not record and r.response is not None),
            key=lambda r: r.finished or 0.0,
        )
        total = size + sum(r.result_bytes for r in kept)
        for old in kept:
            if total <= self.max_result_bytes:
                break
            total -= old.result_bytes
            old.response = None
            old.dropped = (
                f"the image was dropped to keep job results within {self.max_result_bytes} bytes "
                "(DISTILL_LEGACY_RESULT_BYTES), oldest first; fetch results soon after the job is done"
            )

    def _evict(self) -> None:
        now = time.monotonic()
        finished = sorted(
            ((r.finished, r) for r in self.jobs.values() if r.finished is not None), key=lambda pair: pair[0]
        )
        for i, (ended, record) in enumerate(finished):
            if now - ended > KEEP_S or len(finished) - i >= KEEP_JOBS:
                del self.jobs[record.id]
                self.gone[record.id] = (
                    f"finished jobs are kept {KEEP_S / 60:g} minutes, at most {KEEP_JOBS} of them"
                )
        while len(self.gone) > KEEP_GONE:
            self.gone.popitem(last=False)
