"""POST /transform: the distilled student, through the micro-batcher."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app import faces as face_path
from app import imaging
from app.batching import BatchResult, QueueFullError
from app.dependencies import get_service, label_request, read_upload
from app.domain import HEADER as DOMAIN_HEADER
from app.domain import DomainCheck, Verdict
from app.edits import edit_headers, parse_edits, resolve_edits
from app.errors import ServiceError
from app.schemas import ErrorBody
from app.service import LoadedModel, Service
from app.timing import StageTimer
from editing.alignment.landmarks import FacesMode
from editing.pixels import from_output, to_input

router = APIRouter(tags=["transform"])

Format = Literal["jpeg", "png", "webp"]
Size = Literal["native", "crop", "original"]
Align = Literal["auto", "off"]
Faces = FacesMode
Upload = imaging.Decoded | face_path.AlignedUpload

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in imaging.MEDIA_TYPES.values()}, "description": "The edited image."},
    **{code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)},
}
IMAGE_FIELD = File(..., description="The photo: JPEG, PNG or WebP.")
MODEL_FIELD = Form(None, description="Model-zoo entry (default: the service's default model).")
FORMAT_FIELD = Form("jpeg", description="Encoding of the returned image (PNG costs ~30 ms at 512 px).")
SIZE_FIELD = Form(
    "native",
    description="native: the model's size; crop: the crop's size in the upload; "
    "original: the upload's size, the edit pasted back.",
)
ALIGN_FIELD = Form(
    "auto",
    description="auto: frame the upload as the model expects (its manifest's "
    "input.alignment: FFHQ face alignment, or a centred crop); off: centred crop.",
)
FACES_FIELD = Form(
    "largest",
    description="With FFHQ alignment: edit the largest face, or all faces (all needs size=original).",
)
STRENGTH_FIELD = Form(
    None,
    description="Edit strength for a strength-conditioned model, relative: 1.0 = the "
    "entry's edit.alpha, 0 = unchanged, negative = the opposite edit; within "
    "the manifest's strength.range (default: strength.default). Fixed-strength "
    "models and students of several edits (see edits) take none.",
)
EDITS_FIELD = Form(
    None,
    description='The strength of each edit by name, a JSON object: {"age": 1.0, "smile": -0.5}; relative as '
    "strength, each within its range in /models' edits; edits left out get their default (0, off, for a "
    "student of several edits). For a one-edit dial the same as strength; not with strength.",
)


def resolve_strengths(loaded: LoadedModel, strength: float | None, edits: str | None) -> np.ndarray | None:
    """The request's strengths [K] for ``loaded`` (None: a model without a strength input); 422 as
    :func:`app.edits.resolve_edits` says, and ``invalid_edits`` for ``edits`` that are no JSON object of numbers."""
    parsed = parse_edits(edits) if edits is not None else None
    return resolve_edits(loaded.entry.spec, loaded.runtime.name, strength, parsed)


def aligned(loaded: LoadedModel, align: Align) -> bool:
    """Whether this request takes the face path: the model expects FFHQ faces and the client did not opt out."""
    return align == "auto" and loaded.entry.alignment == "ffhq"


def frame_upload(
    service: Service,
    data: bytes,
    native_hw: tuple[int, int],
    size: str,
    timer: StageTimer,
    *,
    fmt: Format,
    align: bool,
    faces: Faces,
) -> Upload:
    """Decode the upload (timed ``decode``) and frame it for the model: a centred crop, or (``align``) the FFHQ
    crops of its faces (timed ``detect`` and ``align``). Blocking: called in a worker thread."""
    s = service.settings
    output_format = fmt if size == "original" else None
    if not align:
        with timer.stage("decode"):
            return imaging.decode(
                data,
                native_hw=native_hw,
                max_bytes=s.max_upload_bytes,
                max_pixels=s.max_pixels,
                keep_original=size != "native",
                output_format=output_format,
            )
    with timer.stage("decode"):
        photo, _, _ = imaging.open_upload(
            data, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, output_format=output_format
        )
    max_faces = min(
        s.max_faces, s.queue_size
    )  # more could never fit the model's queue: a 503 no retry passes
    upload = face_path.align_upload(photo, service.face_finder(), native_hw[0], faces, timer, max_faces)
    if size == "crop":
        face_path.check_crop(upload, fmt, s.max_pixels)
    return upload


def frame_inputs(
    service: Service,
    data: bytes,
    native_hw: tuple[int, int],
    size: str,
    timer: StageTimer,
    *,
    fmt: Format,
    align: bool,
    faces: Faces,
    domain: DomainCheck | None = None,
) -> tuple[Upload, list[np.ndarray], Verdict | None]:
    """:func:`frame_upload`, the framed pictures checked against the model's ``domain`` (timed ``domain``; 422
    ``outside_domain`` when it refuses them), then :func:`preprocess`: the upload, the model's float inputs and
    the domain verdict (None: not checked). Blocking: one worker-thread hop for all."""
    upload = frame_upload(service, data, native_hw, size, timer, fmt=fmt, align=align, faces=faces)
    verdict = None
    if domain is not None:
        with timer.stage("domain"):
            verdict = domain.check(inputs_of(upload))
    return upload, preprocess(inputs_of(upload), timer), verdict


async def read_request_upload(
    service: Service, image: UploadFile, size: str, *, align: bool, faces: Faces
) -> bytes:
    """The upload's bytes, after the checks that need no decoding (413 too large; 422 face options)."""
    if align:
        face_path.check_request(size, faces)
    return await read_upload(image, service.settings.max_upload_bytes)


