"""Response bodies, as pydantic models so the OpenAPI docs show them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from engines.base import CandidateResult
from model_zoo.schema import StrengthSpec


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a stable code and a human-readable reason."""

    error: str
    detail: str | list | dict


class BatchingInfo(BaseModel):
    max_batch: int
    max_wait_ms: float
    queue_size: int
    streams: int  # micro-batches run at once


class LegacyInfo(BaseModel):
    enabled: bool
    steps: int
    max_steps: int
    timeout_s: float


class EditInfo(BaseModel):
    """One edit a model applies, as a request sets it (``edits={"age": 1.0}``): its name, the relative strengths it
    was trained on (``[default, default]`` at one fixed strength) and what a request that leaves it out gets."""

    attribute: str | None
    range: tuple[float, float]
    default: float


class ModelInfo(BaseModel):
    name: str
    zoo: str = ""  # the model-zoo folder the entry came from (--model-zoo, ./model_zoo or the shipped zoo)
    description: str
    edit: dict | None
    input_size: tuple[int, int]
    alignment: Literal["ffhq", "none"]  # the input framing the model expects (align=auto applies it)
    provider: str
    provider_reason: str
    variant: str
    variants: list[str]
    engine: str = "onnxruntime"  # the inference engine serving it: onnxruntime or openvino
    precision: str = "fp32"  # what the engine computes in: fp32, fp16, bf16 or int8
    engine_reason: str = ""  # configured, or the measured choice
    engine_candidates: list[CandidateResult] = Field(default_factory=list)  # each candidate's time and PSNR
    strength: StrengthSpec | None = (
        None  # a strength-conditioned model's range and default (the demo's slider)
    )
    edits: list[EditInfo] = Field(default_factory=list)  # every edit, in the strength vector's order
    legacy: bool
    legacy_error: str | None = (
        None  # why the legacy path is off for this model (teacher or direction unloadable)
    )
    domain: str | None = None  # the checked training domain (e.g. "age >= 0.2"); None: not checked
    domain_check: str = "off"  # what an input outside it gets: warn, refuse (422), or off (not checked)
    samples: list[str]
    batching: BatchingInfo
    warnings: list[str] = Field(default_factory=list)  # what the model does not do as configured


class ModelsResponse(BaseModel):
    default: str | None
    ready: bool
    models: list[ModelInfo]
    legacy: LegacyInfo


class Health(BaseModel):
    status: str
    detail: str | None = None
