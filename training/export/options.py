"""What ``distill export`` does: ExportOptions, one field per flag."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from core.errors import DistillError
from engines.select import MIN_PSNR_DB
from model_zoo.registry import (
    ALIGNMENTS,
)
from training.export.graph import (
    OPSET,
)


@dataclass
class ExportOptions:
    """What ``distill export`` does (one field per flag; ``layers`` as (START, STOP), ``variants`` as a list)."""

    run: str | os.PathLike
    out: str | os.PathLike
    name: str | None = None
    description: str | None = None
    variants: list[str] = field(default_factory=list)  # extra variants beside fp32: fp16, int8
    calibration: str | os.PathLike | None = None
    num_calibration: int = 64
    num_eval: int = 16
    min_variant_psnr: float = MIN_PSNR_DB
    teacher: str | os.PathLike | None = None
    direction: str | os.PathLike | None = None
    alpha: float | None = None
    layers: tuple[int, int] | None = None
    normalize: bool = False
    attribute: str | None = None
    size: str | None = None  # HxW or one number; None: the training size from run.json
    alignment: str = "none"
    samples: list[str] | None = None
    opset: int = OPSET
    timing_repeats: int = 5
    domain: list[str] | None = (
        None  # the filter's keep ranges that define the domain; None: all on the originals
    )
    overwrite: bool = False

    def __post_init__(self) -> None:
        for v in self.variants:
            if v not in ("fp16", "int8"):
                raise DistillError(
                    f"--variants: unknown variant {v!r}; choose from fp16, int8 (fp32 is always written)"
                )
        if self.alignment not in ALIGNMENTS:
            raise DistillError(f"--alignment {self.alignment!r}: choose from {', '.join(ALIGNMENTS)}")
