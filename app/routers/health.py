"""Liveness and readiness probes (Kubernetes/compose style)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.dependencies import get_service
from app.schemas import Health
from app.service import Service

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive and its event loop answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(service: Service = Depends(get_service)) -> Health | JSONResponse:
    """200 once every model is loaded, checked against its manifest and warmed up (``detail`` names a model served
    otherwise than configured: at batch 1 when it fails beyond); 503 ``loading`` before
    that (with Retry-After), or 503 ``failed`` with the reason for good when loading failed (restart or alert)."""
    if service.ready:
        return Health(status="ready", detail="; ".join(service.warnings()) or None)
    if service.load_error:
        return JSONResponse(Health(status="failed", detail=service.load_error).model_dump(), status_code=503)
    return JSONResponse(Health(status="loading").model_dump(), status_code=503, headers={"Retry-After": "1"})
