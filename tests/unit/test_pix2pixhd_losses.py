"""Pix2PixHD losses: GAN modes, NVIDIA's feature-matching weights, VGG19 perceptual loss from a weights file."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from core.errors import DistillError
from networks.pix2pixhd import GANLoss, build_discriminator, build_vgg_loss, feature_matching_loss, get_preset
from networks.pix2pixhd.losses import VGG19Features

# torchvision.models.vgg19().features: the 16 conv layers sit at these indices.
TORCHVISION_VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def _preds(num_D: int, n_layers: int, seed: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(2, 3, 5, 4, generator=g) for _ in range(n_layers + 2)] for _ in range(num_D)]


@pytest.mark.parametrize(("num_D", "n_layers"), [(1, 1), (2, 3), (3, 2)])
def test_feature_matching_weights(num_D, n_layers):
    real = _preds(num_D, n_layers, 0)
    assert feature_matching_loss(real, real, lambda_feat=10.0).item() == 0.0
    shifted = [[f + 1.0 for f in feats] for feats in real]
    # Every intermediate layer differs by exactly 1: NVIDIA's weights sum to 4 * lambda_feat
    # (n_layers + 1 layers x 4 / (n_layers + 1), num_D scales x 1 / num_D), the final prediction is excluded.
    assert feature_matching_loss(shifted, real, lambda_feat=10.0).item() == pytest.approx(40.0)
    only_last = [[*feats[:-1], feats[-1] + 5.0] for feats in real]
    assert feature_matching_loss(only_last, real).item() == 0.0


def test_feature_matching_on_discriminator_gradients_reach_fake_only():
    cfg = get_preset("tiny", n_layers_D=3, num_D=2)
    D = build_discriminator(cfg)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    real = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    loss = feature_matching_loss(D(torch.cat([x, fake], 1)), D(torch.cat([x, real], 1)), cfg.lambda_feat)
    assert loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None


def test_gan_loss_modes_match_nvidia_definitions():
    preds = _preds(2, 3, 1)
    lsgan, vanilla = GANLoss("lsgan"), GANLoss("vanilla")
    for real in (True, False):
        target = 1.0 if real else 0.0
        expected_ls = sum(((p[-1] - target) ** 2).mean() for p in preds)
        expected_bce = sum(
            F.binary_cross_entropy(torch.sigmoid(p[-1]), torch.full_like(p[-1], target)) for p in preds
        )
        assert lsgan(preds, real).item() == pytest.approx(expected_ls.item(), rel=1e-6)
        assert vanilla(preds, real).item() == pytest.approx(expected_bce.item(), rel=1e-5)
    with pytest.raises(DistillError, match="gan_mode"):
        GANLoss("wgan")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised VGG19 in torchvision's file layout (features + classifier keys)."""
    g = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        shapes = {f"features.{k}": v.shape for k, v in VGG19Features().features.state_dict().items()}
    sd = {
        k: torch.randn(shape, generator=g) / max(1, shape[1:].numel()) ** 0.5 for k, shape in shapes.items()
    }
    sd.update({"classifier.0.weight": torch.zeros(4, 4), "classifier.0.bias": torch.zeros(4)})
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(sd, path)
    return path, sd


def test_vgg_layout_is_torchvisions(vgg_file):
    _, sd = vgg_file
    expected = {f"features.{i}.{p}" for i in TORCHVISION_VGG19_CONVS for p in ("weight", "bias")}
    assert {k for k in sd if k.startswith("features.")} == expected


def test_vgg_loss(vgg_file):
    path, sd = vgg_file
    loss_fn = build_vgg_loss(path)
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    y = torch.rand(1, 3, 16, 24) * 2 - 1
    assert loss_fn(x, x).item() == 0.0
    xg = x.clone().requires_grad_(True)
    loss = loss_fn(xg, y)
    assert loss.item() > 0
    loss.backward()
    assert xg.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss_fn.parameters())
    # The first slice is relu1_1 = relu(conv at features.0) of the raw [-1, 1] input (NVIDIA: no ImageNet normalisation).
    relu1 = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], padding=1))
    assert torch.allclose(loss_fn.vgg.slices(x)[0], relu1, atol=1e-5)


def test_vgg_without_path_warns_and_returns_none(caplog):
    with caplog.at_level(logging.WARNING):
        assert build_vgg_loss(None) is None
    assert "WITHOUT the VGG perceptual loss" in caplog.text


def test_vgg_wrong_file_refused(tmp_path, vgg_file):
    _, sd = vgg_file
    bad = dict(sd)
    bad["features.2.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        DistillError, match=r"not torchvision's VGG19 layout.*features\.2\.weight \[64, 32, 3, 3\]"
    ):
        build_vgg_loss(tmp_path / "bad.pth")
    torch.save({"features.0.weight": sd["features.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(DistillError, match="missing"):
        build_vgg_loss(tmp_path / "partial.pth")
    with pytest.raises(DistillError, match="no such file"):
        build_vgg_loss(tmp_path / "absent.pth")
