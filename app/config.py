"""Service settings, read from ``DISTILL_*`` environment variables (so every uvicorn worker sees the same).

=============================  =========================================================  ==============
variable                       meaning                                                    default
=============================  =========================================================  ==============
DISTILL_MODEL_ZOO              model-zoo root folder                                      model_zoo pkg
DISTILL_MODELS                 comma-separated entries to serve                           every entry
DISTILL_DEFAULT_MODEL          entry used when a request names none                       first entry
DISTILL_PROVIDER               ``auto`` (CUDA when usable, else CPU), ``cuda`` or ``cpu``  auto
DISTILL_INTRA_OP_THREADS       ONNX Runtime threads inside one operator (0 = one a core)  0
DISTILL_INTER_OP_THREADS       ONNX Runtime threads across operators (0 = default)        0
DISTILL_ENGINE                 ``auto`` (measured at warm-up), ``onnxruntime``, ``openvino``  auto
DISTILL_VARIANT_CPU            ONNX Runtime's variant on CPU (auto, fp32, fp16, int8)     auto
DISTILL_VARIANT_CUDA           ONNX Runtime's variant on CUDA/TensorRT (auto, fp32, ...)  auto
DISTILL_OPENVINO_PRECISION     OpenVINO's precision (auto, fp32, bf16, int8)              auto
DISTILL_ENGINE_BUDGET_S        seconds the warm-up may spend timing candidate engines     20
DISTILL_ENGINE_CACHE           writable folder for compiled models (OpenVINO, TensorRT)   ~/.cache/distill
DISTILL_MAX_BATCH              micro-batch size limit (1 turns batching off)              8
DISTILL_MAX_WAIT_MS            longest wait for a micro-batch to fill                     5
DISTILL_QUEUE_SIZE             requests waiting per model before 503 + Retry-After        64
DISTILL_MAX_UPLOAD_BYTES       largest accepted upload                                    20 MiB
DISTILL_MAX_PIXELS             largest accepted width x height (decompression bombs)     40 M
DISTILL_OUTPUT_QUALITY         JPEG/WebP quality of the returned image                    92
DISTILL_LEGACY_STEPS           projection steps when a request names none                 1000
DISTILL_LEGACY_MAX_STEPS       upper bound on ``steps``                                   1000
DISTILL_LEGACY_WORKERS         projection processes (0 disables /legacy/transform)        1
DISTILL_LEGACY_QUEUE           projections waiting beyond the running ones before 503     2
DISTILL_LEGACY_TIMEOUT_S       a projection running longer gets 504                       300
DISTILL_LEGACY_THREADS         torch threads in each projection process                   1
DISTILL_VGG16                  VGG16 weights for the projector's perceptual loss          (pixel loss)
DISTILL_WARMUP_RUNS            inference runs per model before /readyz turns ready        2
=============================  =========================================================  ==============
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from core.errors import DistillError

PREFIX = "DISTILL_"
LOWERCASE = ("provider", "variant_cpu", "variant_cuda", "engine", "openvino_precision")
PROVIDERS = ("auto", "cuda", "cpu")
VARIANTS = ("auto", "fp32", "fp16", "int8")
ENGINES = ("auto", "onnxruntime", "openvino")
OPENVINO_PRECISIONS = ("auto", "fp32", "bf16", "int8")


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment; one instance per process, on ``app.state``."""

    model_zoo: Path | None = None
    models: tuple[str, ...] = ()
    default_model: str | None = None
    provider: str = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    variant_cpu: str = "auto"
    variant_cuda: str = "auto"
    engine: str = "auto"
    openvino_precision: str = "auto"
    engine_budget_s: float = 20.0
    engine_cache: Path | None = None
    max_batch: int = 8
    max_wait_ms: float = 2.0
    queue_size: int = 64
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    output_quality: int = 92
    legacy_steps: int = 1000
    legacy_max_steps: int = 1000
    legacy_workers: int = 1
    legacy_queue: int = 2
    legacy_timeout_s: float = 300.0
    legacy_threads: int = 1
    vgg16: Path | None = None
    warmup_runs: int = 2

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise DistillError(f"{PREFIX}PROVIDER={self.provider!r}: choose one of {', '.join(PROVIDERS)}")
        for name, choices in (("variant_cpu", VARIANTS), ("variant_cuda", VARIANTS), ("engine", ENGINES),
                              ("openvino_precision", OPENVINO_PRECISIONS)):
            if getattr(self, name) not in choices:
                raise DistillError(
                    f"{PREFIX}{name.upper()}={getattr(self, name)!r}: choose one of {', '.join(choices)}"
                )
        positive = ("max_batch", "queue_size", "max_upload_bytes", "max_pixels", "legacy_steps", "legacy_max_steps",
                    "legacy_queue", "legacy_timeout_s", "legacy_threads")
        for name in positive:
            if getattr(self, name) <= 0:
                raise DistillError(f"{PREFIX}{name.upper()}={getattr(self, name)}: must be > 0")
        for name in ("intra_op_threads", "inter_op_threads", "max_wait_ms", "legacy_workers", "warmup_runs",
                     "engine_budget_s"):
            if getattr(self, name) < 0:
                raise DistillError(f"{PREFIX}{name.upper()}={getattr(self, name)}: must be >= 0")
        if not 1 <= self.output_quality <= 100:
            raise DistillError(f"{PREFIX}OUTPUT_QUALITY={self.output_quality}: must be in 1..100")
        if self.legacy_steps > self.legacy_max_steps:
            raise DistillError(
                f"{PREFIX}LEGACY_STEPS={self.legacy_steps} exceeds {PREFIX}LEGACY_MAX_STEPS={self.legacy_max_steps}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``DISTILL_<FIELD>``; unset or empty variables keep the default."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            raw = environ.get(key, "").strip()
            if not raw:
                continue
            default = f.default
            try:
                if f.name == "models":
                    values[f.name] = tuple(m.strip() for m in raw.split(",") if m.strip())
                elif f.name in ("model_zoo", "vgg16", "engine_cache"):
                    values[f.name] = Path(raw)
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw.lower() if f.name in LOWERCASE else raw
            except ValueError as e:
                raise DistillError(f"{key}={raw!r}: expected a {type(default).__name__}") from e
        return cls(**values)
