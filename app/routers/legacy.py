"""POST /legacy/transform: the slow baseline (projection into the teacher's W space, edit, synthesize)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.dependencies import get_service, label_request
from app.errors import ServiceError
from app.legacy import (
    LegacyBusyError,
    LegacyLoadError,
    LegacyTimeoutError,
    LegacyUnavailableError,
)
from app.routers.transform import (
    ALIGN_FIELD,
    FACES_FIELD,
    FORMAT_FIELD,
    IMAGE_FIELD,
    IMAGE_RESPONSES,
    MODEL_FIELD,
    SIZE_FIELD,
    Align,
    Faces,
    Format,
    Size,
    aligned,
    decode_upload,
    face_headers,
    finish,
    image_response,
    inputs_of,
)
from app.schemas import ErrorBody
from app.service import Service
from app.timing import StageTimer

router = APIRouter(tags=["transform"])

STEPS_FIELD = Form(None, ge=1, description="Projection steps (default and upper bound from the settings).")
PROVIDER = "torch-cpu"


@router.post("/legacy/transform", response_class=Response,
             responses={**IMAGE_RESPONSES, **{c: {"model": ErrorBody} for c in (409, 504)}})
async def legacy_transform(
    request: Request,
    image: UploadFile = IMAGE_FIELD,
    model: str | None = MODEL_FIELD,
    format: Format = FORMAT_FIELD,
    size: Size = SIZE_FIELD,
    steps: int | None = STEPS_FIELD,
    align: Align = ALIGN_FIELD,
    faces: Faces = FACES_FIELD,
    service: Service = Depends(get_service),
) -> Response:
    """Edit a photo the slow way: optimise a latent for it (NVlabs projector), add the direction, synthesize.

    Same contract as ``/transform`` (with ``faces=all``, one projection per face, one after the other); the
    work runs in a bounded pool of processes with a timeout (504).
    """
    timer = StageTimer()
    loaded = service.get_model(model)
    entry, s = loaded.entry, service.settings
    label_request(request, entry.name, PROVIDER)
    if not service.legacy.enabled:
        raise ServiceError(409, "legacy_disabled", "the legacy path is off (DISTILL_LEGACY_WORKERS=0)")
    if not loaded.has_teacher:
        raise ServiceError(409, "no_teacher", f"model {entry.name!r} ships no teacher and direction; "
                                              "re-export it with them to use the legacy path")
    if loaded.legacy_error:
        raise ServiceError(503, "legacy_unavailable", f"model {entry.name!r}: {loaded.legacy_error}")
    steps = steps or s.legacy_steps
    if steps > s.legacy_max_steps:
        raise ServiceError(422, "too_many_steps", f"steps={steps} exceeds the limit {s.legacy_max_steps}")
    upload = await decode_upload(service, image, entry.input_size, size, timer, fmt=format,
                                 align=aligned(loaded, align), faces=faces)
    job = service.legacy_job(loaded, steps)
    edited = []
    with timer.stage("projection"):
        try:
            for pixels in inputs_of(upload):
                result, info = await service.legacy.run(job, pixels)
                edited.append(result)
        except LegacyBusyError as e:
            raise ServiceError(503, "legacy_busy", str(e), headers={"Retry-After": "5"}) from e
        except LegacyUnavailableError as e:
            raise ServiceError(503, "legacy_unavailable", str(e), headers={"Retry-After": "1"}) from e
        except LegacyLoadError as e:
            service.legacy_failed(loaded, e)
            raise ServiceError(503, "legacy_unavailable", f"model {entry.name!r}: {e}") from e
        except LegacyTimeoutError as e:
            raise ServiceError(504, "legacy_timeout", f"{e}; ask for fewer steps") from e
    content = await run_in_threadpool(finish, edited, upload, size, format, s.output_quality, timer)
    timer.observe("/legacy/transform", entry.name, PROVIDER)
    return image_response(content, format, timer, {
        "X-Model": entry.name,
        "X-Provider": PROVIDER,
        "X-Steps": str(info["steps"]),
        **face_headers(upload),
    })
