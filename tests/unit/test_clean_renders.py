"""The clean-render sets: ageable adults for the headline figure, the capped top of the age scale apart."""

from dataclasses import replace

import numpy as np
import pytest

from core.errors import DistillError
from training.toyfaces.attributes import ADULT_AGE
from training.toyfaces.clean_renders import CLEAN_SEED0, adult_faces, clean_render_set
from training.toyfaces.renderer import render

CHANGE = 0.3


def test_ageable_adults_can_be_aged_by_the_full_change():
    s = clean_render_set(6, 32, 32, CHANGE)
    assert len(s.inputs) == len(s.targets) == len(s.seeds) == 6 and s.seeds[0] >= CLEAN_SEED0
    assert all(ADULT_AGE <= a <= 1 - CHANGE for a in s.ages)
    assert all(
        np.abs(x.astype(int) - t.astype(int)).mean() > 1 for x, t in zip(s.inputs, s.targets, strict=True)
    )


def test_the_top_of_the_scale_is_its_own_set_with_a_capped_truth():
    ageable, top = clean_render_set(6, 32, 32, CHANGE), clean_render_set(6, 32, 32, CHANGE, capped=True)
    assert all(a > 1 - CHANGE for a in top.ages) and not set(ageable.seeds) & set(top.seeds)
    ((seed, face),) = adult_faces(1, 32, seed0=top.seeds[0], min_age=1 - CHANGE)
    assert seed == top.seeds[0]
    np.testing.assert_array_equal(top.targets[0], render(replace(face, age=1.0), 32))


def test_a_change_no_adult_can_take_is_refused():
    with pytest.raises(DistillError, match="not a rise"):
        clean_render_set(2, 32, 32, 1 - ADULT_AGE)
    with pytest.raises(DistillError, match="no face has an age"):
        adult_faces(1, 32, min_age=0.9, max_age=0.5)
