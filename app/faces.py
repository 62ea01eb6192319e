"""The aligned path for models that expect FFHQ-aligned faces (manifest ``input.alignment: ffhq``).

The upload is decoded at full resolution and turned upright; faces are found (dlib, detection on a copy at most
640 pixels on its longer side, landmarks at full resolution) and each edited face is cropped the FFHQ way at the
model's native size. Stages, timed separately: ``detect`` (faces and landmarks), ``align`` (the crops) and,
on the way out, ``pasteback``. The response size is chosen by ``size``:

- ``native``: the largest face's aligned edit, at the model's size;
- ``crop``: the same, at the aligned square's size in the upload;
- ``original``: the whole upload with the edited face(s) warped back through a feathered face mask:
  nothing outside the faces changes.

``faces=largest`` edits the largest face; ``faces=all`` edits every face (``size=original`` only: the other
sizes return one face). No face found is a 422 ``no_face``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from app.errors import ServiceError
from app.timing import StageTimer
from editing.alignment.landmarks import Face, FaceFinder, FacesMode, pick

if (
    TYPE_CHECKING
):  # the warps need OpenCV (the `faces` extra): imported where used, so serving without it works
    from editing.alignment.ffhq import Alignment


@dataclass(frozen=True)
class AlignedUpload:
    """An upload prepared for an FFHQ model: the upright photo, the faces to edit and their aligned crops."""

    photo: np.ndarray  # uint8 [H, W, 3], the upright upload at full resolution
    faces: list[Face]  # the edited faces, largest first
    crops: list[np.ndarray]  # their FFHQ crops at the model's native size
    alignments: list[Alignment]

    def boxes_header(self) -> str:
        """``left,top,right,bottom`` of every edited face (upright upload pixels), ``;``-separated."""
        return ";".join(",".join(str(round(v)) for v in face.box) for face in self.faces)


def check_request(size: str, faces: FacesMode) -> None:
    """Refuse ``faces=all`` with a size that returns a single face (before any work is done)."""
    if faces == "all" and size != "original":
        raise ServiceError(
            422,
            "faces_all_needs_original",
            f"faces=all edits every face of the photo and returns the whole photo; ask for "
            f"size=original (size={size} returns one aligned face: use faces=largest)",
        )


def align_upload(
    photo: Image.Image, finder: FaceFinder, native: int, faces: FacesMode, timer: StageTimer
) -> AlignedUpload:
    """Find and align the faces of an upright upload (timed ``detect`` and ``align``); 422 ``no_face`` if none."""
    pixels = np.asarray(photo)
    with timer.stage("detect"):
        found = finder.find(pixels)
    if not found:
        raise ServiceError(
            422,
            "no_face",
            f"no face found in the {photo.width}x{photo.height} upload (dlib's frontal face detector, on a copy at "
            f"most {finder.detect_max_side} pixels on its longer side: faces from about 80 pixels there); send a photo with a "
            "frontal face, larger in the frame, or use align=off",
        )
    chosen = pick(found, faces)
    from editing.alignment.ffhq import align_face

    with timer.stage("align"):
        aligned = [align_face(pixels, face.landmarks, native, resampling="opencv") for face in chosen]
    return AlignedUpload(pixels, chosen, [a for a, _ in aligned], [t for _, t in aligned])


def restore(edited: list[np.ndarray], upload: AlignedUpload, size: str, timer: StageTimer) -> np.ndarray:
    """Apply the ``size`` policy to the edited crops (uint8 [S, S, 3], one per face, in ``upload.faces`` order)."""
    if size == "native":
        return edited[0]
    if size == "crop":
        with timer.stage("postprocess"):
            side = max(1, round(upload.alignments[0].side))
            return np.asarray(Image.fromarray(edited[0]).resize((side, side), Image.Resampling.BICUBIC))
    from editing.alignment.pasteback import paste_faces

    with timer.stage("pasteback"):
        return paste_faces(upload.photo, edited, upload.alignments, [face.landmarks for face in upload.faces])
