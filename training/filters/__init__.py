"""`distill filter`: score every pair with pluggable scorers and mark it kept or rejected, never deleting.

Scorers (``SCORERS``): ``face`` (OpenCV's Haar cascade: reject images with no face) and ``onnx``
(any user classifier/regressor with its input size, normalisation and named outputs). Each scores
the originals (``on: a``), the edited images (``b``) or both; scores land in the manifest as
``"<side>.<name>"`` (e.g. ``"a.age"``). Keep rules (``age=18:65``) and the scorers' own rules decide
``keep``; ``reason`` says why a pair was rejected (``"no face"``, ``"age < 18 (B)"``). The manifest is
rewritten atomically; earlier filter results are replaced, so re-running is deterministic.

Several scorers can be given in a JSON spec file (``--spec``)::

    {"scorers": [
      {"type": "face", "on": "both", "min_neighbors": 5},
      {"type": "onnx", "path": "age.onnx", "input_size": 64, "mean": [0.5], "std": [0.5],
       "outputs": {"age": 0}, "activation": "none", "on": "a", "keep": {"age": [18, 65]}}
    ]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DistillError, FieldError
from editing.images import load_image
from training.filters.face_detector import HaarFaceDetector
from training.filters.report import write_report
from training.manifest import PairRecord, read_manifest, read_metadata, write_manifest
from training.onnx_scorer import OnnxScorer
from training.pairs import pending_files
from training.scoring import KeepRule, Scorer, parse_keep

SIDES = {"a": ("a",), "b": ("b",), "both": ("a", "b")}


def _face(spec: dict[str, Any]) -> Scorer:
    return HaarFaceDetector(
        cascade=spec.get("cascade"),
        scale_factor=float(spec.get("scale_factor", 1.1)),
        min_neighbors=int(spec.get("min_neighbors", 5)),
        min_size=float(spec.get("min_size", 0.1)),
        min_confidence=spec.get("min_confidence"),
    )


def _onnx(spec: dict[str, Any]) -> Scorer:
    if "path" not in spec or "outputs" not in spec:
        raise DistillError(f"onnx scorer {spec}: needs 'path' and 'outputs' ({{\"age\": 0}})")
    size = spec.get("input_size")
    return OnnxScorer(
        spec["path"],
        outputs={k: int(v) for k, v in spec["outputs"].items()},
        input_size=tuple(size) if isinstance(size, list) else size,
        mean=spec.get("mean", (0.5,)),
        std=spec.get("std", (0.5,)),
        activation=spec.get("activation", "none"),
    )


# Scorer type -> constructor from its spec dict. Add new scorers here.
SCORERS: dict[str, Callable[[dict[str, Any]], Scorer]] = {"face": _face, "onnx": _onnx}


def _as_list(v: Any) -> list[float]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def build(spec: list[dict[str, Any]]) -> list[tuple[Scorer, tuple[str, ...], list[KeepRule]]]:
    """Spec entries -> (scorer, sides, rules). Every score name must be unique and every keep rule used."""
    built = []
    seen: set[str] = set()
    for entry in spec:
        kind = entry.get("type")
        if kind not in SCORERS:
            raise DistillError(f"scorer {entry}: unknown type {kind!r}; choose one of {', '.join(SCORERS)}")
        on = entry.get("on", "both")
        if on not in SIDES:
            raise DistillError(f"scorer {kind}: on={on!r}; choose a, b or both")
        scorer = SCORERS[kind](entry)
        clash = seen & set(scorer.keys)
        if clash:
            raise DistillError(f"scorer {kind}: score names {sorted(clash)} are used by another scorer")
        seen |= set(scorer.keys)
        rules = list(scorer.rules())
        for key, bounds in (entry.get("keep") or {}).items():
            if key not in scorer.keys:
                raise DistillError(f"keep rule {key!r}: scorer {kind} scores only {list(scorer.keys)}")
            low, high = bounds
            rules.append(
                KeepRule(key, None if low is None else float(low), None if high is None else float(high))
            )
        built.append((scorer, SIDES[on], rules))
    if not built:
        raise FieldError(
            (),
            "no scorer given: use {face_detector}, {scorer} MODEL or {spec} FILE",
            refs=("face_detector", "scorer", "spec"),
        )
    return built


def decide(
    scores: dict[str, float], checks: list[tuple[tuple[str, ...], list[KeepRule]]]
) -> tuple[bool, str | None]:
    """Apply every rule on every side; a reason failing on some sides only names them, e.g. "no face (B)"."""
    reasons: list[str] = []
    for sides, rules in checks:
        for rule in rules:
            failed: dict[str, list[str]] = {}
            for side in sides:
                side_scores = {k.split(".", 1)[1]: v for k, v in scores.items() if k.startswith(side + ".")}
                why = rule.check(side_scores)
                if why:
                    failed.setdefault(why, []).append(side.upper())
            for why, where in failed.items():
                reasons.append(why if len(where) == len(sides) else f"{why} ({'+'.join(where)})")
    return (not reasons, "; ".join(reasons) or None)


def filter_dataset(
    root: str | os.PathLike, spec: list[dict[str, Any]], batch_size: int = 32, progress: bool = True
) -> dict[str, Any]:
    """Score and mark every pair of ``root``; returns the report (also written to ``root``)."""
    from tqdm import tqdm

    root = Path(root)
    read_metadata(root)
    if pending_files(root):
        raise DistillError(
            f"{root}: has unfinished batches in pending/ (generation running or interrupted); "
            "finish it with the same `distill pairs` command first"
        )
    rows = read_manifest(root)
    if not rows:
        raise DistillError(f"{root}: the manifest has no pairs")
    built = build(spec)
    needed = sorted({s for _, sides, _ in built for s in sides})
    out: list[PairRecord] = []
    with tqdm(total=len(rows), unit="pair", desc="filter", disable=not progress) as bar:
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            scores: list[dict[str, float]] = [{} for _ in batch]
            for side in needed:
                try:
                    images = np.stack([load_image(root / getattr(r, side)) for r in batch])
                except (OSError, ValueError) as e:
                    raise DistillError(
                        f"{root}: cannot read an image of seeds {batch[0].seed}-{batch[-1].seed} "
                        f"({e}); re-run `distill pairs` to repair the dataset"
                    ) from e
                for scorer, sides, _ in built:
                    if side in sides:
                        for row_scores, s in zip(scores, scorer.score(images), strict=True):
                            row_scores.update({f"{side}.{k}": v for k, v in s.items()})
            for r, s in zip(batch, scores, strict=True):
                keep, reason = decide(s, [(sides, rules) for _, sides, rules in built])
                out.append(replace(r, keep=keep, reason=reason, scores=dict(sorted(s.items()))))
            bar.update(len(batch))
    write_manifest(root, out)
    rules = {rule.key: rule for _, _, rs in built for rule in rs}
    return write_report(root, out, spec, rules)


@dataclass
class FilterOptions:
    """What ``distill filter`` does: one field per flag. The scorers come from ``spec`` (a JSON file), the face
    detector and one ONNX model (``scorer``, its outputs named by ``attributes``, ``NAME=INDEX``: the spelling of
    ``distill evaluate``'s and ``direction fit``'s scorer options); ``keep`` rules (``NAME=LOW:HIGH``) apply to
    those names."""

    dataset: str | os.PathLike
    spec: str | os.PathLike | None = None
    on: str = "both"
    face_detector: bool = False
    face_min_neighbors: int = 5
    face_min_size: float = 0.1
    face_min_confidence: float | None = None
    scorer: str | os.PathLike | None = None
    attributes: list[str] | None = None  # NAME=INDEX of the scorer's first output; None: score=0
    input_size: int | tuple[int, int] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    activation: str = "none"
    keep: list[str] | None = None
    batch_size: int = 32
    progress: bool = True

    def __post_init__(self) -> None:
        if self.on not in SIDES:
            raise FieldError("on", f"{self.on!r}: choose a, b or both")


def scorer_spec(opts: FilterOptions) -> list[dict[str, Any]]:
    """The options (and the ``spec`` file) as a list of scorer specs."""
    spec: list[dict[str, Any]] = []
    if opts.spec:
        path = Path(opts.spec)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            spec = list(data["scorers"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise FieldError("spec", f'{path}: expected JSON {{"scorers": [...]}} ({e})') from e
    if opts.face_detector:
        spec.append(
            {
                "type": "face",
                "on": opts.on,
                "min_neighbors": opts.face_min_neighbors,
                "min_size": opts.face_min_size,
                "min_confidence": opts.face_min_confidence,
            }
        )
    if opts.scorer:
        outputs = {}
        for item in opts.attributes or ["score=0"]:
            name, _, idx = item.partition("=")
            if not name or not idx.lstrip("-").isdigit():
                raise FieldError(
                    "attributes", f"{item!r}: expected NAME=INDEX (the scorer output's column), e.g. age=0"
                )
            outputs[name] = int(idx)
        spec.append(
            {
                "type": "onnx",
                "path": str(opts.scorer),
                "input_size": opts.input_size,
                "mean": _as_list(opts.mean),
                "std": _as_list(opts.std),
                "outputs": outputs,
                "activation": opts.activation,
                "on": opts.on,
            }
        )
    for text in opts.keep or []:
        rule = parse_keep(text)
        owners = [e for e in spec if e["type"] == "onnx" and rule.key in e.get("outputs", {})]
        if not owners:
            raise FieldError("keep", f"{text}: no {{attributes}} is named {rule.key!r}", refs=("attributes",))
        owners[0].setdefault("keep", {})[rule.key] = [rule.low, rule.high]
    return spec


def run_filter(opts: FilterOptions) -> dict[str, Any]:
    """Score and mark every pair of ``opts.dataset``; returns the report (also written there)."""
    return filter_dataset(opts.dataset, scorer_spec(opts), batch_size=opts.batch_size, progress=opts.progress)
