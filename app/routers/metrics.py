"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.metrics import render_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus text exposition (all worker processes' samples in multiprocess mode)."""
    body, content_type = render_latest()
    return Response(body, media_type=content_type)
