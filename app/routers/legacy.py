"""The slow baseline (projection into the teacher's W space, edit, synthesize): ``POST /legacy/transform``
answers with the image; ``/legacy/jobs`` runs the same work as a job that reports its progress and can be
cancelled (:mod:`app.legacy_jobs`; the demo page uses it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from app.dependencies import get_service, label_request
from app.edits import edit_headers
from app.errors import ServiceError
from app.legacy import (
    LegacyBusyError,
    LegacyCancelledError,
    LegacyJob,
    LegacyLoadError,
    LegacyTimeoutError,
    LegacyUnavailableError,
    LegacyWatch,
)
from app.legacy_jobs import JobError, JobRecord, JobStore, LegacyJobInfo
from app.routers.transform import (
    ALIGN_FIELD,
    EDITS_FIELD,
    FACES_FIELD,
    FORMAT_FIELD,
    IMAGE_FIELD,
    IMAGE_RESPONSES,
    MODEL_FIELD,
    SIZE_FIELD,
    STRENGTH_FIELD,
    Align,
    Faces,
    Format,
    Size,
    Upload,
    aligned,
    decode_upload,
    face_headers,
    finish,
    image_response,
    inputs_of,
    resolve_strengths,
)
from app.schemas import ErrorBody
from app.service import LoadedModel, Service
from app.timing import StageTimer

log = logging.getLogger("app.legacy")
router = APIRouter(tags=["transform"])

STEPS_FIELD = Form(None, ge=1, description="Projection steps (default and upper bound from the settings).")
PROVIDER = "torch-cpu"
JOB_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody} for c in (404, 409, 410)}


@dataclass(frozen=True)
class Prepared:
    """A checked legacy request: the model, the decoded upload, the projection job and its strengths [K]."""

    loaded: LoadedModel
    upload: Upload
    job: LegacyJob
    strengths: np.ndarray | None
    timer: StageTimer
    held_pixels: int  # face-path pixels held until the answer is encoded (service.face_pixels)


@dataclass(frozen=True)
class LegacyForm:
    """The form fields ``/legacy/transform`` and ``/legacy/jobs`` share (see :func:`legacy_form`)."""

    image: UploadFile
    model: str | None
    format: Format
    size: Size
    steps: int | None
    align: Align
    faces: Faces
    strength: float | None
    edits: str | None


def legacy_form(
    image: UploadFile = IMAGE_FIELD,
    model: str | None = MODEL_FIELD,
    format: Format = FORMAT_FIELD,
    size: Size = SIZE_FIELD,
    steps: int | None = STEPS_FIELD,
    align: Align = ALIGN_FIELD,
    faces: Faces = FACES_FIELD,
    strength: float | None = STRENGTH_FIELD,
    edits: str | None = EDITS_FIELD,
) -> LegacyForm:
    """The legacy routes' form as one dependency, so both declare (and validate) the same fields."""
    return LegacyForm(image, model, format, size, steps, align, faces, strength, edits)


async def _prepare(request: Request, service: Service, form: LegacyForm) -> Prepared:
    """Check the request (409 legacy off or no teacher, 503 teacher unloadable, 422 steps, the strength or edits
    as ``/transform`` checks them) and decode the upload."""
    timer = StageTimer()
    loaded = service.get_model(form.model)
    entry, s = loaded.entry, service.settings
    label_request(request, entry.name, PROVIDER)
    if not service.legacy.enabled:
        raise ServiceError(409, "legacy_disabled", "the legacy path is off (DISTILL_LEGACY_WORKERS=0)")
    if not loaded.has_teacher:
        raise ServiceError(
            409,
            "no_teacher",
            f"model {entry.name!r} ships no teacher and direction; "
            "re-export it with them to use the legacy path",
        )
    if loaded.legacy_error:
        raise ServiceError(503, "legacy_unavailable", f"model {entry.name!r}: {loaded.legacy_error}")
    steps = form.steps or s.legacy_steps
    if steps > s.legacy_max_steps:
        raise ServiceError(422, "too_many_steps", f"steps={steps} exceeds the limit {s.legacy_max_steps}")
    strengths = resolve_strengths(loaded, form.strength, form.edits)
    upload, held = await decode_upload(
        service,
        form.image,
        entry.input_size,
        form.size,
        timer,
        fmt=form.format,
        align=aligned(loaded, form.align),
        faces=form.faces,
    )
    return Prepared(loaded, upload, service.legacy_job(loaded, steps, strengths), strengths, timer, held)


