"""The record of one photograph edited through the service's face path, shared by the service's offline entry
points (app.offline) and the photo evaluation (training.evaluate.photos), which must not import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from editing.alignment.ffhq import Alignment
from editing.alignment.landmarks import Face


@dataclass
class EditedPhoto:
    """One photo through the face path: the upright input, its faces, their aligned crops and alignments, the
    student's edited crops and its output pasted back; or the service's error (``code: message``)."""

    file: Path
    photo: np.ndarray | None = None
    faces: list[Face] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    alignments: list[Alignment] = field(default_factory=list)
    output: np.ndarray | None = None
    edited: list[np.ndarray] = field(default_factory=list)
    error: str | None = None


# (model name, model-zoo root, photo files) -> (every photo edited as `distill serve` would, the engine's description)
PhotoEditor = Callable[[str, Path, list[Path]], tuple[list[EditedPhoto], str]]
