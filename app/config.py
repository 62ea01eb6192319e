"""Service settings, read from ``DISTILL_*`` environment variables (so every uvicorn worker sees the same).

Each field of :class:`Settings` is one variable, ``DISTILL_<FIELD>``; the README's settings table is generated
from the fields (``python -m app.config --write-readme``), so the two cannot drift.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from core.errors import DistillError

PREFIX = "DISTILL_"
LOWERCASE = ("provider", "variant_cpu", "variant_cuda", "engine", "openvino_precision", "domain_check")
PROVIDERS = ("auto", "cuda", "cpu")
VARIANTS = ("auto", "fp32", "fp16", "int8")
ENGINES = ("auto", "onnxruntime", "openvino")
OPENVINO_PRECISIONS = ("auto", "fp32", "bf16", "int8")
DomainMode = Literal[
    "warn", "refuse", "off"
]  # what an input outside a model's training domain gets (app.domain)
UPPER_BOUNDS = {  # beyond these a value is a typo (a timeout of years), not a configuration
    "max_wait_ms": 10_000.0,
    "legacy_timeout_s": 86_400.0,
    "engine_budget_s": 3_600.0,
}
README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_START, TABLE_END = (
    "<!-- settings table: python -m app.config --write-readme -->",
    "<!-- end of settings table -->",
)

_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("distill_settings_environ", default=None)


def _shown(text: str) -> dict[str, Any]:
    """A field's default as the settings table shows it, where the value itself says little."""
    return {"shown_default": text}


