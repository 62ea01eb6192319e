"""The clean student's options: no instance norm, resize-convolution, a moving average of G, the GAN weight, the
late lr decay and warm starts (folding NVIDIA's norms into the convs); ONNX parity and the INT8 gate for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import DistillError
from distill.cli import main
from model_zoo.registry import get_entry
from networks.pix2pixhd import build_generator, get_preset, load_generator, save_generator
from networks.pix2pixhd.layers import ResizeConv2d
from networks.pix2pixhd.warmstart import (
    fold_instance_norms,
    read_generator_weights,
    resize_from_transpose,
    warm_start,
)
from tests.pipeline_helpers import make_pair_dataset, tiny_generator, tiny_options
from training.export import check_parity, export_onnx
from training.trainer import train


def _x(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_options_keep_nvidia_keys_and_nvidia_stays_the_default():
    nvidia = tiny_generator()
    clean = tiny_generator(norm="none", upsample="resize")
    assert get_preset("global").norm == "instance" and get_preset("global").upsample == "transpose"
    assert list(nvidia.state_dict()) == list(clean.state_dict())
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in clean.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in clean.modules())
    assert any(isinstance(m, ResizeConv2d) for m in clean.modules())
    assert clean(_x()).shape == (2, 3, 32, 32)
    with pytest.raises(DistillError, match="norm must be one of"):
        get_preset("tiny", norm="batch")
    with pytest.raises(DistillError, match="ema must be in"):
        get_preset("tiny", ema=1.0)


def test_resize_conv_has_no_chequer_where_the_transposed_conv_has_one():
    """On a constant input the transposed conv's four output phases differ (its uneven overlap); the resize conv's don't."""
    torch.manual_seed(0)
    t = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
    r = ResizeConv2d(4, 4)
    x = torch.ones(1, 4, 8, 8)
    with torch.no_grad():
        phases_t = torch.stack([t(x)[..., a:-2:2, b:-2:2] for a in (0, 1) for b in (0, 1)]).flatten(1)
        phases_r = torch.stack(
            [r(x)[..., 2 + a : -2 : 2, 2 + b : -2 : 2] for a in (0, 1) for b in (0, 1)]
        ).flatten(1)
    assert (phases_t.max(0).values - phases_t.min(0).values).max() > 1e-2
    assert (phases_r.max(0).values - phases_r.min(0).values).max() < 1e-6


def test_resize_from_transpose_is_exact_for_a_transposed_kernel_it_can_express():
    """Per dimension a resize conv (0, w1, w2) equals the transposed conv (w2, w1 + w2, w1); outer products in 2-D."""
    torch.manual_seed(0)
    u, v = torch.randn(4, 2), torch.randn(4, 2)
    t1d = torch.stack([u[:, 1], u[:, 0] + u[:, 1], u[:, 0]], 1)  # taps t0, t1, t2
    s1d = torch.stack([v[:, 1], v[:, 0] + v[:, 1], v[:, 0]], 1)
    weight = (t1d[:, None, :, None] * s1d[None, :, None, :]).contiguous()  # [in 4, out 4, 3, 3]
    t = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
    r = ResizeConv2d(4, 4)
    with torch.no_grad():
        t.weight.copy_(weight)
        r.weight.copy_(resize_from_transpose(weight))
        r.bias.zero_()
        x = torch.randn(1, 4, 6, 6)
        y_t, y_r = t(x), r(x)
    inner = (..., slice(2, -2), slice(2, -2))  # away from the border, where the two layers pad differently
    torch.testing.assert_close(y_r[inner], y_t[inner], atol=1e-5, rtol=1e-5)


def test_folding_the_norms_reproduces_the_network_on_its_one_calibration_input():
    """With a single calibration picture the mean statistics are that picture's own: the fold is exact there."""
    nvidia = tiny_generator(seed=3, residual=True)
    nn.init.normal_([m for m in nvidia.modules() if isinstance(m, nn.Conv2d)][-1].weight, 0, 0.02)
    x = _x(1, seed=5)
    with torch.no_grad():
        want = nvidia(x)
    clean = tiny_generator(seed=9, residual=True, norm="none")
    source = tiny_generator(seed=3, residual=True)
    source.load_state_dict(nvidia.state_dict())
    assert fold_instance_norms(source, x) == sum(isinstance(m, nn.InstanceNorm2d) for m in nvidia.modules())
    clean.load_state_dict(source.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clean(x), want, atol=1e-4, rtol=1e-4)
        assert (
            clean(_x(1, seed=6)) - nvidia(_x(1, seed=6))
        ).abs().max() > 1e-4  # other pictures: close, not equal


