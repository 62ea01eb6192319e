"""What every inference engine offers the service: run a batch, describe its input and output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

EngineName = Literal["onnxruntime", "openvino"]
Device = Literal["cpu", "cuda", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Status = Literal["chosen", "passed", "slower", "refused", "failed", "skipped", "reference", "configured"]


@dataclass(frozen=True)
class EngineSpec:
    """One candidate: an engine on a device, running one variant file of the entry at one precision."""

    engine: EngineName
    device: Device
    variant: str  # the manifest variant whose ONNX file is loaded: fp32, fp16 or int8
    precision: Precision  # what the engine computes in (bf16 runs the fp32 file; int8 the QDQ file)

    @property
    def label(self) -> str:
        """``engine/device/precision`` (plus ``@variant`` when the file is not the precision's own)."""
        tail = "" if self.variant == self.precision else f"@{self.variant}"
        return f"{self.engine}/{self.device}/{self.precision}{tail}"


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as the engine declares it (``type_name`` in ONNX's ``tensor(float)`` form;
    a dimension is a number, a symbolic name such as ``batch``, or None when unknown)."""

    name: str
    type_name: str
    shape: tuple[int | str | None, ...]


class Engine(ABC):
    """A compiled model ready to run float32 [N,3,H,W] batches; one per served model."""

    spec: EngineSpec
    path: Path
    streams: int = 1  # batches it runs at once (from as many threads); the micro-batcher sends that many

    @abstractmethod
    def run(self, batch: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
        """float32 [N,3,H,W] -> float32 [N,3,H,W]; blocking (call it from a worker thread). ``strength`` [N] (or
        [N, K] for a student of K edits; [N, 1] is taken as [N]): the per-image edit strengths of a
        strength-conditioned model (None: 1.0 each); ignored by others."""

    @abstractmethod
    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The declared inputs and outputs (for the manifest contract check)."""

    @property
    def device(self) -> str:
        """Where it runs: ``cpu``, ``cuda`` or ``tensorrt`` (what ``X-Provider`` reports)."""
        return self.spec.device


def check_batch(batch: np.ndarray) -> None:
    """Refuse anything but an image batch [N,3,H,W] (a ValueError, not an assert: kept under ``python -O``)."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected an image batch [N,3,H,W], got shape {tuple(batch.shape)}")


def strength_dims(shape: Sequence[int | str | None]) -> tuple[int, ...]:
    """The per-image part of a strength input's declared shape: () for [N], (K,) for a student of K edits
    ([N, K]); ValueError when K is not a fixed number (the strength vector's length must be known)."""
    dims = tuple(d for d in shape[1:] if isinstance(d, int) and d > 0)
    if len(dims) != len(shape) - 1:
        raise ValueError(f"the strength input declares {list(shape)}; expected [N] or [N, K] with K fixed")
    return dims


def strength_vector(n: int, strength: np.ndarray | None, dims: tuple[int, ...] = ()) -> np.ndarray:
    """float32 [n, *dims]: the given per-image strengths, or 1.0 each (every edit at its own alpha). ``dims`` is
    :func:`strength_dims` of the model's input; a one-edit model's [n, 1] vectors become its [n]."""
    if strength is None:
        return np.ones((n, *dims), np.float32)
    s = np.ascontiguousarray(strength, dtype=np.float32)
    per_image = int(np.prod(dims))
    if s.size != n * per_image or (s.ndim and s.shape[0] != n):
        raise ValueError(f"{n} images but strengths of shape {list(s.shape)} (the model takes {[n, *dims]})")
    return s.reshape(n, *dims)


class CandidateResult(BaseModel):
    """One candidate's measurement at warm-up (or at export), shown in ``/models`` and logged."""

    engine: str
    device: str
    variant: str
    precision: str
    status: Status
    median_ms: float | None = None
    psnr_vs_fp32_db: float | None = None  # against ONNX Runtime fp32 on CPU; None for the reference itself
    reason: str = ""

    @classmethod
    def of(cls, spec: EngineSpec, status: Status, **fields: Any) -> CandidateResult:
        return cls(
            engine=spec.engine,
            device=spec.device,
            variant=spec.variant,
            precision=spec.precision,
            status=status,
            **fields,
        )
