"""Face landmarks, the FFHQ alignment and the paste-back, checked on a real portrait (scikit-image's astronaut).

Alignment is checked by construction: an aligned face is placed into a larger canvas under a known rotation,
scale and shift, found and aligned again, and compared with the original crop.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from editing.alignment.ffhq import Alignment, _warp, align_face, ffhq_quad
from editing.alignment.landmarks import Face, default_finder, find_faces, predictor_path
from editing.alignment.pasteback import face_mask, paste_back, paste_faces

data = pytest.importorskip(
    "skimage.data", reason="scikit-image ships the test portraits (pip install -e .[dev])"
)

SIZE = 256


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def finder():
    return default_finder()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def portrait_face(finder, portrait) -> Face:
    faces = finder.find(portrait)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def aligned(portrait, portrait_face) -> tuple[np.ndarray, Alignment, np.ndarray]:
    """The portrait's FFHQ crop, its alignment, and the landmarks in the crop."""
    crop, alignment = align_face(portrait, portrait_face.landmarks, SIZE)
    return crop, alignment, alignment.to_aligned(portrait_face.landmarks)


def synthetic_landmarks(angle_deg: float = 0.0, centre=(50.0, 50.0)) -> np.ndarray:
    """68 points with eyes at (40, 50) and (60, 50) and mouth corners at (42, 75), (58, 75), turned about ``centre``."""
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48], lm[48], lm[54] = (40, 50), (60, 50), (42, 75), (58, 75)
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (lm - centre) @ rot.T + centre


def place(crop: np.ndarray, angle: float, scale: float, canvas_wh: tuple[int, int], offset=(0.0, 0.0)):
    """``crop`` turned, scaled and centred (plus ``offset``) on a grey canvas; the 2x3 crop -> canvas matrix."""
    c = (crop.shape[0] - 1) / 2
    m = cv2.getRotationMatrix2D((c, c), angle, scale)
    m[:, 2] += np.array([(canvas_wh[0] - 1) / 2 - c + offset[0], (canvas_wh[1] - 1) / 2 - c + offset[1]])
    canvas = cv2.warpAffine(
        crop, m, canvas_wh, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=(120, 120, 120)
    )
    return canvas, m


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


# ---------------------------------------------------------------------------- the quad and the transform


def test_quad_of_an_upright_face():
    quad = ffhq_quad(synthetic_landmarks())
    # eye_to_eye (20, 0), eye_to_mouth (0, 25): x = (45, 0) (1.8 * 25 beats 2 * 20), centre (50, 52.5)
    np.testing.assert_allclose(quad, [[5, 7.5], [5, 97.5], [95, 97.5], [95, 7.5]], atol=1e-9)


def test_quad_turns_with_the_face():
    upright = ffhq_quad(synthetic_landmarks())
    turned = ffhq_quad(synthetic_landmarks(30.0))
    t = math.radians(30.0)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    np.testing.assert_allclose(turned, (upright - 50) @ rot.T + 50, atol=1e-9)


def test_quad_needs_68_points():
    with pytest.raises(ValueError, match="68 landmarks"):
        ffhq_quad(np.zeros((5, 2)))


def test_transform_maps_the_quad_onto_the_crop_and_back():
    alignment = Alignment(quad=ffhq_quad(synthetic_landmarks(25.0)), size=64)
    corners = alignment.to_aligned(alignment.quad)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]], atol=1e-9)
    points = np.random.default_rng(0).uniform(0, 100, (10, 2))
    np.testing.assert_allclose(alignment.to_source(alignment.to_aligned(points)), points, atol=1e-9)
    np.testing.assert_allclose(alignment.to_aligned(alignment.quad, 128), corners * 2 + 0.5, atol=1e-9)
    assert alignment.side == pytest.approx(90.0)