def test_warm_start_from_an_exported_onnx_model(tmp_path):
    """A model-zoo entry's model.onnx carries the state_dict keys: a new run starts from it, norms folded."""
    nvidia = tiny_generator(seed=4)
    onnx_path = export_onnx(nvidia, tmp_path / "model.onnx", (32, 32))
    sd, norm, upsample = read_generator_weights(onnx_path)
    assert (norm, upsample) == ("instance", "transpose") and set(sd) == set(nvidia.state_dict())
    x = _x(1, seed=7)
    same = tiny_generator(seed=1)
    warm_start(same, onnx_path, x)
    clean = tiny_generator(seed=1, norm="none")
    assert "instance norms folded" in warm_start(clean, onnx_path, x)
    with torch.no_grad():
        torch.testing.assert_close(same(x), nvidia(x))
        torch.testing.assert_close(clean(x), nvidia(x), atol=1e-4, rtol=1e-4)
    resized = export_onnx(tiny_generator(norm="none", upsample="resize"), tmp_path / "resize.onnx", (32, 32))
    assert read_generator_weights(resized)[1:] == ("none", "resize")
    with pytest.raises(DistillError, match="no instance norm"):
        warm_start(tiny_generator(), export_onnx(clean, tmp_path / "clean.onnx", (32, 32)), x)


@pytest.mark.parametrize(
    "options", [{"residual": True}, {"residual": True, "condition": "modulation"}], ids=["plain", "modulated"]
)
def test_widening_warm_start_computes_what_the_narrow_generator_did_then_trains_the_new_channels(
    tmp_path, options
):
    """ngf 4 -> 6 from a checkpoint with NVIDIA's norms: folded, then widened; the wide net equals the folded narrow
    one (every weight from a new channel into an old one is zero) and its new channels' weights get gradients."""
    narrow = tiny_generator(seed=2, **options)
    for m in narrow.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0, 0.1)  # the residual's output layer and the FiLM layer start at zero
    save_generator(narrow, tmp_path / "narrow.pt")
    x = _x(2, seed=8)
    s = torch.tensor([0.5, -1.0])
    args = (x, s) if "condition" in options else (x,)
    folded = tiny_generator(seed=2, norm="none", **options)
    warm_start(folded, tmp_path / "narrow.pt", x, s if "condition" in options else None)
    wide = tiny_generator(seed=7, norm="none", ngf=6, **options)
    assert "widened from ngf 4 to 6" in warm_start(
        wide, tmp_path / "narrow.pt", x, s if "condition" in options else None
    )
    with torch.no_grad():
        torch.testing.assert_close(wide(*args), folded(*args), atol=1e-6, rtol=1e-6)
    wide.train()
    (wide(*args) - x.flip(-1)).abs().mean().backward()
    last = [m for m in wide.modules() if isinstance(m, nn.Conv2d)][-1]
    assert last.weight.grad[:, 4:].abs().sum() > 0  # the new channels start to be used
    with pytest.raises(DistillError, match="not narrow"):
        warm_start(tiny_generator(norm="none", ngf=2, **options), tmp_path / "narrow.pt", x, None)


def test_a_one_edit_dial_starts_the_first_of_several_edits(tmp_path):
    """A modulated dial warm-starts a 3-edit student: with only the first edit on, at a positive strength, the
    student computes what the dial did; the other edits' FiLM inputs start at zero, and they train."""
    options = {"norm": "none", "condition": "modulation", "residual": True}
    dial = tiny_generator(seed=2, **options)
    for m in dial.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0, 0.1)
    save_generator(dial, tmp_path / "dial.pt")
    x, s = _x(2, seed=8), torch.tensor([0.5, 1.2])
    multi = tiny_generator(seed=7, n_edits=3, **options)
    vector = torch.stack([s, torch.zeros(2), torch.zeros(2)], 1)
    assert "the first of 3" in warm_start(multi, tmp_path / "dial.pt", x, vector)
    with torch.no_grad():
        torch.testing.assert_close(multi(x, vector), dial(x, s), atol=1e-6, rtol=1e-6)
    assert multi.film[0].weight[:, 1:].abs().sum() == 0
    multi.train()
    (multi(x, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])) - x.flip(-1)).abs().mean().backward()
    assert multi.film[0].weight.grad[:, 1:].abs().sum() > 0
    save_generator(multi, tmp_path / "multi.pt")
    with pytest.raises(DistillError, match="first of several"):  # K -> 1 or K -> K' is not a warm start
        warm_start(tiny_generator(n_edits=2, **options), tmp_path / "multi.pt", x, vector[:, :2])
    with pytest.raises(DistillError, match="first of several"):
        warm_start(tiny_generator(**options), tmp_path / "multi.pt", x, s)


