"""The one pixel conversion (editing.pixels) and its torch face (editing.images): every uint8 value round-trips,
and the float values are exactly the students' training normalisation."""

from __future__ import annotations

import numpy as np
import torch

from editing.images import from_uint8, to_uint8
from editing.pixels import from_output, to_input

ALL = np.arange(256, dtype=np.uint8)


def _picture(values: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3]: every value in every channel (each channel a different rotation of the values)."""
    return np.stack([np.roll(values, k) for k in range(3)], axis=-1).reshape(16, 16, 3)


def test_every_value_round_trips_through_its_inverse():
    pixels = _picture(ALL)
    x = to_input(pixels)
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(from_output(x[0]), pixels)
    np.testing.assert_array_equal(from_output(x), pixels[None])


def test_the_values_are_the_training_normalisation_exactly():
    """x / 127.5 - 1 in float32, as torch computes it: 0 -> -1, 255 -> 1, bit for bit at every value."""
    x = to_input(ALL.reshape(16, 16, 1))[0, 0].ravel()
    expected = torch.from_numpy(ALL).float().div(127.5).sub(1.0).numpy()
    np.testing.assert_array_equal(x, expected)
    assert x[0] == -1.0 and x[255] == 1.0


def test_the_torch_functions_are_the_same_conversion():
    pixels = _picture(ALL)
    batch = np.stack([pixels, pixels[::-1]])
    np.testing.assert_array_equal(from_uint8(pixels).numpy(), to_input(pixels))
    np.testing.assert_array_equal(from_uint8(batch).numpy(), to_input(batch))
    np.testing.assert_array_equal(to_uint8(from_uint8(batch)), batch)
    np.testing.assert_array_equal(to_uint8(from_uint8(pixels)[0]), pixels)


def test_outputs_outside_the_range_are_clipped():
    y = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], np.float32).reshape(1, 5, 1).repeat(3, 0)
    assert from_output(y)[:, 0, 0].tolist() == [0, 0, 128, 255, 255]
