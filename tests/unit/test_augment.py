"""Paired student augmentation: deterministic per (seed, epoch, index), shared ops keep the pair aligned,
input-only ops leave the target alone, bad specs are one-line errors; the trainer stores and enforces it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import DistillError
from tests.pipeline_helpers import make_pair_dataset, tiny_options
from training.augment import Augmentation, parse_augmentation, shift_image
from training.dataset import load_split
from training.trainer import CHECKPOINT, TrainOptions, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return a, 255 - a


def test_parse_round_trip_and_errors():
    aug = parse_augmentation("shift=3,sharpness=0.5,jpeg=0.25")
    assert aug == Augmentation(shift=3, sharpness=0.5, jpeg=0.25) and aug.active
    assert parse_augmentation(str(aug)) == aug
    assert parse_augmentation("none") == Augmentation() == parse_augmentation(None)
    assert not Augmentation().active and str(Augmentation()) == "none"
    for bad in ("shift", "blur=0.5", "noise=2", "shift=-1", "jpeg=x"):
        with pytest.raises(DistillError, match="--augment"):
            parse_augmentation(bad)


def test_shift_moves_both_images_the_same_way():
    a, b = pair()
    sa = shift_image(a, 2, -1)
    assert np.array_equal(sa[0:31, 2:], a[1:32, :30])  # content moved right by 2 and up by 1
    aug = Augmentation(shift=3)
    for k in range(5):
        x, y = aug.apply(a, b, np.random.default_rng(k))
        assert np.array_equal(y, 255 - x)  # the target is still the edit of the (shifted) input


def test_input_only_corruptions_leave_the_target_and_shared_ones_keep_the_edit():
    a, b = pair()
    x, y = Augmentation(noise=1.0, jpeg=1.0).apply(a, b, np.random.default_rng(0))
    assert np.array_equal(y, b) and not np.array_equal(x, a)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    x, y = Augmentation(sharpness=1.0).apply(smooth, smooth.copy(), np.random.default_rng(3))
    assert np.array_equal(x, y)  # the same filter on both


def test_dataset_items_are_a_pure_function_of_seed_epoch_index(tmp_path: Path):
    root = make_pair_dataset(tmp_path / "pairs", n=6)
    aug = parse_augmentation("shift=2,noise=1")
    ds = load_split(root, 4, val_fraction=0.2, flip=False, augment=aug).train
    plain = load_split(root, 4, val_fraction=0.2, flip=False).train
    first, again, other = ds[(1, 0)], ds[(1, 0)], ds[(2, 0)]
    assert (first["a"] == again["a"]).all() and (first["b"] == again["b"]).all()
    assert not (first["a"] == other["a"]).all()
    assert not (first["a"] == plain[(1, 0)]["a"]).all()
    held_out = load_split(root, 4, val_fraction=0.2, flip=False, augment=aug).val
    assert (held_out[(1, 0)]["a"] == held_out[(2, 0)]["a"]).all()  # never augmented


def test_trainer_stores_the_spec_and_refuses_another_on_resume(tmp_path: Path):
    root = make_pair_dataset(tmp_path / "pairs", n=8)
    out = tmp_path / "run"
    train(tiny_options(root, out, max_steps=2, augment="noise=0.5,shift=1"), epochs=1)
    assert load_checkpoint(out / CHECKPOINT)["options"]["augment"] == "shift=1,noise=0.5"
    with pytest.raises(DistillError, match="augment"):
        train(tiny_options(root, out, max_steps=3, augment="shift=2"), resume=True, epochs=1)
    result = train(tiny_options(root, out, max_steps=3, preset=None, batch_size=None), resume=True, epochs=1)
    assert result.progress.global_step == 3
    with pytest.raises(DistillError, match="--augment"):
        TrainOptions(dataset=str(root), out=str(out), augment="blur=1")