def test_pillow_warp_is_the_recipes_quad_transform(portrait):
    quad = ffhq_quad(synthetic_landmarks(17.0, centre=(50, 60)) * 3 + 60)
    quad_transform = Image.fromarray(portrait).transform(
        (200, 200), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR
    )
    np.testing.assert_array_equal(_warp(portrait, quad, 200, "pillow"), np.asarray(quad_transform))


def test_opencv_resampling_is_close_to_the_recipes(portrait, portrait_face, aligned):
    fast, alignment = align_face(portrait, portrait_face.landmarks, SIZE, resampling="opencv")
    np.testing.assert_array_equal(alignment.quad, aligned[1].quad)
    assert psnr(fast, aligned[0]) > 42


def test_align_face_checks_its_input(portrait, portrait_face):
    with pytest.raises(ValueError, match="uint8 RGB"):
        align_face(portrait[..., 0], portrait_face.landmarks, SIZE)


# ---------------------------------------------------------------------------- landmarks


def test_predictor_ships_in_the_package():
    path = predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 90_000_000


def test_the_portrait_face_and_its_landmarks(portrait_face):
    left, top, right, bottom = portrait_face.box
    assert 150 < left < right < 300 and 60 < top < bottom < 200 and portrait_face.score > 0.5
    lm = portrait_face.landmarks
    assert lm.shape == (68, 2)
    eye_l, eye_r, mouth = lm[36:42].mean(0), lm[42:48].mean(0), (lm[48] + lm[54]) / 2
    assert eye_l[0] < eye_r[0] and mouth[1] > eye_l[1] + 20  # image left eye on the left, mouth below


def test_no_face_in_a_picture_without_one(finder):
    assert finder.find(data.coffee()) == []


class RecordingDetector:
    """Returns one box at fixed relative coordinates of the picture it sees; records the sizes it saw."""

    def __init__(self, found_from: int = 0) -> None:
        self.seen: list[tuple[int, int]] = []
        self.found_from = found_from

    def detect(self, image):
        self.seen.append(image.shape[:2])
        if len(self.seen) <= self.found_from:
            return []
        h, w = image.shape[:2]
        return [((0.25 * w, 0.25 * h, 0.5 * w, 0.5 * h), 1.0)]


class RecordingLandmarker:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int], tuple]] = []

    def landmarks(self, image, box):
        self.calls.append((image.shape[:2], box))
        return np.zeros((68, 2))


def test_detection_on_a_downscaled_copy_landmarks_at_full_resolution():
    image = np.zeros((1000, 2000, 3), np.uint8)
    detector, landmarker = RecordingDetector(), RecordingLandmarker()
    faces = find_faces(image, detector, landmarker, detect_max_side=500)
    assert detector.seen == [(250, 500)]
    assert landmarker.calls == [((1000, 2000), (500.0, 250.0, 1000.0, 500.0))]
    assert faces[0].box == (500.0, 250.0, 1000.0, 500.0)


def test_detection_retries_at_twice_the_size_when_nothing_is_found():
    image = np.zeros((1000, 2000, 3), np.uint8)
    detector = RecordingDetector(found_from=1)
    faces = find_faces(image, detector, RecordingLandmarker(), detect_max_side=500)
    assert detector.seen == [(250, 500), (500, 1000)] and len(faces) == 1
    small = RecordingDetector(found_from=5)
    assert find_faces(np.zeros((100, 200, 3), np.uint8), small, RecordingLandmarker(), 500) == []
    assert small.seen == [(100, 200)]  # a small picture is searched once, at its own size


def test_landmarks_at_full_resolution_of_a_large_photo(finder, portrait, portrait_face):
    large = np.asarray(Image.fromarray(portrait).resize((2048, 2048), Image.LANCZOS))
    faces = finder.find(large)
    assert len(faces) == 1
    error = np.linalg.norm(faces[0].landmarks - (portrait_face.landmarks + 0.5) * 4 + 0.5, axis=1)
    assert error.mean() < 6  # pixels of the 2048 picture: about 1.5 of the 512 one


# ---------------------------------------------------------------------------- alignment by construction


