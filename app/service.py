"""The service's long-lived state: the loaded models (session + micro-batcher each) and the legacy pool.

One :class:`Service` per worker process lives on ``app.state.service``. :meth:`Service.start` loads,
checks (each model against its manifest's contract) and warms every model in a thread (so ``/healthz``
answers while it runs) and only then turns ready. Any failure there is logged and kept as
``load_error``: ``/readyz`` answers 503 ``failed`` with it for good, so an orchestrator restarts or
alerts instead of waiting. A teacher or direction that does not load disables only that model's
legacy path (``legacy_error``: 503 ``legacy_unavailable`` with the reason, shown in ``/models``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.batching import MicroBatcher
from app.config import Settings
from app.domain import DomainCheck, load_check
from app.errors import ServiceError
from app.faces import PixelBudget
from app.legacy import LegacyEdit, LegacyExecutor, LegacyJob
from app.metrics import BATCH_SIZE, MODEL_INFO, QUEUE_DEPTH, observe_candidates
from app.runtime import ModelRuntime, load_runtime
from core.errors import DistillError
from editing.alignment.landmarks import FaceFinder, default_finder
from model_zoo.registry import ModelEntry, get_entry, list_entries, zoo_roots

log = logging.getLogger("app.service")

SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class LoadedModel:
    """A model ready to serve: its zoo entry, ONNX Runtime session and micro-batcher."""

    runtime: ModelRuntime
    batcher: MicroBatcher
    domain: DomainCheck | None = (
        None  # the recorded training domain, checked on every input (None: not checked)
    )
    legacy_error: str | None = None  # why the teacher or direction cannot be loaded (the legacy path is off)

    @property
    def entry(self) -> ModelEntry:
        return self.runtime.entry

    @property
    def has_teacher(self) -> bool:
        """Whether the legacy path can run: the entry ships a teacher and every edit's direction, alpha and layers."""
        edits = self.entry.spec.edits
        return (
            self.entry.teacher_path is not None
            and bool(edits)
            and all(e.direction and e.alpha is not None and e.layers is not None for e in edits)
        )

    def samples(self) -> list[Path]:
        """The images the manifest lists under ``samples/`` (shown on the demo page); other files there are
        never listed or served (checked at start with the rest of the entry)."""
        return [p for p in self.entry.listed("samples") if p.suffix.lower() in SAMPLE_SUFFIXES]


def select_entries(settings: Settings) -> list[ModelEntry]:
    """The entries to serve (``settings.models`` or the whole zoo), checksums verified; DistillError if none.
    Names resolve as everywhere (model_zoo.registry.zoo_roots): the configured zoo, else ./model_zoo, then
    the shipped one."""
    root = settings.model_zoo
    names = list(settings.models) or [e.name for e in list_entries(root)]
    if not names:
        raise DistillError(
            f"no model-zoo entries under {' or '.join(map(str, zoo_roots(root)))}; set DISTILL_MODEL_ZOO "
            "(or --model-zoo) to a folder of "
            "entries written by `distill export`"
        )
    return [get_entry(name, root, verify=True) for name in names]