def hold_pixels(service: Service, data: bytes, align: bool) -> int:
    """Hold the photo's pixels in the face-path budget (503 ``face_path_busy`` when they do not fit); 0 off the
    face path. Give them back (``service.face_pixels.give``) once the answer is encoded or refused."""
    if not align:
        return 0
    return service.face_pixels.take(min(imaging.header_pixels(data), service.settings.max_pixels))


async def decode_upload(
    service: Service,
    image: UploadFile,
    native_hw: tuple[int, int],
    size: str,
    timer: StageTimer,
    *,
    fmt: Format,
    align: bool = False,
    faces: Faces = "largest",
) -> tuple[Upload, int]:
    """Read, validate, decode and frame the upload (:func:`frame_upload`) in one worker-thread hop: the upload
    and the face-path pixels held for it (:func:`hold_pixels`, given back here when it is refused).

    With ``size=original`` an upload too large for the ``fmt`` encoder is refused here, before any work."""
    data = await read_request_upload(service, image, size, align=align, faces=faces)
    held = hold_pixels(service, data, align)
    try:
        upload = await run_in_threadpool(
            frame_upload, service, data, native_hw, size, timer, fmt=fmt, align=align, faces=faces
        )
    except BaseException:
        service.face_pixels.give(held)
        raise
    return upload, held


async def prepare_inputs(
    service: Service,
    image: UploadFile,
    native_hw: tuple[int, int],
    size: str,
    timer: StageTimer,
    *,
    fmt: Format,
    align: bool,
    faces: Faces,
    domain: DomainCheck | None = None,
) -> tuple[Upload, list[np.ndarray], int, Verdict | None]:
    """:func:`frame_inputs` after the upload checks, in one worker-thread hop: the upload, the model's inputs,
    the face-path pixels held and the domain verdict (one hop fewer: a round trip to the thread pool measured
    0.07 ms on an idle event loop here)."""
    data = await read_request_upload(service, image, size, align=align, faces=faces)
    held = hold_pixels(service, data, align)

    try:
        upload, xs, verdict = await run_in_threadpool(
            frame_inputs,
            service,
            data,
            native_hw,
            size,
            timer,
            fmt=fmt,
            align=align,
            faces=faces,
            domain=domain,
        )
    except BaseException:
        service.face_pixels.give(held)
        raise
    return upload, xs, held, verdict


def inputs_of(upload: Upload) -> list[np.ndarray]:
    """The native-size pictures the model edits: one centred crop, or one aligned crop per face."""
    return upload.crops if isinstance(upload, face_path.AlignedUpload) else [upload.pixels]


def finish(
    edited: list[np.ndarray], upload: Upload, size: str, fmt: str, quality: int, timer: StageTimer
) -> bytes:
    """Apply the geometry policy and encode (run in a worker thread: both cost milliseconds at full size)."""
    if isinstance(upload, face_path.AlignedUpload):
        picture = face_path.restore(edited, upload, size, timer)
    else:
        with timer.stage("postprocess"):
            picture = imaging.restore_geometry(edited[0], upload, size)
    with timer.stage("encode"):
        return imaging.encode(picture, fmt, quality)


def face_headers(upload: Upload) -> dict[str, str]:
    """``X-Faces`` and ``X-Face-Boxes`` (``left,top,right,bottom;...`` in upright upload pixels) on the face path."""
    if not isinstance(upload, face_path.AlignedUpload):
        return {}
    return {"X-Faces": str(len(upload.faces)), "X-Face-Boxes": upload.boxes_header()}