class _MappingEnvSource(EnvSettingsSource):
    """``DISTILL_*`` variables from a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class Settings(BaseSettings):
    """Everything the service reads from its environment; one instance per process, on ``app.state``.

    ``Settings(...)`` takes its values from the arguments only (the defaults elsewhere);
    :meth:`from_env` reads the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        extra="ignore",
        env_ignore_empty=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,  # nan or inf in a duration would start a service that fails every request
    )

    model_zoo: Path | None = Field(
        None,
        description="model-zoo root folder",
        json_schema_extra=_shown("./model_zoo, then the shipped zoo"),
    )
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated entries to serve", json_schema_extra=_shown("every entry")
    )
    default_model: str | None = Field(
        None, description="entry used when a request names none", json_schema_extra=_shown("first entry")
    )
    provider: str = Field("auto", description="``auto`` (CUDA when usable, else CPU), ``cuda`` or ``cpu``")
    intra_op_threads: int = Field(0, description="ONNX Runtime threads inside one operator (0 = one a core)")
    inter_op_threads: int = Field(0, description="ONNX Runtime threads across operators (0 = default)")
    variant_cpu: str = Field("auto", description="ONNX Runtime's variant on CPU (auto, fp32, fp16, int8)")
    variant_cuda: str = Field(
        "auto", description="ONNX Runtime's variant on CUDA/TensorRT (auto, fp32, fp16, int8)"
    )
    engine: str = Field("auto", description="``auto`` (measured at warm-up), ``onnxruntime`` or ``openvino``")
    openvino_precision: str = Field("auto", description="OpenVINO's precision (auto, fp32, bf16, int8)")
    engine_budget_s: float = Field(20.0, description="seconds the warm-up may spend timing candidate engines")
    engine_cache: Path | None = Field(
        None,
        description="writable folder for compiled models (OpenVINO, TensorRT)",
        json_schema_extra=_shown("~/.cache/distill"),
    )
    inference_streams: int = Field(
        2,
        description="micro-batches run at once per model on OpenVINO (its streams: the inference threads split "
        "between them; ONNX Runtime runs one)",
    )
    max_batch: int = Field(4, description="micro-batch size limit (1 turns batching off)")
    max_wait_ms: float = Field(2.0, description="longest wait for a micro-batch to fill (ms)")
    queue_size: int = Field(64, description="requests waiting per model before 503 + Retry-After")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, description="largest accepted upload (bytes)", json_schema_extra=_shown("20 MiB")
    )
    max_pixels: int = Field(40_000_000, description="largest accepted width x height (decompression bombs)")
    max_faces: int = Field(
        16, description="most faces one faces=all request edits (more: 422 too_many_faces)"
    )
    face_pixels: int = Field(
        80_000_000,
        description="pixels of face-path photos in memory at once per worker (beyond: 503 + Retry-After)",
    )
    output_quality: int = Field(92, description="JPEG/WebP quality of the returned image (1..100)")
    legacy_steps: int = Field(1000, description="projection steps when a request names none")
    legacy_max_steps: int = Field(1000, description="upper bound on ``steps``")
    legacy_workers: int = Field(1, description="projection processes (0 disables /legacy/transform)")
    legacy_queue: int = Field(2, description="projections waiting beyond the running ones before 503")
    legacy_timeout_s: float = Field(300.0, description="a projection running longer gets 504")
    legacy_threads: int = Field(1, description="torch threads in each projection process")
    legacy_result_bytes: int = Field(
        256 * 1024 * 1024,
        description="bytes of finished /legacy/jobs images kept per worker (oldest dropped first: 410)",
        json_schema_extra=_shown("256 MiB"),
    )
    vgg16: Path | None = Field(
        None,
        description="VGG16 weights for the projector's perceptual loss",
        json_schema_extra=_shown("(pixel loss)"),
    )
    domain_check: DomainMode = Field(
        "warn",
        description="inputs outside the model's recorded training domain: ``warn`` (answered, "
        "``X-Distill-Domain: outside; ...``), ``refuse`` (422 outside_domain) or ``off`` (not scored)",
    )
    warmup_runs: int = Field(2, description="inference runs per model before /readyz turns ready")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise DistillError("; ".join(_message(err) for err in e.errors())) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The arguments, and the environment only inside :meth:`from_env`."""
        environ = _ENVIRON.get()
        return (
            (init_settings,) if environ is None else (init_settings, _MappingEnvSource(settings_cls, environ))
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``DISTILL_<FIELD>`` (of ``environ``, default ``os.environ``); unset or empty
        variables keep the default."""
        with _reading(os.environ if environ is None else environ):
            return cls()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, checked like the original."""
        return type(self)(**{**{k: getattr(self, k) for k in type(self).model_fields}, **changes})

    @field_validator("models", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(m.strip() for m in value.split(",") if m.strip())
        return value

    @field_validator(*LOWERCASE, mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.provider not in PROVIDERS:
            raise DistillError(f"{PREFIX}PROVIDER={self.provider!r}: choose one of {', '.join(PROVIDERS)}")
        for name, choices in (
            ("variant_cpu", VARIANTS),
            ("variant_cuda", VARIANTS),
            ("engine", ENGINES),
            ("openvino_precision", OPENVINO_PRECISIONS),
        ):
            if getattr(self, name) not in choices:
                raise DistillError(
                    f"{PREFIX}{name.upper()}={getattr(self, name)!r}: choose one of {', '.join(choices)}"
                )
        positive = (
            "inference_streams",
            "max_batch",
            "queue_size",
            "max_upload_bytes",
            "max_pixels",
            "legacy_steps",
            "legacy_max_steps",
            "legacy_queue",
            "legacy_timeout_s",
            "legacy_threads",
            "legacy_result_bytes",
            "max_faces",
            "face_pixels",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise DistillError(f"{PREFIX}{name.upper()}={getattr(self, name)}: must be > 0")
        for name in (
            "intra_op_threads",
            "inter_op_threads",
            "max_wait_ms",
            "legacy_workers",
            "warmup_runs",
            "engine_budget_s",
        ):
            if getattr(self, name) < 0:
                raise DistillError(f"{PREFIX}{name.upper()}={getattr(self, name)}: must be >= 0")
        for name, most in UPPER_BOUNDS.items():
            if getattr(self, name) > most:
                raise DistillError(f"{PREFIX}{name.upper()}={getattr(self, name)}: must be <= {most:g}")
        if not 1 <= self.output_quality <= 100:
            raise DistillError(f"{PREFIX}OUTPUT_QUALITY={self.output_quality}: must be in 1..100")
        if self.face_pixels < self.max_pixels:
            raise DistillError(
                f"{PREFIX}FACE_PIXELS={self.face_pixels} is below {PREFIX}MAX_PIXELS={self.max_pixels}: "
                "the largest accepted photo could never take the face path"
            )
        if self.legacy_steps > self.legacy_max_steps:
            raise DistillError(
                f"{PREFIX}LEGACY_STEPS={self.legacy_steps} exceeds {PREFIX}LEGACY_MAX_STEPS={self.legacy_max_steps}"
            )
        return self


@contextmanager
def _reading(environ: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _message(err: Any) -> str:
    """One pydantic error as ``DISTILL_FIELD='value': what was expected``."""
    name = str(err["loc"][0]) if err.get("loc") else "?"
    return f"{PREFIX}{name.upper()}={err.get('input')!r}: {err['msg'].lower()}"


def settings_table() -> str:
    """The README's table of settings: variable, meaning, default; one row per field of :class:`Settings`."""
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        shown = (
            (f.json_schema_extra or {}).get("shown_default")
            if isinstance(f.json_schema_extra, dict)
            else None
        )
        default = shown if shown is not None else f.default
        meaning = (f.description or "").replace("``", "`")
        rows.append(f"| `{PREFIX}{name.upper()}` | {meaning} | {default} |")
    return "\n".join(rows)


def readme_with_table(text: str) -> str:
    """``text`` (the README) with the settings table between its markers replaced by :func:`settings_table`."""
    pattern = re.compile(re.escape(TABLE_START) + r".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise DistillError(f"{README}: no settings table markers ({TABLE_START} ... {TABLE_END})")
    return pattern.sub(lambda _: f"{TABLE_START}\n{settings_table()}\n{TABLE_END}", text)


def main(argv: list[str] | None = None) -> int:
    """Print the settings table, or write it into the README (``--write-readme``)."""
    parser = argparse.ArgumentParser(prog="python -m app.config", description=main.__doc__)
    parser.add_argument("--write-readme", action="store_true", help=f"rewrite the table in {README}")
    args = parser.parse_args(argv)
    if not args.write_readme:
        print(settings_table())
        return 0
    README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