class Service:
    """Models, batchers and the legacy pool of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel] = {}
        self.default_model: str | None = None
        self.ready = False
        self.load_error: str | None = None
        self._face_finder: FaceFinder | None = None
        self.face_pixels = PixelBudget(settings.face_pixels)
        self.legacy = LegacyExecutor(
            settings.legacy_workers,
            settings.legacy_queue,
            settings.legacy_timeout_s,
            settings.legacy_threads,
            on_depth=QUEUE_DEPTH.labels("legacy-projection").set,
        )

    async def start(self) -> None:
        """Load, check and warm every model without blocking the event loop, start the batchers, turn ready;
        on any failure keep the reason in ``load_error`` (logged) and stay not ready."""
        try:
            await self._start()
        except DistillError as e:
            self.load_error = str(e)
            log.error("the service cannot start serving: %s", e)
        except Exception as e:  # a bug or a library error: still reported, never a silent "loading" forever
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("the service cannot start serving: %s", self.load_error)

    async def _start(self) -> None:
        loaded = await asyncio.to_thread(self._load_all)
        for runtime, domain in loaded:
            self.models[runtime.name] = LoadedModel(runtime, self._make_batcher(runtime), domain)
            self.models[runtime.name].batcher.start()
        names = list(self.models)
        self.default_model = self.settings.default_model or names[0]
        if self.default_model not in self.models:
            self.load_error = (
                f"DISTILL_DEFAULT_MODEL={self.default_model!r} is not served (serving: {', '.join(names)})"
            )
            log.error(self.load_error)
            return
        for model in self.models.values():
            if model.has_teacher:
                try:
                    await self.legacy.warm([self.legacy_job(model, self.settings.legacy_steps)])
                except Exception as e:  # a broken teacher disables that model's legacy path, not the service
                    self.legacy_failed(model, e)
        self.ready = True
        log.info("ready: %s (default %s)", ", ".join(names), self.default_model)

    def _load_all(self) -> list[tuple[ModelRuntime, DomainCheck | None]]:
        """Load, check and warm every entry, with its domain scorer (none when it records no domain or
        ``DISTILL_DOMAIN_CHECK=off``)."""
        runtimes = []
        entries = select_entries(self.settings)
        if any(entry.alignment == "ffhq" for entry in entries):
            self.face_finder()
        for entry in entries:
            runtime = load_runtime(entry, self.settings)
            runtime.check_contract()
            self._check_batching(runtime)
            seconds = runtime.warm_up(self.settings.warmup_runs, self._max_batch(runtime))
            h, w = runtime.native_hw
            MODEL_INFO.labels(
                entry.name,
                runtime.provider,
                runtime.variant,
                f"{h}x{w}",
                str(entry.teacher_path is not None).lower(),
                runtime.engine_name,
                runtime.precision,
            ).set(1)
            observe_candidates(entry.name, runtime.candidates)
            log.info(
                "model %s: %dx%d, engine %s on %s (%s), variant %s, precision %s (%s), warm-up %.2f s",
                entry.name,
                h,
                w,
                runtime.engine_name,
                runtime.provider,
                runtime.provider_reason,
                runtime.variant,
                runtime.precision,
                runtime.engine_reason,
                seconds,
            )
            domain = load_check(entry, self.settings.domain_check)
            if domain is not None:
                log.info("model %s: domain %s checked (%s)", entry.name, domain.ranges(), domain.mode)
            runtimes.append((runtime, domain))
        return runtimes

    def face_finder(self) -> FaceFinder:
        """The face detector and landmarker (loaded on first use: at start when a served model expects FFHQ faces)."""
        if self._face_finder is None:
            finder = default_finder()
            finder.find(np.zeros((64, 64, 3), np.uint8))  # warm-up
            log.info("face alignment ready: dlib frontal face detector, 68-point landmarks")
            self._face_finder = finder
        return self._face_finder

    def _check_batching(self, runtime: ModelRuntime) -> None:
        """Serve at batch 1, with a warning (logged, in ``/models`` and ``/readyz``), a model that fails beyond it."""
        max_batch = self._max_batch(runtime)
        if max_batch < 2:
            return
        reason = runtime.check_batching(max_batch)
        if reason is not None:
            runtime.batch_warning = (
                f"served at batch 1: it {reason}; re-export it with a batch axis its graph keeps"
            )
            log.warning("model %s: %s", runtime.name, runtime.batch_warning)

    def warnings(self) -> list[str]:
        """What the served models do not do as configured (``/readyz`` says it beside ``ready``)."""
        return [
            f"model {m.entry.name}: {m.runtime.batch_warning}"
            for m in self.models.values()
            if m.runtime.batch_warning
        ]

    def _max_batch(self, runtime: ModelRuntime) -> int:
        """The configured max batch, capped by a fixed batch size in the model's ONNX input (1 for a model that
        failed the batch check)."""
        if runtime.batch_warning is not None:
            return 1
        limit = runtime.batch_limit
        if limit is not None and limit < self.settings.max_batch:
            log.warning(
                "model %s: its ONNX input has a fixed batch of %d; micro-batching limited to it "
                "(re-export with a dynamic batch axis to batch)",
                runtime.name,
                limit,
            )
            return limit
        return self.settings.max_batch

    def _make_batcher(self, runtime: ModelRuntime) -> MicroBatcher:
        s = self.settings
        max_batch = self._max_batch(runtime)
        batch_hist = BATCH_SIZE.labels(runtime.name, runtime.provider)
        depth = QUEUE_DEPTH.labels(runtime.name)
        return MicroBatcher(
            runtime.run,
            max_batch=max_batch,
            max_wait_s=s.max_wait_ms / 1000,
            queue_size=s.queue_size,
            name=runtime.name,
            on_batch=lambda n, _: batch_hist.observe(n),
            on_depth=depth.set,
            concurrency=runtime.engine.streams,
        )

    def legacy_failed(self, model: LoadedModel, error: BaseException) -> None:
        """Turn ``model``'s legacy path off with the reason (logged, answered by /legacy/transform and /models)."""
        model.legacy_error = str(error) or type(error).__name__
        log.error("model %s: the legacy path is off: %s", model.entry.name, model.legacy_error)

    def legacy_job(self, model: LoadedModel, steps: int, strengths: np.ndarray | None = None) -> LegacyJob:
        """The projection job for ``model``: its teacher and its edits' directions from its manifest, at
        ``strengths`` [K] (relative, as the student's: alpha_k = strength_k x edit k's alpha; None: 1.0 each, a
        fixed-strength edit's own alpha). The edits share the entry's ``direction.normalize`` (False without one)."""
        entry = model.entry
        teacher = entry.teacher_path
        assert teacher is not None and model.has_teacher, "only entries that ship a teacher and directions"
        edits = []
        for k, e in enumerate(entry.spec.edits):
            assert e.direction is not None and e.alpha is not None and e.layers is not None
            scale = 1.0 if strengths is None else float(strengths[k])
            edits.append(LegacyEdit(entry.path / e.direction, scale * e.alpha, e.layers))
        normalize = entry.spec.direction.normalize if entry.spec.direction is not None else False
        return LegacyJob(teacher, tuple(edits), normalize, steps, self.settings.vgg16)

    async def stop(self) -> None:
        for model in self.models.values():
            await model.batcher.stop()
        self.legacy.shutdown()

    def require_ready(self) -> None:
        """503 + Retry-After until the models are loaded and warmed."""
        if not self.ready:
            detail = self.load_error or "models are still loading and warming up"
            raise ServiceError(503, "not_ready", detail, headers={"Retry-After": "1"})

    def get_model(self, name: str | None) -> LoadedModel:
        """The named model (default when None/empty); 404 listing the served models when unknown."""
        self.require_ready()
        name = name or self.default_model
        if name not in self.models:
            raise ServiceError(
                404,
                "unknown_model",
                f"no model {name!r}; available: {', '.join(self.models)}",
                available=list(self.models),
            )
        return self.models[name]
