"""The served models and their sample images."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from app.dependencies import get_service
from app.edits import describe_edits
from app.errors import ServiceError
from app.schemas import BatchingInfo, ErrorBody, LegacyInfo, ModelInfo, ModelsResponse
from app.service import LoadedModel, Service

router = APIRouter(tags=["models"])


def describe(model: LoadedModel, service: Service) -> ModelInfo:
    entry, runtime, s = model.entry, model.runtime, service.settings
    return ModelInfo(
        name=entry.name,
        zoo=str(entry.zoo),
        description=entry.manifest.get("description", ""),
        edit=entry.manifest.get("edit"),
        input_size=entry.input_size,
        alignment=entry.alignment,
        provider=runtime.provider,
        provider_reason=runtime.provider_reason,
        variant=runtime.variant,
        variants=sorted(entry.variants),
        engine=runtime.engine_name,
        precision=runtime.precision,
        engine_reason=runtime.engine_reason,
        engine_candidates=runtime.candidates,
        strength=entry.spec.strength,
        edits=describe_edits(entry.spec),
        legacy=model.has_teacher and service.legacy.enabled and model.legacy_error is None,
        legacy_error=model.legacy_error,
        domain=model.domain.ranges() if model.domain else None,
        domain_check=model.domain.mode if model.domain else "off",
        samples=[f"/models/{entry.name}/samples/{p.name}" for p in model.samples()],
        batching=BatchingInfo(
            max_batch=model.batcher.max_batch,
            max_wait_ms=s.max_wait_ms,
            queue_size=s.queue_size,
            streams=model.batcher.concurrency,
        ),
        warnings=[runtime.batch_warning] if runtime.batch_warning else [],
    )


@router.get("/models", response_model=ModelsResponse)
async def list_models(service: Service = Depends(get_service)) -> ModelsResponse:
    """Every served model: native size, engine, provider, variant and precision in use (and the candidates
    measured to choose them), available variants, legacy support."""
    return ModelsResponse(
        default=service.default_model,
        ready=service.ready,
        models=[describe(m, service) for m in service.models.values()],
        legacy=LegacyInfo(
            enabled=service.legacy.enabled,
            steps=service.settings.legacy_steps,
            max_steps=service.settings.legacy_max_steps,
            timeout_s=service.settings.legacy_timeout_s,
        ),
    )


@router.get(
    "/models/{name}/samples/{filename}", response_class=FileResponse, responses={404: {"model": ErrorBody}}
)
async def sample(name: str, filename: str, service: Service = Depends(get_service)) -> FileResponse:
    """One image the model entry's manifest lists under ``samples/`` (a file swapped for a link leading out
    of the entry since the start is refused too)."""
    model = service.get_model(name)
    for path in model.samples():
        if path.name == filename and path.is_file() and model.entry.contains(path):
            return FileResponse(path)
    raise ServiceError(404, "unknown_sample", f"model {name!r} has no sample {filename!r}")
