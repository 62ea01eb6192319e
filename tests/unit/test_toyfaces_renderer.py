"""The toy-face renderer: deterministic pixels per seed, labels that match what is drawn, the z map."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from core.errors import DistillError
from distill.cli import main
from training.toyfaces.renderer import (
    ATTRIBUTES,
    NUM_PARAMS,
    POSE,
    FaceParams,
    params_from_z,
    region_boxes,
    render,
    render_seed,
    sample_params,
    sample_z,
)

# a plain middle-aged face: black hair, closed neutral mouth, no glasses
BASE = FaceParams(age=0.3, smile=0.3, hair_color=0.0, hair_style=0.5, skin_tone=0.4, glasses=0.0)


def grey_white(im: np.ndarray) -> int:
    """Pixels that are bright and colourless (grey/white hair, eye whites, teeth)."""
    x = im.astype(int)
    return int(((x.min(-1) > 150) & (x.max(-1) - x.min(-1) < 25)).sum())


def test_same_seed_same_pixels_and_different_seeds_differ():
    a, la = render_seed(7)
    b, lb = render_seed(7)
    c, _ = render_seed(8)
    assert a.dtype == np.uint8 and a.shape == (128, 128, 3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_any_size_and_labels_in_range():
    for size in (64, 100, 256):
        assert render(sample_params(3), size).shape == (size, size, 3)
    labels = np.stack([sample_params(s).labels() for s in range(200)])
    assert labels.shape == (200, len(ATTRIBUTES))
    assert labels.min() >= 0 and labels.max() <= 1
    # attributes are spread over [0, 1] (normal CDF of a normalised normal)
    assert np.all(labels.mean(0) > 0.35) and np.all(labels.mean(0) < 0.65)
    assert np.all(labels.std(0) > 0.2)


def test_z_map_matches_seed_sampling_and_ignores_the_norm_of_z():
    z = sample_z(11)
    assert sample_params(11) == params_from_z(z)
    # StyleGAN2 normalises z, so G cannot see its norm: neither does the renderer
    assert np.allclose(params_from_z(3.0 * z).to_array(), params_from_z(z).to_array(), atol=1e-7)
    with pytest.raises(DistillError):
        params_from_z(np.ones(NUM_PARAMS - 1))


def test_old_faces_have_grey_white_hair_and_wrinkles():
    young = render(replace(BASE, age=0.1))
    old = render(replace(BASE, age=0.95))
    assert grey_white(old) - grey_white(young) > 800  # black hair turned white
    # the background (corners) is untouched by age
    assert np.array_equal(young[:6, :6], old[:6, :6])
    # ageing cues cover a large part of the face, not a few pixels
    diff = np.abs(old.astype(int) - young.astype(int)).sum(-1) > 40
    assert diff.mean() > 0.15


def test_smile_opens_a_large_mouth_with_teeth():
    flat = render(replace(BASE, smile=0.0))
    laugh = render(replace(BASE, smile=1.0))
    mouth = (slice(70, 110), slice(34, 94))
    dark = lambda im: int((im[mouth].astype(int).max(-1) < 110).sum())  # noqa: E731
    assert dark(laugh) - dark(flat) > 60  # the open mouth
    assert grey_white(laugh[mouth]) - grey_white(flat[mouth]) > 40  # the teeth
    assert np.array_equal(flat[:40], laugh[:40])  # nothing above the eyes changes


def test_glasses_appear_above_the_threshold_and_thicken():
    none = render(replace(BASE, glasses=0.1))
    assert np.array_equal(none, render(replace(BASE, glasses=0.45)))
    thin, thick = render(replace(BASE, glasses=0.55)), render(replace(BASE, glasses=1.0))
    changed = lambda im: int((np.abs(im.astype(int) - none.astype(int)).sum(-1) > 60).sum())  # noqa: E731
    assert changed(thick) > changed(thin) > 150


def test_every_attribute_changes_the_picture():
    for name in ATTRIBUTES:
        lo, hi = (0.5, 1.0) if name == "glasses" else (0.0, 1.0)
        a, b = render(replace(BASE, **{name: lo})), render(replace(BASE, **{name: hi}))
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0, name


def test_bad_params_are_a_clear_error():
    with pytest.raises(DistillError, match="age"):
        FaceParams(age=1.5)
    with pytest.raises(DistillError):
        render(BASE, size=8)


def test_cli_render_writes_images_and_labels(tmp_path, capsys):
    assert main(["toyfaces", "render", "--out", str(tmp_path), "--seeds", "0-2,9", "--grid"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1, 2, 9]
    assert rows[3]["age"] == pytest.approx(float(sample_params(9).age), abs=1e-6)
    assert (tmp_path / "00000009.png").is_file() and (tmp_path / "grid.png").is_file()
    assert main(["toyfaces", "render", "--out", str(tmp_path), "--seeds", "a-b"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_the_domain_is_aligned_by_default():
    z = sample_z(5)
    aligned, free = params_from_z(z), params_from_z(z, aligned=False)
    assert all(getattr(aligned, f) == 0.5 for f in POSE) and any(getattr(free, f) != 0.5 for f in POSE)
    assert aligned == free.aligned() and aligned.labels().tolist() == free.labels().tolist()
    # aligned faces put the eyes at the same pixels: the eye region varies far less across faces than unaligned
    eyes = region_boxes(128)["eyes"]
    y0, y1, x0, x1 = eyes
    assert 0 <= y0 < y1 <= 128 and 0 <= x0 < x1 <= 128

    def spread(aligned_flag: bool) -> float:
        ims = np.stack(
            [render(sample_params(s, aligned=aligned_flag), 128)[y0:y1, x0:x1] for s in range(12)]
        ).astype(float)
        dark = (ims.mean(-1) < 60).mean(0)  # where pupils/frames fall, over faces
        return float((dark > 0.5).mean())

    assert spread(True) > spread(False)  # pupils land on the same pixels in most aligned faces


def test_best_fit_blur_finds_the_blur_of_a_blurred_render():
    from PIL import Image, ImageFilter

    from training.toyfaces.teacher_report import best_fit_blur, region_psnr

    renders = np.stack([render(sample_params(s), 64) for s in range(4)])
    blurred = np.stack(
        [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(2.0))) for im in renders]
    )
    assert best_fit_blur(blurred, renders)["sigma"] == 2.0
    assert best_fit_blur(renders, renders)["sigma"] == 0.0
    regions = region_psnr(blurred, renders, region_boxes(64))
    assert set(regions) == {"eyes", "mouth"} and all(10 < r["mean"] < 40 for r in regions.values())