@pytest.mark.parametrize(
    "options",
    [{"norm": "none", "upsample": "resize"}, {"norm": "none", "condition": "modulation", "residual": True}],
)
def test_clean_generators_export_with_parity(tmp_path, options):
    G = tiny_generator(seed=2, **options)
    nn.init.normal_([m for m in G.modules() if isinstance(m, nn.Conv2d)][-1].weight, 0, 0.02)
    path = export_onnx(G, tmp_path / "model.onnx", (32, 32))
    assert check_parity(G, path, [(32, 32), (32, 48)])["parity_max_abs_diff"] < 1e-3


def test_training_keeps_a_moving_average_that_is_exported_and_resumed(tmp_path):
    data = make_pair_dataset(tmp_path / "pairs")
    out = tmp_path / "run"
    overrides = {"norm": "none", "ema": 0.5, "lambda_gan": 0.0, "lr_decay_steps": 4}
    train(tiny_options(data, out, max_steps=3), overrides)
    ckpt = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert set(ckpt["G_ema"]) == set(ckpt["G"])
    assert any(not torch.equal(ckpt["G_ema"][k], ckpt["G"][k]) for k in ckpt["G"])
    loaded = load_generator(out / "checkpoints" / "latest.pt")
    assert all(
        torch.equal(v, ckpt["G_ema"][k]) for k, v in loaded.state_dict().items()
    )  # the export's generator
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in steps if r["kind"] == "step"]
    assert lrs[0] == pytest.approx(2e-4 * 3 / 4) and lrs[-1] < lrs[0]  # the last 4 steps of 3 decay linearly
    assert all(r["loss_G_GAN"] == 0 for r in steps if r["kind"] == "step")
    result = train(tiny_options(data, out, max_steps=5), {}, resume=True)
    assert result.progress.global_step == 5
    resumed = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert resumed["config"]["ema"] == 0.5 and not torch.equal(
        resumed["G_ema"]["model.1.weight"], ckpt["G_ema"]["model.1.weight"]
    )


def test_cli_warm_start_then_export_passes_the_int8_gate(tmp_path):
    """`distill train --init model.onnx --norm none --ngf 6` (folded and widened), then `distill export` with the INT8
    variant and its accuracy gate."""
    data = make_pair_dataset(tmp_path / "pairs", n=16)
    first = tiny_generator(seed=5, residual=True)
    save_generator(first, tmp_path / "nvidia.pt", first.config)
    onnx_path = export_onnx(first, tmp_path / "model.onnx", (32, 32))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--residual",
                "--norm",
                "none",
                "--ngf",
                "6",
                "--ema",
                "0.9",
                "--init",
                str(onnx_path),
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads((out / "run.json").read_text())["options"]["init"] == str(onnx_path)
    zoo = tmp_path / "zoo"
    assert (
        main(
            [
                "export",
                str(out),
                "--out",
                str(zoo / "clean"),
                "--variants",
                "int8",
                "--min-variant-psnr",
                "30",
            ]
        )
        == 0
    )
    entry = get_entry("clean", zoo)
    assert entry.variants["int8"]["psnr_vs_fp32_db"] >= 30
    assert entry.manifest["training"]["config"]["ngf"] == 6
    assert entry.manifest["training"]["init"] == "model.onnx"  # the warm start, with no build-machine path
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(tmp_path / "bad"),
                "--preset",
                "tiny",
                "--init",
                str(tmp_path / "missing.onnx"),
                "--max-steps",
                "1",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 2
    )
    fresh = build_generator(get_preset("tiny", residual=True, norm="none"))
    with pytest.raises(DistillError, match="no such file"):
        warm_start(fresh, Path(tmp_path / "missing.pt"), _x())
    assert np.isfinite(np.asarray(entry.manifest["variants"]["int8"]["psnr_vs_fp32_db"]))
