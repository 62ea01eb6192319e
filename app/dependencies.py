"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request, UploadFile

from app.errors import ServiceError
from app.service import Service


def get_service(request: Request) -> Service:
    """The worker's :class:`~app.service.Service` (created by the lifespan)."""
    return request.app.state.service


async def read_upload(image: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes; 413 when the file part alone exceeds ``max_bytes``.

    The request body as a whole is already capped while it streams in (``FastAPI(max_body_size=...)``),
    so an oversized upload is refused without buffering it; this check covers the file part itself.
    """
    if image.size is not None and image.size > max_bytes:
        raise ServiceError(
            413, "file_too_large", f"the upload is {image.size} bytes; the limit is {max_bytes}"
        )
    return await image.read()


def label_request(request: Request, model: str, provider: str) -> None:
    """Tell the metrics middleware which model and provider served this request."""
    request.state.model = model
    request.state.provider = provider
