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
sizes return one face), at most ``DISTILL_MAX_FACES``. No face found is a 422 ``no_face``. The photos on this
path are held whole until their answer is encoded: :class:`PixelBudget` bounds their pixels in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from app.errors import ServiceError
from app.imaging import check_output_size
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


class PixelBudget:
    """The pixels of face-path photos a worker holds in memory at once (``DISTILL_FACE_PIXELS``).

    The face path keeps the whole photo from decoding to the encoded answer (the paste-back needs it), so its
    memory grows with the pixels in flight, not the requests. A request whose photo does not fit what is left
    is a 503 ``face_path_busy`` with ``Retry-After`` before anything is decoded; the budget is at least
    ``DISTILL_MAX_PIXELS``, so the retry passes once the requests before it are answered. Taken and given back
    on the event loop only, so the check and the taking are one step.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, pixels: int) -> int:
        """Hold ``pixels`` (given back with :meth:`give`); 503 ``face_path_busy`` when they do not fit."""
        if self.held + pixels > self.limit:
            raise ServiceError(
                503,
                "face_path_busy",
                f"{self.held} pixels of photos are on the face path; this {pixels}-pixel photo would pass the "
                f"limit of {self.limit} (DISTILL_FACE_PIXELS); retry shortly",
                headers={"Retry-After": "1"},
            )
        self.held += pixels
        return pixels

    def give(self, pixels: int) -> None:
        self.held -= pixels


def check_crop(upload: AlignedUpload, fmt: str, max_pixels: int) -> None:
    """Refuse (422 ``output_too_large``) a ``size=crop`` answer larger than an accepted upload (the aligned square
    may reach outside the photo) or than the ``fmt`` encoder can write, before inference."""
    side = max(1, round(upload.alignments[0].side))
    if side * side > max_pixels:
        raise ServiceError(
            422,
            "output_too_large",
            f"the face's aligned square is {side}x{side} = {side * side} pixels in the upload, beyond the "
            f"limit of {max_pixels} (DISTILL_MAX_PIXELS); ask for size=native or size=original",
            limit=max_pixels,
        )
    check_output_size(side, side, fmt)


def align_upload(
    photo: Image.Image,
    finder: FaceFinder,
    native: int,
    faces: FacesMode,
    timer: StageTimer,
    max_faces: int,
) -> AlignedUpload:
    """Find and align the faces of an upright upload (timed ``detect`` and ``align``); 422 ``no_face`` if none,
    422 ``too_many_faces`` beyond ``max_faces`` with ``faces=all`` (before any crop is computed)."""
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
    if len(chosen) > max_faces:
        raise ServiceError(
            422,
            "too_many_faces",
            f"{len(chosen)} faces found; faces=all edits at most {max_faces} (DISTILL_MAX_FACES, no more than "
            "DISTILL_QUEUE_SIZE): "
            "send a photo with fewer faces, or use faces=largest",
            faces=len(chosen),
            limit=max_faces,
        )
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
