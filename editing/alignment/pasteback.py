"""Paste an edited aligned face back into its photo: the inverse warp, blended through a feathered face mask.

The mask is drawn in the aligned crop, where every face sits the same way: the convex hull of the jaw line
and of the eyebrows raised to the hairline, grown by a margin, with a smooth ramp (smoothstep over the
distance to the hull) instead of an edge, and kept off the crop's border. Warped into the photo with the
face, it weights the blend ``photo + (edited - photo) * mask``: pixels where it is 0 are the photo's own,
bit for bit, and the soft ramp leaves no seam.
"""

from __future__ import annotations

import cv2
import numpy as np

from editing.alignment.ffhq import Alignment

MARGIN = 0.02  # of the crop's side: the mask stays 1 this far outside the landmark hull
FEATHER = 0.08  # of the crop's side: then falls to 0 over this distance
FOREHEAD = 0.8  # eyebrows raised by this fraction of the eye-to-mouth distance, to cover the forehead
BAND_ROWS = 256  # rows blended at a time: the float32 work stays a few MB whatever the face's size


def face_mask(aligned_landmarks: np.ndarray, size: int) -> np.ndarray:
    """float32 [size, size] in [0, 1]: the face region of an aligned crop, with a feathered edge."""
    lm = np.asarray(aligned_landmarks, dtype=np.float64)
    eyes = lm[36:48].mean(axis=0)
    mouth = (lm[48] + lm[54]) / 2
    lift = FOREHEAD * float(np.hypot(*(mouth - eyes)))
    up = (eyes - mouth) / max(float(np.hypot(*(mouth - eyes))), 1e-6)
    outline = np.concatenate([lm[0:17], lm[17:27] + up * lift])
    hull = cv2.convexHull(np.rint(outline).astype(np.int32))
    inside = np.full((size, size), 255, np.uint8)
    cv2.fillConvexPoly(inside, hull, 0)
    distance = cv2.distanceTransform(
        inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )  # 0 on the hull, grows outside
    margin, feather = MARGIN * size, max(FEATHER * size, 1.0)
    t = np.clip((margin + feather - distance) / feather, 0.0, 1.0)
    mask = t * t * (3.0 - 2.0 * t)
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)  # 0 on the outermost pixels
    keep_off_border = np.clip(edge / feather, 0.0, 1.0)
    return (mask * keep_off_border[None, :] * keep_off_border[:, None]).astype(np.float32)


def paste_back(photo: np.ndarray, face: np.ndarray, alignment: Alignment, mask: np.ndarray) -> np.ndarray:
    """``photo`` (uint8 [H, W, 3]) with ``face`` (the edited crop, uint8 [S, S, 3]) warped back through ``mask`` ([S, S]).

    Only the quad's bounding box is touched; outside the warped mask the photo is returned unchanged.
    """
    out = photo.copy()
    paste_into(out, face, alignment, mask)
    return out


def paste_into(photo: np.ndarray, face: np.ndarray, alignment: Alignment, mask: np.ndarray) -> None:
    """:func:`paste_back` in place, band by band of ``BAND_ROWS`` rows: the float32 blend never spans the whole
    face region (a face of a 40-megapixel photo would take gigabytes), and bands the mask misses are skipped."""
    size = face.shape[0]
    if face.shape[:2] != (size, size) or mask.shape != (size, size):
        raise ValueError(f"face {face.shape} and mask {mask.shape} must be the same square size")
    h, w = photo.shape[:2]
    lo = np.floor(alignment.quad.min(axis=0)).astype(int) - 1
    hi = np.ceil(alignment.quad.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for top in range(y0, y1, BAND_ROWS):
        bottom = min(top + BAND_ROWS, y1)
        # the band's pixel (x, y) -> aligned pixel: aligned_from_source with the band's offset folded in
        m = alignment.aligned_from_source(size)
        m[:, 2] += m[:, :2] @ np.array([x0, top], dtype=np.float64)
        band_size = (x1 - x0, bottom - top)
        weight = cv2.warpAffine(
            mask, m, band_size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
        )
        if not weight.any():
            continue
        warped = cv2.warpAffine(face, m, band_size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        region = photo[top:bottom, x0:x1]
        blended = region.astype(np.float32)
        blended += (warped.astype(np.float32) - blended) * weight[..., None]
        np.rint(blended, out=blended)
        region[...] = np.clip(blended, 0, 255).astype(np.uint8)


def paste_faces(
    photo: np.ndarray, faces: list[np.ndarray], alignments: list[Alignment], landmarks: list[np.ndarray]
) -> np.ndarray:
    """Paste several edited crops back, each through the mask built from its landmarks (source pixels [68, 2]),
    into one copy of ``photo``."""
    out = photo.copy()
    for face, alignment, lm in zip(faces, alignments, landmarks, strict=True):
        size = face.shape[0]
        paste_into(out, face, alignment, face_mask(alignment.to_aligned(lm, size), size))
    return out
