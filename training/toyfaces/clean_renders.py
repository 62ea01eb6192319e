"""Clean renders against the renderer's true edit: the toy domain's test on "real photographs".

A student distilled from a teacher only ever sees the teacher's samples. Users send photographs. In
the toy domain the renderer's clean pictures play the photographs, and the renderer can also draw
the *true* edited face, which no real photograph ever gives: the same face with its age raised by
the teacher's own edit strength (the mean age change the teacher's edit makes, read by the attribute
model). So each path (student variants, the legacy projection, and the do-nothing identity) is
measured against ground truth on pictures no teacher drew:

- PSNR / SSIM of the output against the truly aged render, beside the identity (input unchanged);
- the gain over the identity (mean of the per-image PSNR difference) and the share of images where
  the path beats it;
- with the attribute model: the share of images on which it sees the age rise by at least half of
  the rise it reads between the input and the truly aged render, and the preservation of the others.

Seeds are drawn from :data:`CLEAN_SEED0` (above every teacher, pair and evaluation seed), z exactly
as the teacher's seeds (``z_from_seeds``), adults only (age >= ADULT_AGE), as the student's domain.

The renderer's age scale ends at 1 (about 85 years). A face older than ``1 - change`` cannot be drawn
aged by the full change: its "true edit" is capped, and near the top it is the input itself (the
identity then scores 50+ dB, and any real edit loses 20 dB against it). Such faces have no true edit
of the teacher's strength, so the headline set holds the *ageable* adults (ADULT_AGE <= age <= 1 -
change) and the capped top of the scale is measured apart (:func:`capped_render_set`), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core.errors import DistillError
from training.toyfaces.renderer import FaceParams, params_from_z, render

CLEAN_SEED0 = 3_000_000
DEMO_SEED0 = 4_000_000  # the demo page's clean renders: apart from the evaluated ones


@dataclass
class CleanSet:
    """Adult clean renders (inputs), the renderer's truly aged version of each (targets), and their seeds."""

    seeds: list[int]
    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    ages: list[float]
    age_change: float
    aligned: bool
    params: list[FaceParams] = field(
        default_factory=list
    )  # each input's face, for masks such as hair_region's


def adult_faces(
    num: int,
    z_dim: int,
    aligned: bool = True,
    seed0: int = CLEAN_SEED0,
    min_age: float | None = None,
    max_age: float = 1.0,
) -> list[tuple[int, FaceParams]]:
    """The first ``num`` (seed, face) pairs from ``seed0`` on whose age is in [min_age (default ADULT_AGE), max_age]
    (``min_age`` exclusive when it is given, so a capped set starts just above an ageable one)."""
    from training.directions import z_from_seeds
    from training.toyfaces.attributes import ADULT_AGE

    if min_age is not None and min_age >= max_age:
        raise DistillError(f"no face has an age in ({min_age:.3f}, {max_age:.3f}]")
    faces, seed = [], seed0
    while len(faces) < num:
        p = params_from_z(z_from_seeds([seed], z_dim)[0].double().numpy(), aligned)
        if (p.age >= ADULT_AGE if min_age is None else p.age > min_age) and p.age <= max_age:
            faces.append((seed, p))
        seed += 1
    return faces


def hair_mask(params: FaceParams, size: int, levels: int = 2) -> np.ndarray:
    """[size, size] bool: the pixels the renderer paints with the hair colour (hair and brows, edges included).

    Found by drawing the face twice with the darkest and the lightest hair colour: only those pixels differ
    (even fully white hair keeps 8% of the colour)."""
    dark = render(replace(params, hair_color=0.0), size).astype(np.int16)
    light = render(replace(params, hair_color=1.0), size).astype(np.int16)
    return np.abs(dark - light).max(-1) > levels


HAIR_INSET = 2  # pixels off the hair's outline: the renderer's anti-aliased edges are about this wide


def hair_region(params: FaceParams, age_change: float, size: int) -> np.ndarray:
    """[size, size] bool: the inside of the hair that an age edit whitens: hair on the face and on its aged version
    (age + ``age_change``, capped at 1), :data:`HAIR_INSET` pixels off its outline. There a clean picture is nearly
    flat, so speckle shows; on the outline and the receding hairline the Laplacian measures the drawing's own edges
    (the true edit scores ~7 inside, ~1000 with them)."""
    from training.artifacts import erode

    aged = replace(params, age=min(1.0, params.age + age_change))
    return erode(hair_mask(params, size) & hair_mask(aged, size), HAIR_INSET)


def clean_render_set(
    num: int,
    size: int,
    z_dim: int,
    age_change: float,
    aligned: bool = True,
    seed0: int = CLEAN_SEED0,
    capped: bool = False,
) -> CleanSet:
    """``num`` ageable adults (age <= 1 - ``age_change``) from ``seed0`` on: their render and their render with age +
    ``age_change``; with ``capped``, adults above that instead, their truth capped at age 1."""
    from training.toyfaces.attributes import ADULT_AGE

    if num < 1:
        raise DistillError(f"--clean-renders {num}: need at least one face")
    if not 0 < age_change < 1 - ADULT_AGE:
        raise DistillError(
            f"clean renders: age change {age_change:+.3f} is not a rise in (0, {1 - ADULT_AGE:g}) (an adult "
            "must be able to age by it); the edit does not age faces, or pass --clean-age-change"
        )
    top = 1.0 - age_change
    faces = (
        adult_faces(num, z_dim, aligned, seed0, min_age=top)
        if capped
        else adult_faces(num, z_dim, aligned, seed0, max_age=top)
    )
    out = CleanSet([], [], [], [], age_change, aligned)
    for seed, p in faces:
        out.seeds.append(seed)
        out.ages.append(p.age)
        out.params.append(p)
        out.inputs.append(render(p, size))
        out.targets.append(render(replace(p, age=min(1.0, p.age + age_change)), size))
    return out
