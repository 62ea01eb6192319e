"""The residual student (output = clamp(input + G(input))): starts as the identity, learns, is stored in the
checkpoint's config, exports to ONNX with parity, and a resumed run cannot switch it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import DistillError
from distill.cli import main
from editing.images import from_uint8, load_image
from engines.ort import cpu_session
from networks.pix2pixhd import build_generator, get_preset, load_generator
from networks.pix2pixhd.networks import init_weights
from tests.pipeline_helpers import make_pair_dataset, tiny_options
from training.export import export_onnx
from training.metrics import psnr
from training.trainer import CHECKPOINT, train
from training.variants import run_session

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("netG", ["global", "local"])
def test_a_new_residual_generator_is_the_identity(netG):
    torch.manual_seed(0)
    G = build_generator(get_preset("tiny", netG=netG, residual=True)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(x), x)
        init_weights(G)  # any weights: the output is the input plus a bounded change, kept in [-1, 1]
        y = G(x)
    assert not torch.equal(y, x) and y.abs().max() <= 1
    plain = build_generator(get_preset("tiny", netG=netG))
    assert plain.state_dict().keys() == G.state_dict().keys()  # same tensors: NVIDIA checkpoints still load


def test_residual_needs_as_many_output_as_input_channels():
    with pytest.raises(DistillError, match="input_nc == output_nc"):
        build_generator(get_preset("tiny", residual=True, output_nc=1))


def test_residual_onnx_matches_torch(tmp_path):
    torch.manual_seed(1)
    G = build_generator(get_preset("tiny", residual=True)).eval()
    init_weights(G)
    path = export_onnx(G, tmp_path / "m.onnx", (32, 32))
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        ref = G(x).numpy()
    assert np.abs(run_session(cpu_session(path), x.numpy(), batch=2) - ref).max() <= 1e-4


def test_training_a_residual_student_improves_on_the_identity_and_is_stored(tmp_path: Path):
    root = make_pair_dataset(tmp_path / "pairs", n=8)
    out = tmp_path / "run"
    result = train(
        tiny_options(root, out, max_steps=30, sample_every=100, val_fraction=0.25),
        {"residual": True, "lambda_l1": 10.0},
        epochs=10,
    )
    assert result.progress.global_step == 30
    G = load_generator(out / CHECKPOINT)
    assert G.config.residual and G.residual
    a = torch.cat([from_uint8(load_image(p)) for p in sorted((root / "train_A").glob("*.png"))])
    b = torch.cat([from_uint8(load_image(p)) for p in sorted((root / "train_B").glob("*.png"))])
    with torch.no_grad():
        assert psnr(G(a), b).mean() > psnr(a, b).mean() + 1.0  # it learned more than the do-nothing baseline
    with pytest.raises(DistillError, match="residual"):
        train(tiny_options(root, out, max_steps=31), {"residual": False}, resume=True, epochs=10)


def test_cli_flag(tmp_path: Path, capsys):
    root = make_pair_dataset(tmp_path / "pairs", n=6)
    argv = [
        "train",
        str(root),
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "tiny",
        "--residual",
        "--max-steps",
        "1",
        "--workers",
        "0",
        "--no-progress",
        "--batch-size",
        "2",
        "--augment",
        "shift=1",
    ]
    assert main(argv) == 0
    assert load_generator(tmp_path / "run" / CHECKPOINT).config.residual
