"""The model's domain, checked on every input: is this picture like those the student learnt from?

An entry whose manifest has a ``domain`` (see :class:`model_zoo.schema.Domain`: written by ``distill export``
from the filter report) ships the scorer the training pairs were filtered with and the keep ranges that
defined the student's inputs. Each framed input (the square picture the student sees; each face crop on the
face path) is scored with it, preprocessed as the filter did (``training.onnx_scorer.OnnxScorer``: bilinear
resize, ``(x/255 - mean) / std``, the activation, columns by index), and judged against the ranges.

``DISTILL_DOMAIN_CHECK`` says what a verdict does: ``warn`` (the default) answers as usual and says it in
``X-Distill-Domain`` (``inside``, or ``outside; age 0.12 below 0.20``); ``refuse`` answers an input outside
with 422 ``outside_domain``; ``off`` scores nothing. Entries without a domain say nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from app.config import DomainMode
from app.errors import ServiceError
from app.metrics import DOMAIN_VERDICTS
from model_zoo.registry import ModelEntry
from model_zoo.schema import Domain

HEADER = "X-Distill-Domain"


@dataclass(frozen=True)
class Verdict:
    """One input's place against the domain: inside, or outside with the first range it misses and by how much."""

    scores: dict[str, float]
    reason: str | None = None  # "age 0.12 below 0.20"; None: inside
    distance: float = 0.0  # how far beyond its bound the worst score lies (0 inside)

    @property
    def inside(self) -> bool:
        return self.reason is None

    @property
    def label(self) -> Literal["inside", "outside"]:
        return "inside" if self.inside else "outside"

    def text(self) -> str:
        """The ``X-Distill-Domain`` value (and ``results.jsonl``'s ``domain``)."""
        return "inside" if self.reason is None else f"outside; {self.reason}"


def judge(scores: dict[str, float], keep: dict[str, tuple[float | None, float | None]]) -> Verdict:
    """``scores`` against the keep ranges (inclusive bounds): the verdict naming the range missed by most."""
    worst: tuple[float, str] | None = None
    for name, (low, high) in keep.items():
        value = scores[name]
        if low is not None and value < low:
            miss = (low - value, f"{name} {value:.2f} below {low:.2f}")
        elif high is not None and value > high:
            miss = (value - high, f"{name} {value:.2f} above {high:.2f}")
        else:
            continue
        if worst is None or miss[0] > worst[0]:
            worst = miss
    if worst is None:
        return Verdict(scores)
    return Verdict(scores, reason=worst[1], distance=worst[0])


def worst(verdicts: list[Verdict]) -> Verdict:
    """The verdict of a request with several pictures (faces): inside when all are, else the one farthest out."""
    return max(verdicts, key=lambda v: v.distance)


class DomainCheck:
    """An entry's domain scorer (one ONNX Runtime session on the CPU, a single thread: it is a few hundred KB and
    scores a 64x64 picture in well under a millisecond) and its keep ranges."""

    def __init__(self, model: str, domain: Domain, entry_dir: Path, mode: DomainMode) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.model = model
        self.domain = domain
        self.mode = mode
        self.session = ort.InferenceSession(
            str(entry_dir / domain.scorer), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.mean = np.asarray(domain.mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(domain.std, np.float32).reshape(1, -1, 1, 1)

    def ranges(self) -> str:
        """The keep ranges as text, e.g. ``age >= 0.2``."""
        parts = []
        for name, (low, high) in self.domain.keep.items():
            if low is not None and high is not None:
                parts.append(f"{low:g} <= {name} <= {high:g}")
            else:
                parts.append(f"{name} >= {low:g}" if low is not None else f"{name} <= {high:g}")
        return ", ".join(parts)

    def preprocess(self, pictures: list[np.ndarray]) -> np.ndarray:
        """uint8 [H,W,3] pictures -> normalised float32 [N,3,h,w] at the scorer's size (as the filter did)."""
        h, w = self.domain.input_size
        resized = [
            p
            if p.shape[:2] == (h, w)
            else np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BILINEAR))
            for p in pictures
        ]
        x = np.stack(resized).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return (x - self.mean) / self.std

    def scores(self, pictures: list[np.ndarray]) -> list[dict[str, float]]:
        """The domain's named scores of each picture (one batch through the scorer)."""
        x = self.preprocess(pictures)
        y = np.asarray(self.session.run(None, {self.input_name: x})[0], np.float64).reshape(len(x), -1)
        if self.domain.activation == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-y))
        elif self.domain.activation == "softmax":
            e = np.exp(y - y.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        return [{k: float(row[i]) for k, i in self.domain.outputs.items()} for row in y]

    def judge(self, pictures: list[np.ndarray]) -> Verdict:
        """The request's verdict (:func:`worst` over its pictures)."""
        return worst([judge(s, self.domain.keep) for s in self.scores(pictures)])

    def check(self, pictures: list[np.ndarray]) -> Verdict:
        """:meth:`judge` the framed pictures and count the verdict (``distill_domain_verdicts_total``); 422
        ``outside_domain`` (with the header) for an input outside when the mode is ``refuse``."""
        verdict = self.judge(pictures)
        DOMAIN_VERDICTS.labels(self.model, verdict.label).inc()
        if self.mode == "refuse" and not verdict.inside:
            raise ServiceError(
                422,
                "outside_domain",
                f"the input lies outside the training domain of model {self.model!r} ({verdict.reason}); "
                "send a picture like those it was trained on",
                headers={HEADER: verdict.text()},
                model=self.model,
                domain=verdict.text(),
                scores={k: round(v, 4) for k, v in verdict.scores.items()},
            )
        return verdict


def load_check(entry: ModelEntry, mode: DomainMode) -> DomainCheck | None:
    """The entry's check, its verdict series created at zero; None when it records no domain or the mode is
    ``off``."""
    if entry.spec.domain is None or mode == "off":
        return None
    for verdict in ("inside", "outside"):
        DOMAIN_VERDICTS.labels(entry.name, verdict)
    return DomainCheck(entry.name, entry.spec.domain, entry.path, mode)
