"""The strength-conditioned student: identity at strength 0, checkpoints, a few training steps."""

from __future__ import annotations

import pytest
import torch

from core.errors import DistillError
from networks.pix2pixhd import build_generator, get_preset, load_generator, save_generator
from networks.pix2pixhd.conditional import ConditionalGenerator, is_conditional

CONDITIONS = ("scale", "plane", "modulation")


def tiny(condition: str) -> torch.nn.Module:
    torch.manual_seed(0)
    G = build_generator(get_preset("tiny", residual=True, condition=condition))
    with torch.no_grad():  # a "trained" generator: no zero layers left
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return G.eval()


@pytest.mark.parametrize("condition", CONDITIONS)
def test_strength_zero_is_the_identity_and_strength_matters(condition):
    G = tiny(condition)
    assert isinstance(G, ConditionalGenerator) and is_conditional(G)
    x = torch.rand(3, 3, 16, 16) * 1.8 - 0.9
    with torch.no_grad():
        assert torch.equal(G(x, torch.zeros(3)), x)
        a, b = G(x, torch.tensor([1.0, 0.5, -1.0])), G(x, torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1]) and not torch.allclose(a[2], b[2])


@pytest.mark.parametrize("condition", ("plane", "modulation"))
def test_checkpoint_round_trip(condition, tmp_path):
    G = tiny(condition)
    path = save_generator(G, tmp_path / "g.pt")
    H = load_generator(path)
    assert H.config.condition == condition and H.config.input_nc == 3
    x, s = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([0.7, -1.2])
    with torch.no_grad():
        assert torch.equal(G(x, s), H(x, s))


def test_condition_needs_the_residual_global_generator():
    with pytest.raises(DistillError, match="residual"):
        get_preset("tiny", condition="plane")
    with pytest.raises(DistillError, match="condition must be one of"):
        get_preset("tiny", residual=True, condition="film")


def test_trainer_reads_strengths(strength_pairs, tmp_path):
    from training.trainer import TrainOptions, train

    out = tmp_path / "run"
    opts = TrainOptions(
        dataset=str(strength_pairs),
        out=str(out),
        preset="tiny",
        batch_size=2,
        max_steps=3,
        workers=0,
        progress=False,
        device="cpu",
        sample_every=2,
    )
    result = train(opts, {"residual": True, "condition": "plane", "lambda_l1": 10.0})
    assert result.status in ("max_steps", "finished")
    G = load_generator(out / "checkpoints" / "latest.pt")
    assert G.config.condition == "plane"
    with pytest.raises(DistillError, match="--resume"):  # the architecture cannot change on resume
        train(opts.__class__(**{**opts.__dict__, "max_steps": 4}), {"condition": "modulation"}, resume=True)


def test_conditional_student_refuses_fixed_strength_pairs(pair_teacher, tmp_path):
    from training.pairs import generate_pairs
    from training.trainer import TrainOptions, train

    g, d = pair_teacher
    data = tmp_path / "fixed"
    generate_pairs(g, d, data, alpha=1.0, num=4, device="cpu", progress=False)
    opts = TrainOptions(
        dataset=str(data),
        out=str(tmp_path / "run"),
        preset="tiny",
        batch_size=2,
        max_steps=1,
        workers=0,
        progress=False,
        device="cpu",
    )
    with pytest.raises(DistillError, match="alpha-range"):
        train(opts, {"residual": True, "condition": "modulation"})
