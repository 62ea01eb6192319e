"""Faces and their 68 landmarks (iBUG 300-W layout), behind a small interface so another model can be plugged in.

A :class:`FaceDetector` returns boxes, a :class:`Landmarker` returns 68 points for a box, and :func:`find_faces`
runs the pair the way photos need it: detection on a downscaled copy of a large photo (speed), landmarks on the
full-resolution picture (accuracy), largest face first. The dlib implementation uses the HOG frontal face
detector compiled into the ``dlib-bin`` wheel and the 68-point shape predictor shipped by the
``face_recognition_models`` package (the predictor the FFHQ recipe used); nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import queue
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from core.errors import DistillError

NUM_LANDMARKS = 68
DETECT_MAX_SIDE = 640  # detection runs on a copy whose longer side is at most this many pixels
DETECT_THRESHOLD = 0.3  # minimum detector score (see DlibDetector)
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in pixels
FacesMode = Literal["largest", "all"]  # which faces of a photo to edit or crop


@dataclass(frozen=True)
class Face:
    """One detected face: its box and score from the detector, its 68 landmarks (x, y) in source pixels."""

    box: Box
    score: float
    landmarks: np.ndarray  # float64 [68, 2]

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)


class FaceDetector(Protocol):
    """Finds face boxes in a uint8 RGB picture [H, W, 3]: a list of (box, score), any order."""

    def detect(self, image: np.ndarray) -> list[tuple[Box, float]]: ...


class Landmarker(Protocol):
    """The 68 landmarks (x, y) of the face in ``box`` of a uint8 RGB picture, as float64 [68, 2]."""

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray: ...


class DlibDetector:
    """dlib's HOG frontal face detector (compiled into dlib; finds faces from about 80 pixels wide).

    ``threshold`` is on the detector's score; dlib's own default, 0, lets through faint false positives on
    photos (a score of 0.04 on the astronaut's patterned suit, where her face scores 1.5).
    A dlib detector must not be used by two threads at once and takes ~0.2 s to build, so idle detectors
    wait in a pool: one per concurrent call, built once.
    """

    def __init__(self, upsample: int = 0, threshold: float = DETECT_THRESHOLD) -> None:
        self.upsample = upsample
        self.threshold = threshold
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def detect(self, image: np.ndarray) -> list[tuple[Box, float]]:
        import dlib

        try:
            detector = self._idle.get_nowait()
        except queue.Empty:
            detector = dlib.get_frontal_face_detector()
        try:
            rects, scores, _ = detector.run(np.ascontiguousarray(image), self.upsample, self.threshold)
        finally:
            self._idle.put(detector)
        return [
            ((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]


def model_file(name: str, what: str) -> Path:
    """The model file ``models/NAME`` inside the installed ``face_recognition_models`` package (``what`` names it
    in the error).

    Found without importing the package: its ``__init__`` needs ``pkg_resources``, which current setuptools
    no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DistillError(
            "the face_recognition_models package is not installed: install the `faces` extra "
            "(pip install 'stylegan2-distill[faces]'; docker: --build-arg EXTRAS=faces)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise DistillError(f"{path}: {what} is missing; reinstall face_recognition_models")
    return path


def predictor_path() -> Path:
    """dlib's 68-point landmark model, from ``face_recognition_models``."""
    return model_file(PREDICTOR_FILE, "the 68-point landmark model")


class DlibLandmarker:
    """dlib's 68-point shape predictor (an ensemble of regression trees; about 3 ms a face)."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        import dlib

        self.model_path = Path(model_path) if model_path is not None else predictor_path()
        self._predictor = dlib.shape_predictor(str(self.model_path))
        self._lock = threading.Lock()

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        import dlib

        left, top, right, bottom = (round(v) for v in box)
        rect = dlib.rectangle(left, top, right - 1, bottom - 1)
        with self._lock:
            shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


@dataclass
class FaceFinder:
    """A detector and a landmarker used together by :func:`find_faces`."""

    detector: FaceDetector
    landmarker: Landmarker
    detect_max_side: int = DETECT_MAX_SIDE

    def find(self, image: np.ndarray) -> list[Face]:
        return find_faces(image, self.detector, self.landmarker, self.detect_max_side)


@lru_cache(maxsize=1)
def default_finder() -> FaceFinder:
    """The dlib detector and 68-point landmarker, loaded once per process (the model file is 100 MB); a
    DistillError naming the `faces` extra when this install lacks dlib or OpenCV (the warps, imported where used)."""
    for module in ("dlib", "cv2"):
        if importlib.util.find_spec(module) is None:
            raise DistillError(
                f"FFHQ face alignment needs the module {module!r}, which this install lacks: "
                "install the `faces` extra (pip install 'stylegan2-distill[faces]'; "
                "docker: --build-arg EXTRAS=faces)"
            )
    return FaceFinder(DlibDetector(), DlibLandmarker())


def _downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk so its longer side is at most ``max_side`` and the factor applied (1.0 when untouched)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    return small, size[0] / w


def find_faces(
    image: np.ndarray, detector: FaceDetector, landmarker: Landmarker, detect_max_side: int = DETECT_MAX_SIDE
) -> list[Face]:
    """Faces in a uint8 RGB picture [H, W, 3], largest box first, with landmarks at full resolution.

    Detection runs on a copy at most ``detect_max_side`` pixels on its longer side; when that finds nothing
    in a larger photo, once more at twice that size (smaller faces, at four times the cost).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"find_faces needs uint8 RGB [H, W, 3], got {image.dtype} {image.shape}")
    found: list[tuple[Box, float]] = []
    scale = 1.0
    for side in (detect_max_side, 2 * detect_max_side):
        small, scale = _downscaled(image, side)
        found = detector.detect(small)
        if found or scale == 1.0:
            break
    faces = []
    for (left, top, right, bottom), score in found:
        box = (left / scale, top / scale, right / scale, bottom / scale)
        points = landmarker.landmarks(image, box)
        if points.shape != (NUM_LANDMARKS, 2):
            raise ValueError(
                f"{type(landmarker).__name__} returned landmarks of shape {points.shape}, "
                f"not ({NUM_LANDMARKS}, 2): the FFHQ alignment needs the 68-point layout"
            )
        faces.append(Face(box, score, points))
    return sorted(faces, key=lambda f: f.area, reverse=True)


def pick(faces: list[Face], mode: FacesMode) -> list[Face]:
    """The faces to work on: the largest only (``faces`` come largest first) or all of them."""
    return faces[:1] if mode == "largest" else faces
