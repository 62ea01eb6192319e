"""The FastAPI application: ``create_app()`` wires settings, lifespan, routers, errors and metrics.

Run it with ``distill serve`` (or ``uvicorn --factory app.main:create_app --http
app.protocol:JSONErrorH11Protocol``, for JSON 400s on malformed framing too); settings come from
``DISTILL_*`` environment variables (:mod:`app.config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import ServiceError
from app.metrics import (
    IN_FLIGHT,
    PROBE_ENDPOINTS,
    PROBE_LATENCY,
    QUEUE_CAPACITY,
    REJECTED,
    REQUEST_LATENCY,
    init_series,
    mark_process_dead,
    set_ready,
)
from app.routers import health, legacy, metrics, models, transform
from app.service import Service

log = logging.getLogger("app")

STATIC = Path(__file__).resolve().parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers around the image, within the body limit
TRACKED = ("/transform", "/legacy/transform", "/models", "/healthz", "/readyz", "/metrics", "/")


class MetricsMiddleware:
    """Counts every request to a known endpoint: latency by endpoint/model/provider/status, in-flight gauge.

    Probes and scrapes go to their own histogram (by endpoint and status) and are not in flight: an
    orchestrator's probing must not move the request quantiles. Pure ASGI (no response buffering). The routes
    name the model and provider on ``request.state``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in TRACKED else "other"
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if endpoint in PROBE_ENDPOINTS:
            try:
                await self.app(scope, receive, send_status)
            finally:
                PROBE_LATENCY.labels(endpoint, str(status)).observe(time.perf_counter() - started)
            return
        in_flight = IN_FLIGHT.labels(endpoint)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            in_flight.dec()
            state = scope.get("state") or {}
            REQUEST_LATENCY.labels(
                endpoint, state.get("model", "none"), state.get("provider", "none"), str(status)
            ).observe(time.perf_counter() - started)


class UploadTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the streamed body passes the limit (FastAPI re-raises HTTPExceptions)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="the request body exceeds the upload limit")


class BodyLimitMiddleware:
    """Refuse oversized bodies while they stream in: by Content-Length before reading anything, else by
    counting the bytes received, so a huge upload is never buffered. Answers 413 with a JSON reason."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = _error(
                Request(scope),
                413,
                "payload_too_large",
                f"the request body ({int(declared)} bytes) exceeds the limit "
                f"({self.max_body_bytes} bytes including multipart overhead)",
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise UploadTooLarge()
            return message

        await self.app(scope, counting_receive, send)


class FramingMiddleware:
    """Refuse a request that declares both Content-Length and Transfer-Encoding (the header pair of request
    smuggling): 400 ``bad_request`` with a JSON reason and ``Connection: close``, as RFC 9112 section 6.1 allows
    (h11 would read the chunked body and keep the connection). Framing h11 cannot parse at all never reaches
    the application: :mod:`app.protocol` answers it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        names = {name.lower() for name, _ in scope.get("headers", ())} if scope["type"] == "http" else set()
        if b"content-length" in names and b"transfer-encoding" in names:
            response = _error(
                Request(scope),
                400,
                "bad_request",
                "the request has both Content-Length and Transfer-Encoding; send one of them",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(
    request: Request, status: int, error: str, detail, headers: dict[str, str] | None = None, **extra
) -> JSONResponse:
    endpoint = request.url.path if request.url.path in TRACKED else "other"
    REJECTED.labels(endpoint, error).inc()
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status, headers=headers)


async def service_error_handler(request: Request, exc: ServiceError) -> JSONResponse:
    return _error(request, exc.status_code, exc.error, exc.detail, exc.headers, **exc.extra)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    return _error(
        request,
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        exc.detail,
        getattr(exc, "headers", None),
    )


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    missing = [e["loc"][-1] for e in errors if e["msg"].lower().startswith("field required")]
    detail = f"missing form field(s): {', '.join(map(str, missing))}" if missing else "invalid request fields"
    return _error(request, 422, "missing_field" if missing else "invalid_request", detail, fields=errors)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(request, 500, "internal_error", "an unexpected error occurred; it has been logged")


async def _start_and_publish(service: Service) -> None:
    """Load the models, then publish their queues' capacities and this worker's readiness."""
    await service.start()
    if not service.ready:
        return
    for name, model in service.models.items():
        QUEUE_CAPACITY.labels(name).set(model.batcher.queue_size)
    if service.settings.legacy_workers:
        QUEUE_CAPACITY.labels("legacy-projection").set(service.legacy.capacity)
    set_ready(True)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; models load in the background at startup (``/readyz`` says when)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        app.state.service = service
        init_series()
        loading = asyncio.create_task(_start_and_publish(service), name="load-models")
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await service.stop()
            set_ready(False)
            mark_process_dead()

    app = FastAPI(
        title="stylegan2-distill",
        summary="A StyleGAN2 latent edit distilled into a Pix2PixHD student, served with ONNX Runtime.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(FramingMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_exception_handler(ServiceError, service_error_handler)  # type: ignore[arg-type]  # Starlette types every handler as taking Exception
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # type: ignore[arg-type]  # Starlette types every handler as taking Exception
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]  # Starlette types every handler as taking Exception
    app.add_exception_handler(Exception, unexpected_error_handler)
    for module in (transform, legacy, models, health, metrics):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        """The demo page: upload a photo, see the original and the edit side by side with timings."""
        return FileResponse(STATIC / "index.html")

    return app
