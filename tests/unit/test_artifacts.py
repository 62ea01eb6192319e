"""Artifact figures on pictures whose answer is known: flat, one fixed bright pixel, moving noise, masks; the hair mask."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from training.artifacts import (
    artifact_block,
    artifact_figures,
    blemish_map,
    busiest_window,
    edit_region,
    erode,
    error_map,
    heat_map,
    hf_energy,
    laplacian,
    peak,
    ratio_of,
    upscale,
    zoom_rows,
)
from training.toyfaces.clean_renders import adult_faces, hair_mask, hair_region
from training.toyfaces.renderer import render

N, H, W = 9, 12, 10


def flat(value: int = 100) -> np.ndarray:
    return np.full((N, H, W, 3), value, np.uint8)


def test_a_flat_picture_scores_zero():
    x = flat()
    assert np.all(laplacian(x) == 0) and np.all(hf_energy(x) == 0)
    f = artifact_figures(x, x)
    assert f.hf_energy == 0 and f.blemish_peak == 0 and f.error_peak == 0


def test_laplacian_and_hf_energy_of_one_pixel():
    x = flat()
    x[:, 5, 4] = 110  # +10 on every channel: Laplacian -40 there, +10 at its 4 neighbours
    lap = laplacian(x)
    assert lap[0, 5, 4, 0] == -40 and lap[0, 4, 4, 1] == 10 and lap[0, 5, 5, 2] == 10 and lap[0, 0, 0, 0] == 0
    assert hf_energy(x) == pytest.approx(np.full(N, (40**2 + 4 * 10**2) / (H * W)))
    mask = np.zeros((H, W), bool)
    mask[5, 4] = True
    assert hf_energy(x, mask) == pytest.approx(
        np.full(N, 1600.0)
    )  # the mask restricts the mean to its pixels
    far = np.zeros((H, W), bool)
    far[0, 0] = True
    assert np.all(hf_energy(x, far) == 0)
    assert np.all(np.isnan(hf_energy(x, np.zeros((H, W), bool))))  # an empty mask has no figure


def test_blemish_map_finds_a_fixed_pixel_and_the_median_removes_moving_noise():
    rng = np.random.default_rng(0)
    x = flat()
    for i in range(N):  # noise that moves: a bright speck at a different place on every picture
        x[i, rng.integers(H), rng.integers(W)] = 255
    moving = blemish_map(x)
    assert moving.max() == 0  # no pixel is a speck (or its neighbour) on half the pictures
    x[:, 7, 3] = 200  # a blemish at a fixed place on every picture
    value, at = peak(blemish_map(x))
    assert at == (7, 3) and value == pytest.approx(400.0)
    mask = np.ones((H, W), bool)
    mask[7, 3] = False
    assert peak(blemish_map(x), mask)[1] != (7, 3)  # outside the mask, the blemish is not looked for
    f = artifact_figures(x, flat())
    assert f.blemish_at == (7, 3) and f.error_at == (7, 3) and f.error_peak == pytest.approx(100.0)
    assert error_map(x, flat())[0, 0] == 0


def test_edit_region_and_the_block():
    inputs, edits = flat(), flat()
    edits[:, :4] = 140  # the edit brightens the top 4 rows by 40 levels
    edits[:, 6, 6] = 105  # a change below the threshold is not part of the region
    region = edit_region(inputs, edits)
    assert region.shape == (N, H, W) and region[:, :4].all() and not region[:, 4:].any()
    speckled = edits.copy()
    speckled[:, 1, 5] = 0  # the student adds a fixed dark pixel inside the region
    block = artifact_block(edits, {"identity": inputs, "student_fp32": speckled}, region, "teacher")
    t, s = block["paths"]["teacher"], block["paths"]["student_fp32"]
    assert block["n"] == N and block["region_share"] == pytest.approx(4 / H, abs=1e-4)
    assert (
        s["blemish_at"] == [1, 5] and s["blemish_peak"] > t["blemish_peak"] > 0
    )  # the teacher's own edge at row 3/4
    assert (
        s["hf_energy_region"] > t["hf_energy_region"]
        and block["ratio_to_reference"]["student_fp32"]["hf_energy_region"] > 1
    )
    assert block["paths"]["identity"]["hf_energy"] == 0 and t["error_peak"] == 0
    assert ratio_of(1.0, 0.0) is None and ratio_of(None, 1.0) is None and ratio_of(3.0, 2.0) == 1.5


def test_pictures():
    assert heat_map(np.array([[0.0, 16.0, 32.0, 99.0]])).tolist() == [
        [[0, 0, 0], [255, 128, 0], [255, 255, 255], [255, 255, 255]]
    ]
    assert upscale(np.arange(4).reshape(2, 2), 2).tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 3, 3],
        [2, 2, 3, 3],
    ]
    region = np.zeros((4, 16, 16), bool)
    region[:, 2:5, 9:12] = True  # the edit acts on a 3 x 3 patch
    assert busiest_window(region) == (2, 9, 3, 3)
    region[:, 1:15, 1:15] = True  # a big region: the crop is at most half the picture a side
    assert busiest_window(region)[2:] == (8, 8)
    rows = zoom_rows([flat(), flat(200)], (2, 5, 3, 3), faces=2)
    assert len(rows) == 2 and rows[0][0].shape == (12, 12, 3) and rows[1][1][0, 0, 0] == 200


def test_hair_mask_covers_the_hair_not_the_background():
    ((_, p),) = adult_faces(1, 32)
    size = 64
    m = hair_mask(p, size)
    bg = (
        np.abs(
            render(replace(p, background=0.0), size).astype(int)
            - render(replace(p, background=1.0), size).astype(int)
        ).max(-1)
        > 2
    )
    assert (
        0.02 < m.mean() < 0.6 and m[: size // 2].sum() > m[size // 2 :].sum()
    )  # the hair sits on top of the head
    assert (
        m & bg
    ).sum() < 0.1 * m.sum()  # only the anti-aliased outline (a pixel wide) touches the background
    recolored = render(replace(p, hair_color=1 - p.hair_color), size).astype(int) - render(p, size).astype(
        int
    )
    assert not (np.abs(recolored).max(-1)[~m] > 2).any()  # a hair colour change stays inside the mask
    inside = hair_region(p, 0.3, size)
    assert inside.any() and not (inside & ~m).any() and not (inside & bg).any()  # off the outline
    assert (
        erode(np.ones((1, 5, 5), bool), 2)[0].tolist()
        == [[False] * 5] * 2 + [[False, False, True, False, False]] + [[False] * 5] * 2
    )