async def _project(
    service: Service,
    prepared: Prepared,
    size: Size,
    format: Format,
    endpoint: str,
    watch: LegacyWatch | None = None,
    on_face: Callable[[], None] | None = None,
) -> Response:
    """Run the projection(s) in the pool (one per face) and encode the answer; ServiceError as documented."""
    loaded, upload, job, timer = prepared.loaded, prepared.upload, prepared.job, prepared.timer
    entry = loaded.entry
    edited = []
    with timer.stage("projection"):
        try:
            for pixels in inputs_of(upload):
                result, info = await service.legacy.run(job, pixels, watch)
                edited.append(result)
                if on_face is not None:
                    on_face()
        except LegacyBusyError as e:
            raise ServiceError(503, "legacy_busy", str(e), headers={"Retry-After": "5"}) from e
        except LegacyUnavailableError as e:
            raise ServiceError(503, "legacy_unavailable", str(e), headers={"Retry-After": "1"}) from e
        except LegacyLoadError as e:
            service.legacy_failed(loaded, e)
            raise ServiceError(503, "legacy_unavailable", f"model {entry.name!r}: {e}") from e
        except LegacyTimeoutError as e:
            raise ServiceError(504, "legacy_timeout", f"{e}; ask for fewer steps") from e
    content = await run_in_threadpool(
        finish, edited, upload, size, format, service.settings.output_quality, timer
    )
    timer.observe(endpoint, entry.name, PROVIDER)
    return image_response(
        content,
        format,
        timer,
        {
            "X-Model": entry.name,
            "X-Provider": PROVIDER,
            "X-Steps": str(info["steps"]),
            **edit_headers(entry.spec, prepared.strengths),
            **face_headers(upload),
        },
    )


@router.post(
    "/legacy/transform",
    response_class=Response,
    responses={**IMAGE_RESPONSES, **{c: {"model": ErrorBody} for c in (409, 504)}},
)
async def legacy_transform(
    request: Request,
    form: LegacyForm = Depends(legacy_form),
    service: Service = Depends(get_service),
) -> Response:
    """Edit a photo the slow way: optimise a latent for it (NVlabs projector), add the direction, synthesize.

    Same contract as ``/transform`` (with ``faces=all``, one projection per face, one after the other); the
    work runs in a bounded pool of processes with a timeout (504).
    """
    prepared = await _prepare(request, service, form)
    try:
        watch = _reserve(service)
        try:
            return await _project(service, prepared, form.size, form.format, "/legacy/transform", watch)
        finally:
            service.legacy.release(watch)
    finally:
        service.face_pixels.give(prepared.held_pixels)


def _reserve(service: Service) -> LegacyWatch:
    """A slot of the projection pool held for one request's projections; 503 ``legacy_busy`` when none is free."""
    try:
        return service.legacy.reserve()
    except LegacyBusyError as e:
        raise ServiceError(503, "legacy_busy", str(e), headers={"Retry-After": "5"}) from e


def job_store(request: Request) -> JobStore:
    """This worker's legacy jobs (made on first use)."""
    state = request.app.state
    if not hasattr(state, "legacy_jobs"):
        state.legacy_jobs = JobStore(get_service(request).settings.legacy_result_bytes)
    return state.legacy_jobs


def _find(request: Request, job_id: str) -> JobRecord:
    store = job_store(request)
    record = store.get(job_id)
    gone = store.gone_reason(job_id)
    if gone is not None:
        raise ServiceError(410, "job_gone", f"legacy job {job_id} is no longer kept: {gone}")
    if record is None:
        raise ServiceError(
            404,
            "unknown_job",
            f"no legacy job {job_id!r} in this worker (finished jobs are kept "
            "15 minutes; with several workers, poll the one that took it)",
        )
    return record


