"""A request's edit strengths: the ``strength`` and ``edits`` fields checked against the model's manifest.

Every model lists its edits (:attr:`model_zoo.schema.EntryManifest.edits`; a one-edit entry's is derived from
its ``edit``, ``direction`` and ``strength`` records), each with the relative strengths it was trained on
(:func:`edit_range`: a fixed-strength edit's range is its one strength, ``[default, default]``) and a default.
A request sets them by name, ``edits={"age": 1.0, "smile": -0.5}`` (a JSON object); the edits it leaves out get
their default (0, the edit off, for every edit of a K-edit student as ``distill export`` writes it). A one-edit
dial also takes ``strength`` (``edits={"age": 0.5}`` is ``strength=0.5``); a student of K edits takes ``edits``
only. The answer is the strength vector the model runs at: float32 [K] in the manifest's order, or None for a
model without a strength input.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from app.errors import ServiceError
from app.schemas import EditInfo
from model_zoo.schema import EditSpec, EntryManifest


def edit_range(edit: EditSpec) -> tuple[float, float]:
    """The relative strengths ``edit`` was trained on: its range, or ``[default, default]`` at one fixed strength."""
    return edit.range if edit.range is not None else (edit.default, edit.default)


def describe_edits(spec: EntryManifest) -> list[EditInfo]:
    """``/models``' ``edits``: each edit's name, range and default, in the strength vector's order."""
    return [EditInfo(attribute=e.attribute, range=edit_range(e), default=e.default) for e in spec.edits]


def parse_edits(text: str) -> dict[str, float]:
    """The ``edits`` field: a JSON object of edit names to finite numbers; 422 ``invalid_edits`` otherwise."""
    try:
        value: Any = json.loads(text)
    except ValueError as e:
        raise ServiceError(422, "invalid_edits", f'edits is not JSON ({e}); e.g. {{"age": 1.0}}') from None
    numbers = {str(k): _finite(v) for k, v in value.items()} if isinstance(value, dict) else None
    if numbers is None or any(v is None for v in numbers.values()):
        raise ServiceError(
            422,
            "invalid_edits",
            f'edits must be a JSON object of edit names to numbers, e.g. {{"age": 1.0}}; got {text[:200]!r}',
        )
    return {k: v for k, v in numbers.items() if v is not None}


def _finite(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (true, a string, NaN, an integer beyond float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _allowed(spec: EntryManifest) -> dict[str, list[float]]:
    return {e.attribute: list(edit_range(e)) for e in spec.edits if e.attribute is not None}


def _ranges_text(allowed: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} [{lo:g}, {hi:g}]" for name, (lo, hi) in allowed.items()) or "none"


def resolve_edits(
    spec: EntryManifest, model: str, strength: float | None = None, edits: dict[str, float] | None = None
) -> np.ndarray | None:
    """The strengths [K] model ``model`` (manifest ``spec``) runs at for a request's ``strength`` and ``edits``
    (:func:`parse_edits`'; None: not given); None for a model without a strength input. 422 as the module
    docstring says: ``strength_and_edits``, ``strength_unsupported``, ``strength_out_of_range``,
    ``unknown_edit``, ``edit_out_of_range``."""
    conditional = spec.strength is not None or len(spec.edits) > 1
    if strength is not None and edits is not None:
        raise ServiceError(422, "strength_and_edits", "give strength or edits, not both", model=model)
    if strength is not None:
        return _resolve_strength(spec, model, strength)
    values = edits or {}
    allowed = _allowed(spec)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ServiceError(
            422,
            "unknown_edit",
            f"model {model!r} has no edit {unknown[0]!r}; its edits: {_ranges_text(allowed)}",
            allowed=allowed,
            model=model,
        )
    vector = []
    for e in spec.edits:
        value = values.get(e.attribute, e.default) if e.attribute is not None else e.default
        low, high = edit_range(e)
        if not low <= value <= high:
            raise ServiceError(
                422,
                "edit_out_of_range",
                f"edit {e.attribute!r} {value:g} is outside model {model!r}'s trained range [{low:g}, {high:g}] "
                f"(its edits: {_ranges_text(allowed)})",
                edit=e.attribute,
                range=[low, high],
                allowed=allowed,
                model=model,
            )
        vector.append(value)
    return np.array(vector, np.float32) if conditional else None


def _resolve_strength(spec: EntryManifest, model: str, strength: float) -> np.ndarray:
    """``strength`` of a one-edit dial as its vector [1]; 422 outside the trained range, and on any other model."""
    if len(spec.edits) > 1:
        raise ServiceError(
            422,
            "strength_unsupported",
            f"model {model!r} is a student of {len(spec.edits)} edits; set them by name with edits, e.g. "
            f'edits={{"{spec.edits[0].attribute}": 1.0}} (its edits: {_ranges_text(_allowed(spec))})',
            allowed=_allowed(spec),
            model=model,
        )
    if spec.strength is None:
        raise ServiceError(
            422,
            "strength_unsupported",
            f"model {model!r} edits at one fixed strength (alpha {spec.edit.alpha}); "
            "drop the strength field or choose a strength-conditioned model (see /models)",
            model=model,
        )
    low, high = spec.strength.range
    if not low <= strength <= high:
        raise ServiceError(
            422,
            "strength_out_of_range",
            f"strength {strength:g} is outside model {model!r}'s trained range [{low:g}, {high:g}] "
            f"(relative: 1.0 = alpha {spec.edit.alpha})",
            range=[low, high],
            model=model,
        )
    return np.array([strength], np.float32)


def edit_headers(spec: EntryManifest, strengths: np.ndarray | None) -> dict[str, str]:
    """What the answer says of the edit: ``X-Strength`` for a one-edit dial, ``X-Edits`` (``age=1,smile=-0.5``)
    for a student of K edits; nothing for a fixed-strength model."""
    if strengths is None:
        return {}
    if len(spec.edits) > 1:
        names = [e.attribute or f"edit{k}" for k, e in enumerate(spec.edits)]
        return {"X-Edits": ",".join(f"{n}={v:g}" for n, v in zip(names, strengths.tolist(), strict=True))}
    return {"X-Strength": f"{float(strengths[0]):g}"}