def preprocess(pictures: list[np.ndarray], timer: StageTimer) -> list[np.ndarray]:
    """uint8 pictures -> the model's float inputs (in a worker thread: milliseconds at 512 px)."""
    with timer.stage("preprocess"):
        return [to_input(p) for p in pictures]


def finish_output(
    outputs: list[np.ndarray], upload: Upload, size: str, fmt: str, quality: int, timer: StageTimer
) -> bytes:
    """The model's float outputs -> uint8 pictures -> :func:`finish` (in a worker thread)."""
    with timer.stage("postprocess"):
        edited = [from_output(y) for y in outputs]
    return finish(edited, upload, size, fmt, quality, timer)


async def edit_inputs(
    loaded: LoadedModel, xs: list[np.ndarray], strength: np.ndarray | None, timer: StageTimer
) -> list[BatchResult]:
    """Run the model's inputs through its micro-batcher (timed ``queue`` and ``inference``); 503 ``queue_full``
    with Retry-After when its queue is full. Several faces are submitted together, so they usually share a batch."""
    try:
        results = await asyncio.gather(*(loaded.batcher.submit(x, strength) for x in xs))
    except QueueFullError as e:
        raise ServiceError(
            503,
            "queue_full",
            f"{e}; retry in {e.retry_after_s} s",
            headers={"Retry-After": str(e.retry_after_s)},
        ) from e
    timer.add("queue", max(r.queue_s for r in results))
    timer.add("inference", max(r.inference_s for r in results))
    return results


def image_response(content: bytes, fmt: str, timer: StageTimer, headers: dict[str, str]) -> Response:
    return Response(
        content, media_type=imaging.MEDIA_TYPES[fmt], headers={"Server-Timing": timer.header(), **headers}
    )


@router.post("/transform", response_class=Response, responses=IMAGE_RESPONSES)
async def transform(
    request: Request,
    image: UploadFile = IMAGE_FIELD,
    model: str | None = MODEL_FIELD,
    format: Format = FORMAT_FIELD,
    size: Size = SIZE_FIELD,
    align: Align = ALIGN_FIELD,
    faces: Faces = FACES_FIELD,
    strength: float | None = STRENGTH_FIELD,
    edits: str | None = EDITS_FIELD,
    service: Service = Depends(get_service),
) -> Response:
    """Edit a photo with the distilled student (at ``strength`` or ``edits``, for a strength-conditioned model).

    The upload is framed as the model expects (``align=auto``): FFHQ-aligned face crops for a model whose
    manifest says ``input.alignment: ffhq`` (the edit is pasted back into the photo with ``size=original``),
    otherwise a centred crop resized to the native size. A model with a recorded training domain says where the
    framed input lies in ``X-Distill-Domain`` (``inside``, or ``outside; age 0.12 below 0.20``: the face
    farthest out on the face path), or refuses it (422 ``outside_domain``) with ``DISTILL_DOMAIN_CHECK=refuse``.
    """
    timer = StageTimer()
    loaded = service.get_model(model)
    runtime = loaded.runtime
    label_request(request, runtime.name, runtime.provider)
    strengths = resolve_strengths(loaded, strength, edits)
    with loaded.batcher.expecting():  # queued requests may wait for this one to join their batch
        upload, xs, held, verdict = await prepare_inputs(
            service,
            image,
            runtime.native_hw,
            size,
            timer,
            fmt=format,
            align=aligned(loaded, align),
            faces=faces,
            domain=loaded.domain,
        )
    try:  # the face-path pixels are held until the answer is encoded
        results = await edit_inputs(loaded, xs, strengths, timer)
        content = await run_in_threadpool(
            finish_output,
            [r.output for r in results],
            upload,
            size,
            format,
            service.settings.output_quality,
            timer,
        )
    finally:
        service.face_pixels.give(held)
    timer.observe("/transform", runtime.name, runtime.provider)
    return image_response(
        content,
        format,
        timer,
        {
            "X-Model": runtime.name,
            "X-Provider": runtime.provider,
            "X-Variant": runtime.variant,
            "X-Engine": runtime.engine_name,
            "X-Precision": runtime.precision,
            "X-Batch-Size": str(max(r.batch_size for r in results)),
            **edit_headers(loaded.entry.spec, strengths),
            **face_headers(upload),
            **({} if verdict is None else {DOMAIN_HEADER: verdict.text()}),
        },
    )
