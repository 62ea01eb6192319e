"""Pix2PixHD losses as NVIDIA weighs them: GAN (LSGAN or vanilla), feature matching, VGG19 perceptual.

Discriminator outputs are ``MultiscaleDiscriminator`` results: one list of features per scale, the last
entry of each list being the patch prediction map.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DistillError

log = logging.getLogger(__name__)

DPredictions = list[list[torch.Tensor]]


class GANLoss(nn.Module):
    """Adversarial loss summed over discriminator scales (NVIDIA sums, it does not average).

    ``lsgan``: MSE between the raw prediction map and 1 (real) or 0 (fake).
    ``vanilla``: binary cross-entropy; NVIDIA applies a sigmoid in D and BCELoss, here D outputs logits and
    the loss is BCE-with-logits, the same function computed stably.
    """

    def __init__(self, gan_mode: str = "lsgan") -> None:
        super().__init__()
        if gan_mode not in ("lsgan", "vanilla"):
            raise DistillError(f"GANLoss: gan_mode must be 'lsgan' or 'vanilla', got {gan_mode!r}")
        self.gan_mode = gan_mode

    def forward(self, predictions: DPredictions, target_is_real: bool) -> torch.Tensor:
        loss = predictions[0][-1].new_zeros(())
        for feats in predictions:
            pred = feats[-1]
            target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
            if self.gan_mode == "lsgan":
                loss = loss + F.mse_loss(pred, target)
            else:
                loss = loss + F.binary_cross_entropy_with_logits(pred, target)
        return loss


def feature_matching_loss(
    pred_fake: DPredictions, pred_real: DPredictions, lambda_feat: float = 10.0
) -> torch.Tensor:
    """L1 between D's intermediate features on fake and real pairs (real side detached).

    NVIDIA's weighting: each of the n_layers_D + 1 intermediate layers (the final prediction excluded) gets
    4 / (n_layers_D + 1), each scale 1 / num_D, the whole lambda_feat.
    """
    if len(pred_fake) != len(pred_real) or any(
        len(a) != len(b) for a, b in zip(pred_fake, pred_real, strict=True)
    ):
        raise ValueError(
            "feature_matching_loss: fake and real predictions must have the same scales and layers"
        )
    num_D = len(pred_fake)
    loss = pred_fake[0][-1].new_zeros(())
    for fake_feats, real_feats in zip(pred_fake, pred_real, strict=True):
        n_layers_D = len(fake_feats) - 2
        feat_weight = 4.0 / (n_layers_D + 1)
        for fake, real in zip(fake_feats[:-1], real_feats[:-1], strict=True):
            loss = loss + F.l1_loss(fake, real.detach()) * (feat_weight / num_D * lambda_feat)
    return loss


# torchvision's VGG19 ("E") feature extractor: ints are 3x3 conv widths, "M" a 2x2 max-pool.
_VGG19_CFG: list[Any] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]
# NVIDIA's slices end after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (torchvision indices 1, 6, 11, 20, 29).
VGG_SLICE_ENDS = (2, 7, 12, 21, 30)
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features`` layout (state_dict keys ``features.N.weight/bias``)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)

    def slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations at relu1_1 .. relu5_1."""
        outs, start = [], 0
        for end in VGG_SLICE_ENDS:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs


def load_vgg19_features(path: str | os.PathLike) -> VGG19Features:
    """VGG19 features from torchvision's ``vgg19-dcbb9e9d.pth`` (or any file with the same ``features.*`` keys).

    ``classifier.*`` entries are ignored; every ``features.*`` key must be present with torchvision's shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(
            f"{path}: no such file; pass torchvision's VGG19 weights (vgg19-dcbb9e9d.pth) or no VGG path"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DistillError(
            f"{path}: cannot be read as a torch state_dict ({type(e).__name__}); expected torchvision's vgg19 weights"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise DistillError(
            f"{path}: holds a {type(sd).__name__}; expected torchvision's vgg19 state_dict (features.N.weight ...)"
        )
    with torch.device("meta"):  # no random init of 20 M parameters: the file's tensors are assigned below
        net = VGG19Features()
    expected = net.state_dict()
    features = {k: v for k, v in sd.items() if isinstance(k, str) and k.startswith("features.")}
    missing = sorted(set(expected) - set(features))
    unexpected = sorted(set(features) - set(expected))
    wrong = [
        f"{k} {list(features[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in features and features[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise DistillError(
            f"{path}: not torchvision's VGG19 layout (features.N.weight/bias for 16 convs): "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {wrong[:4]}"
        )
    net.load_state_dict({k: v.float() for k, v in features.items()}, strict=True, assign=True)
    return net.eval().requires_grad_(False)


class VGGLoss(nn.Module):
    """NVIDIA's perceptual loss: sum_i w_i * L1(vgg_i(x), vgg_i(y).detach()), w = 1/32, 1/16, 1/8, 1/4, 1.

    NVIDIA feeds the [-1, 1] generator images to the ImageNet-trained VGG as they are, without
    ImageNet mean/std normalisation; ``imagenet_normalize=False`` (default) reproduces that, True maps
    [-1, 1] to ImageNet statistics first. The result is unweighted: multiply by ``cfg.lambda_vgg``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, vgg19_path: str | os.PathLike, imagenet_normalize: bool = False) -> None:
        super().__init__()
        self.vgg = load_vgg19_features(vgg19_path)
        self.vgg.features = nn.Sequential(
            *list(self.vgg.features)[: VGG_SLICE_ENDS[-1]]
        )  # conv5_2 and later are never used
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGLoss:
        """The VGG stays in eval mode (it has no dropout/BN in ``features``, but keep it frozen regardless)."""
        super().train(mode)
        self.vgg.eval()
        return self

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet_normalize:
            return ((x + 1) / 2 - self.mean) / self.std
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"VGGLoss: expected two [N, 3, H, W] tensors of one shape, got {list(x.shape)} and {list(y.shape)}"
            )
        fx = self.vgg.slices(self._prep(x))
        with torch.no_grad():
            fy = self.vgg.slices(self._prep(y))
        loss = x.new_zeros(())
        for w, a, b in zip(VGG_WEIGHTS, fx, fy, strict=True):
            loss = loss + w * F.l1_loss(a, b.detach())
        return loss


def build_vgg_loss(vgg19_path: str | os.PathLike | None, imagenet_normalize: bool = False) -> VGGLoss | None:
    """VGGLoss from a weights path, or None (with a warning) so training goes on without that term."""
    if vgg19_path is None or str(vgg19_path) == "":
        log.warning(
            "No VGG19 weights given: training WITHOUT the VGG perceptual loss (NVIDIA's recipe uses it, "
            "weight 10). Pass torchvision's vgg19-dcbb9e9d.pth by path to enable it."
        )
        return None
    return VGGLoss(vgg19_path, imagenet_normalize=imagenet_normalize)