async def _run(
    record: JobRecord, store: JobStore, service: Service, prepared: Prepared, size: Size, format: Format
) -> None:
    """The job's background task: the projection(s), then the image or the error kept on the record."""

    def face_done() -> None:
        record.faces_done += 1
        record.face_steps = 0

    try:
        response = await _project(service, prepared, size, format, "/legacy/jobs", record.watch, face_done)
        record.projection_s = round(prepared.timer.stages.get("projection", 0.0), 3)
        record.finish("done", response=response)
        store.keep_result(record)
    except LegacyCancelledError:
        record.finish("cancelled")
    except ServiceError as e:
        record.finish("failed", error=JobError(status=e.status_code, error=e.error, detail=str(e.detail)))
    except Exception as e:  # a bug: reported on the job like internal_error, and logged
        log.exception("legacy job %s failed", record.id)
        record.finish(
            "failed", error=JobError(status=500, error="internal_error", detail=f"{type(e).__name__}: {e}")
        )
    finally:
        service.legacy.release(record.watch)
        service.face_pixels.give(prepared.held_pixels)


@router.post(
    "/legacy/jobs",
    status_code=202,
    response_model=LegacyJobInfo,
    responses={**{c: {"model": ErrorBody} for c in (400, 404, 409, 413, 415, 422, 503)}},
)
async def create_legacy_job(
    request: Request,
    form: LegacyForm = Depends(legacy_form),
    service: Service = Depends(get_service),
) -> JSONResponse:
    """Start ``/legacy/transform``'s work as a job: 202 with the job (``Location`` is its URL) once the upload is
    checked; poll ``GET /legacy/jobs/{id}`` for progress, fetch the image from its ``result`` URL, ``DELETE`` to
    cancel. A full projection pool is 503 ``legacy_busy`` here, at once."""
    prepared = await _prepare(request, service, form)
    try:
        watch = _reserve(service)  # taken before anything is awaited: the capacity check cannot be raced
    except ServiceError:
        service.face_pixels.give(prepared.held_pixels)
        raise
    store = job_store(request)
    record = store.add(
        JobRecord(
            model=prepared.loaded.entry.name,
            steps=prepared.job.steps,
            faces=len(inputs_of(prepared.upload)),
            watch=watch,
        )
    )
    record.task = asyncio.create_task(
        _run(record, store, service, prepared, form.size, form.format),
        name=f"legacy-job-{record.id}",
    )
    await asyncio.sleep(0)  # let the task submit the projection, so the first poll sees it queued or running
    return JSONResponse(
        record.info(service.legacy).model_dump(),
        status_code=202,
        headers={"Location": f"/legacy/jobs/{record.id}"},
    )


@router.get("/legacy/jobs/{job_id}", response_model=LegacyJobInfo, responses=JOB_ERRORS)
async def get_legacy_job(
    job_id: str, request: Request, service: Service = Depends(get_service)
) -> LegacyJobInfo:
    """The job: status (queued, running, done, failed, cancelled), steps done, estimated seconds left."""
    return _find(request, job_id).info(service.legacy)


@router.get(
    "/legacy/jobs/{job_id}/result", response_class=Response, responses={**IMAGE_RESPONSES, **JOB_ERRORS}
)
async def get_legacy_job_result(job_id: str, request: Request) -> Response:
    """The edited image of a finished job (the headers of ``/legacy/transform``); 409 ``no_result`` before."""
    record = _find(request, job_id)
    if record.dropped is not None:
        raise ServiceError(410, "result_dropped", f"legacy job {job_id}: {record.dropped}")
    if record.status != "done" or record.response is None:
        why = {
            "failed": f"it failed ({record.error.error if record.error else 'unknown'})",
            "cancelled": "it was cancelled",
        }.get(record.status, f"it is {record.status}")
        raise ServiceError(
            409, "no_result", f"legacy job {job_id} has no image: {why}", job_status=record.status
        )
    done = record.response
    return Response(
        done.body,
        media_type=done.media_type,
        headers={k: v for k, v in done.headers.items() if k.lower() != "content-length"},
    )


@router.delete("/legacy/jobs/{job_id}", response_model=LegacyJobInfo, responses=JOB_ERRORS)
async def cancel_legacy_job(
    job_id: str, request: Request, service: Service = Depends(get_service)
) -> LegacyJobInfo:
    """Cancel a queued or running job: its projection stops at the next step and frees its process. A finished
    job is left as it is (and answered as it is)."""
    record = _find(request, job_id)
    if record.status in ("queued", "running"):
        service.legacy.cancel(record.watch)
        record.status = "cancelled"
    return record.info(service.legacy)
