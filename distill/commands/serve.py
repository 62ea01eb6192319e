"""`distill serve`: run the FastAPI service with uvicorn (one or several worker processes)."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import shutil
import tempfile
from copy import deepcopy
from pathlib import Path

from distill.commands.zoo import add_zoo_argument

log = logging.getLogger("app.cli")


def _prepare_multiprocess_dir(workers: int) -> Path | None:
    """Set and empty PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client.

    A user-set directory is emptied and kept; with several workers and none set, a temporary one is made.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        folder = Path(configured)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return None
    if workers > 1:
        folder = Path(tempfile.mkdtemp(prefix="distill-prometheus-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        return folder
    return None


def _log_config() -> dict:
    """uvicorn's logging config plus our ``app`` and ``engines`` loggers on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = deepcopy(LOGGING_CONFIG)
    for name in ("app", "engines"):
        config["loggers"][name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def run(args: argparse.Namespace) -> int:
    if args.model_zoo is not None:
        os.environ["DISTILL_MODEL_ZOO"] = str(args.model_zoo)
    if args.provider is not None:
        os.environ["DISTILL_PROVIDER"] = args.provider
    if args.engine is not None:
        os.environ["DISTILL_ENGINE"] = args.engine
    if args.workers > 1 and not os.environ.get("DISTILL_INTRA_OP_THREADS"):
        # Several workers share the cores: give each its share instead of one thread per core each.
        os.environ["DISTILL_INTRA_OP_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    if args.workers > 1 and not os.environ.get("DISTILL_INFERENCE_STREAMS"):
        os.environ["DISTILL_INFERENCE_STREAMS"] = "1"  # the workers are the streams: one batch each at a time
    temp_dir = _prepare_multiprocess_dir(args.workers)
    try:
        return _serve(args)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _serve(args: argparse.Namespace) -> int:
    # Imported only now: prometheus_client (via app.service) must see PROMETHEUS_MULTIPROC_DIR at import.
    import uvicorn

    from app.config import Settings
    from app.protocol import JSONErrorH11Protocol
    from app.runtime import choose_provider
    from app.service import select_entries

    settings = Settings.from_env()
    entries = select_entries(settings)  # fail here, with one clear line, rather than in every worker
    provider = choose_provider(settings.provider)
    logging.config.dictConfig(_log_config())
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("distill serve: http://%s:%d (demo page /, API docs /docs, metrics /metrics)", host, args.port)
    log.info(
        "models: %s (default %s)",
        ", ".join(f"{e.name} from {e.zoo}" for e in entries),
        settings.default_model or entries[0].name,
    )
    log.info(
        "engine %s, provider %s -> %s (%s); %d worker(s); micro-batching max %d, wait %g ms",
        settings.engine,
        settings.provider,
        provider.name,
        provider.reason,
        args.workers,
        settings.max_batch,
        settings.max_wait_ms,
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=_log_config(),
        timeout_graceful_shutdown=10,
        http=JSONErrorH11Protocol,
    )
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP service (POST /transform, /legacy/transform, /metrics, demo page)",
        description="Serve model-zoo entries over HTTP. Other settings come from DISTILL_* environment "
        "variables (the README's settings table, or `python -m app.config`).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="uvicorn worker processes (metrics are aggregated across them; each gets cores/workers "
        "inference threads and one stream unless DISTILL_INTRA_OP_THREADS or DISTILL_INFERENCE_STREAMS is set)",
    )
    add_zoo_argument(p)
    p.add_argument(
        "--provider",
        choices=("auto", "cuda", "cpu"),
        default=None,
        help="ONNX Runtime execution provider (default: $DISTILL_PROVIDER or auto)",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "onnxruntime", "openvino"),
        default=None,
        help="inference engine: auto times the candidates at warm-up and serves the fastest within the "
        "accuracy gate (default: $DISTILL_ENGINE or auto)",
    )
    p.set_defaults(func=run)