CASES = {  # angle (degrees), scale, canvas (W, H): the last one takes the recipe's shrink step
    "turned, enlarged": (15.0, 1.5, (800, 600)),
    "turned the other way, reduced": (-20.0, 0.9, (640, 480)),
    "upright, large": (0.0, 2.5, (1024, 768)),
    "shrink step": (8.0, 4.6, (1500, 1300)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_realigning_a_placed_face_gives_the_crop_back(finder, aligned, case):
    crop, _, crop_landmarks = aligned
    angle, scale, canvas_wh = CASES[case]
    canvas, m = place(crop, angle, scale, canvas_wh)
    centre = slice(SIZE // 8, SIZE - SIZE // 8)

    # exact landmarks (the crop's, carried through the placement): only resampling differs
    again, alignment = align_face(canvas, apply(m, crop_landmarks), SIZE)
    np.testing.assert_allclose(
        alignment.quad,
        apply(m, np.array([[-0.5, -0.5], [-0.5, SIZE - 0.5], [SIZE - 0.5, SIZE - 0.5], [SIZE - 0.5, -0.5]])),
        atol=1e-6,
    )
    assert psnr(again[centre, centre], crop[centre, centre]) > 40

    # detected landmarks: the whole chain
    faces = finder.find(canvas)
    assert len(faces) == 1
    again, alignment = align_face(canvas, faces[0].landmarks, SIZE)
    error = np.linalg.norm(alignment.to_aligned(faces[0].landmarks) - crop_landmarks, axis=1)
    assert error.mean() < 2.5 and error.max() < 6, (error.mean(), error.max())
    assert psnr(again[centre, centre], crop[centre, centre]) > 25


def test_a_face_at_the_border_is_padded_not_cut(aligned):
    crop, _, crop_landmarks = aligned
    canvas, m = place(
        crop, 0.0, 1.0, (400, 400), offset=(-200, -160)
    )  # the crop's top-left is off the canvas
    x0, y0 = -int(round(m[0, 2])), -int(round(m[1, 2]))  # where the canvas starts in the crop
    assert x0 > 64 and y0 > 64
    again, _ = align_face(canvas, apply(m, crop_landmarks), SIZE)
    # the recipe blurs the padding and a band a third of its width into the picture (padding: the part of
    # the quad off the canvas plus a border of 0.1 * side)
    bx, by = (int((v + 0.1 * SIZE) / 3) + 2 for v in (x0, y0))
    inside = (slice(y0 + by, SIZE - 2), slice(x0 + bx, SIZE - 2))  # (the last rows: the grey canvas)
    assert psnr(again[inside], crop[inside]) > 40  # what the canvas holds comes back
    corner = again[:16, :16].astype(np.float64)
    assert (
        corner.mean() > 60 and corner.std(axis=(0, 1)).max() < 8
    )  # the padding: blurred to the median, not black


# ---------------------------------------------------------------------------- paste-back


def quad_region(alignment: Alignment, shape: tuple[int, int]) -> np.ndarray:
    region = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(region, np.rint(alignment.quad).astype(np.int32), 1)
    return region.astype(bool)


def test_mask_covers_the_face_with_a_soft_edge(aligned):
    _, _, crop_landmarks = aligned
    mask = face_mask(crop_landmarks, SIZE)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    hull = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(crop_landmarks).astype(np.int32)), 1)
    assert mask[hull.astype(bool)].min() == 1.0  # every landmark-bounded pixel is fully the edit's
    assert (
        (mask[0] == 0).all()
        and (mask[-1] == 0).all()
        and (mask[:, 0] == 0).all()
        and (mask[:, -1] == 0).all()
    )
    ramp = (mask > 0) & (mask < 1)
    assert ramp.sum() > 0.1 * (mask == 1).sum()  # a feathered edge, not a cut-out
    assert np.abs(np.diff(mask, axis=0)).max() < 0.1 and np.abs(np.diff(mask, axis=1)).max() < 0.1


def test_paste_back_of_the_unedited_face_returns_the_photo(portrait, portrait_face, aligned):
    crop, alignment, crop_landmarks = aligned
    result = paste_faces(portrait, [crop], [alignment], [portrait_face.landmarks])
    weight = (
        paste_back(
            np.zeros_like(portrait), np.full_like(crop, 255), alignment, face_mask(crop_landmarks, SIZE)
        )[..., 0]
        / 255.0
    )
    assert (weight > 0.99).sum() > 5000
    outside = weight == 0
    np.testing.assert_array_equal(result[outside], portrait[outside])
    assert (
        result[~quad_region(alignment, portrait.shape[:2])]
        == portrait[~quad_region(alignment, portrait.shape[:2])]
    ).all()
    assert psnr(result[weight > 0], portrait[weight > 0]) > 33


def test_paste_back_of_an_edit_changes_only_the_face_without_a_seam(portrait, portrait_face, aligned):
    crop, alignment, _ = aligned
    base = np.minimum(crop, 215)  # so that the edit, +40, never clips
    result = paste_faces(portrait, [base + 40], [alignment], [portrait_face.landmarks])
    region = quad_region(alignment, portrait.shape[:2])
    assert (result[~region] == portrait[~region]).all()
    eyes = np.rint(portrait_face.landmarks[36:48].mean(0)).astype(int)
    assert (
        result[eyes[1], eyes[0]].astype(int) - portrait[eyes[1], eyes[0]]
    ).mean() > 30  # the face took the edit
    # no seam: the edit's share of the result (edited minus unedited paste) ramps up over the feathered edge;
    # a hard paste would step by 40 between neighbours
    edit = result.astype(np.float64) - paste_faces(portrait, [base], [alignment], [portrait_face.landmarks])
    assert edit.max() == 40 and edit.min() == 0
    assert np.abs(np.diff(edit, axis=0)).max() <= 6 and np.abs(np.diff(edit, axis=1)).max() <= 6


def test_two_faces_are_found_and_both_pasted_back(finder, portrait):
    face = portrait[40:300, 110:340]
    photo = np.full((320, 640, 3), 200, np.uint8)
    photo[30:290, 30:260] = face
    photo[30:290, 380:610] = face[:, ::-1]
    faces = finder.find(photo)
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area
    crops, alignments = zip(*(align_face(photo, f.landmarks, 128) for f in faces), strict=True)
    inverted = [255 - c for c in crops]
    result = paste_faces(photo, inverted, list(alignments), [f.landmarks for f in faces])
    for f in faces:
        x, y = np.rint(f.landmarks[30]).astype(int)  # the nose tip
        assert np.abs(result[y, x].astype(int) - photo[y, x]).max() > 60
    assert (result[:, 315:325] == photo[:, 315:325]).all()  # between the faces nothing changed


def test_a_landmarker_with_another_layout_is_refused():
    class FivePoints(RecordingLandmarker):
        def landmarks(self, image, box):
            return np.zeros((5, 2))

    with pytest.raises(ValueError, match=r"shape \(5, 2\), not \(68, 2\)"):
        find_faces(np.zeros((100, 100, 3), np.uint8), RecordingDetector(), FivePoints())


def test_paste_back_of_a_large_face_works_in_bands():
    """The blend is float32 band by band: the peak is the output copy and a few bands, not 4 floats a subpixel."""
    import tracemalloc

    from editing.alignment.ffhq import Alignment

    photo = np.zeros((2000, 2000, 3), np.uint8)
    quad = np.array([[100, 100], [100, 1900], [1900, 1900], [1900, 100]], np.float64)
    face, mask = np.full((64, 64, 3), 200, np.uint8), np.ones((64, 64), np.float32)
    tracemalloc.start()
    try:
        out = paste_back(photo, face, Alignment(quad, 64), mask)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (out[1000, 1000] == 200).all() and (out[50, 50] == 0).all()
    assert peak < 4 * photo.nbytes, f"peak {peak / photo.nbytes:.1f}x the photo's bytes"
