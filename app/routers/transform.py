"""POST /transform: the distilled student, through the micro-batcher."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app import imaging
from app.batching import QueueFullError
from app.dependencies import get_service, label_request, read_upload
from app.errors import ServiceError
from app.schemas import ErrorBody
from app.service import Service
from app.timing import StageTimer

router = APIRouter(tags=["transform"])

Format = Literal["jpeg", "png", "webp"]
Size = Literal["native", "crop", "original"]

IMAGE_RESPONSES = {
    200: {"content": {t: {} for t in imaging.MEDIA_TYPES.values()}, "description": "The edited image."},
    **{code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)},
}
IMAGE_FIELD = File(..., description="The photo: JPEG, PNG or WebP.")
MODEL_FIELD = Form(None, description="Model-zoo entry (default: the service's default model).")
FORMAT_FIELD = Form("jpeg", description="Encoding of the returned image (PNG costs ~30 ms at 512 px).")
SIZE_FIELD = Form("native", description="native: the model's size; crop: the crop's size in the upload; "
                                        "original: the upload's size, the edited crop pasted back.")


async def decode_upload(service: Service, image: UploadFile, native_hw: tuple[int, int], size: str,
                        timer: StageTimer) -> imaging.Decoded:
    """Read, validate, decode, crop and resize the upload in a worker thread (timed as ``decode``)."""
    s = service.settings
    data = await read_upload(image, s.max_upload_bytes)
    with timer.stage("decode"):
        return await run_in_threadpool(
            imaging.decode, data, native_hw=native_hw, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels,
            keep_original=size != "native",
        )


def finish(edited: np.ndarray, decoded: imaging.Decoded, size: str, fmt: str, quality: int,
           timer: StageTimer) -> bytes:
    """Apply the geometry policy and encode (run in a worker thread: both cost milliseconds at full size)."""
    with timer.stage("postprocess"):
        edited = imaging.restore_geometry(edited, decoded, size)
    with timer.stage("encode"):
        return imaging.encode(edited, fmt, quality)


def preprocess(pixels: np.ndarray, timer: StageTimer) -> np.ndarray:
    """uint8 picture -> the model's float input (in a worker thread: milliseconds at 512 px)."""
    with timer.stage("preprocess"):
        return imaging.to_input(pixels)


def finish_output(output: np.ndarray, decoded: imaging.Decoded, size: str, fmt: str, quality: int,
                  timer: StageTimer) -> bytes:
    """The model's float output -> uint8 picture -> :func:`finish` (in a worker thread)."""
    with timer.stage("postprocess"):
        edited = imaging.from_output(output)
    return finish(edited, decoded, size, fmt, quality, timer)


def image_response(content: bytes, fmt: str, timer: StageTimer, headers: dict[str, str]) -> Response:
    return Response(content, media_type=imaging.MEDIA_TYPES[fmt],
                    headers={"Server-Timing": timer.header(), **headers})


@router.post("/transform", response_class=Response, responses=IMAGE_RESPONSES)
async def transform(
    request: Request,
    image: UploadFile = IMAGE_FIELD,
    model: str | None = MODEL_FIELD,
    format: Format = FORMAT_FIELD,
    size: Size = SIZE_FIELD,
    service: Service = Depends(get_service),
) -> Response:
    """Edit a photo with the distilled student (center-crop to the model's aspect, resize to its native size)."""
    timer = StageTimer()
    loaded = service.get_model(model)
    runtime = loaded.runtime
    label_request(request, runtime.name, runtime.provider)
    with loaded.batcher.expecting():  # queued requests may wait for this one to join their batch
        decoded = await decode_upload(service, image, runtime.native_hw, size, timer)
        x = await run_in_threadpool(preprocess, decoded.pixels, timer)
    try:
        result = await loaded.batcher.submit(x)
    except QueueFullError as e:
        raise ServiceError(503, "queue_full", f"{e}; retry in {e.retry_after_s} s",
                           headers={"Retry-After": str(e.retry_after_s)}) from e
    timer.add("queue", result.queue_s)
    timer.add("inference", result.inference_s)
    content = await run_in_threadpool(finish_output, result.output, decoded, size, format,
                                      service.settings.output_quality, timer)
    timer.observe("/transform", runtime.name, runtime.provider)
    return image_response(content, format, timer, {
        "X-Model": runtime.name,
        "X-Provider": runtime.provider,
        "X-Variant": runtime.variant,
        "X-Batch-Size": str(result.batch_size),
    })
