"""Face detection with the Haar cascade that ships inside OpenCV's wheel (``cv2.data``).

Rejects images with no confident frontal face: the local stand-in for the face API that the seed
system used, which also dropped pictures with artifacts (no face could be read in them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import DistillError
from training.scoring import KeepRule, Scorer

CASCADE = "haarcascade_frontalface_default.xml"


class HaarFaceDetector(Scorer):
    """Scores ``face_count``, ``face_confidence`` (best cascade level weight, 0 without a face) and
    ``face_size`` (largest face's side / image side). Keeps images with at least one face whose
    confidence is ``>= min_confidence``."""

    name = "face"

    def __init__(
        self,
        cascade: str | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: float = 0.1,
        min_confidence: float | None = None,
    ) -> None:
        import cv2

        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / CASCADE
        self.detector = cv2.CascadeClassifier(str(path))
        if self.detector.empty():
            raise DistillError(f"{path}: not a readable OpenCV Haar cascade XML")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.min_confidence = min_confidence

    @property
    def keys(self) -> tuple[str, ...]:
        return ("face_count", "face_confidence", "face_size")

    def _detect(self, image: np.ndarray) -> dict[str, float]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))
        side = min(gray.shape)
        min_px = max(int(self.min_size * side), 1)
        rects, _, weights = self.detector.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px),
            outputRejectLevels=True,
        )
        if len(rects) == 0:
            return {"face_count": 0.0, "face_confidence": 0.0, "face_size": 0.0}
        return {
            "face_count": float(len(rects)),
            "face_confidence": float(np.max(weights)),
            "face_size": float(max(max(w, h) for _, _, w, h in rects) / side),
        }

    def score(self, images: np.ndarray) -> list[dict[str, float]]:
        assert images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, images.shape
        return [self._detect(im) for im in images]

    def rules(self) -> list[KeepRule]:
        rules = [KeepRule("face_count", low=1, reason_low="no face")]
        if self.min_confidence is not None:
            rules.append(KeepRule("face_confidence", low=self.min_confidence, reason_low="no confident face"))
        return rules
