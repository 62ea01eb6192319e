"""Pix2PixHD networks with NVIDIA/pix2pixHD's layer order, so their state_dicts load unchanged.

Module attribute names and ``nn.Sequential`` indices reproduce NVIDIA's ``models/networks.py``
(keys ``model.N.*``, ``model1_1.N.*``, ``model1_2.N.*``, ``scale{i}_layer{j}.0.*``), checked by
``tests/conformance/test_pix2pixhd_networks.py`` (keys) and ``tests/conformance/test_pix2pixhd_fixtures.py`` (the official outputs).
Normalisation is InstanceNorm2d without affine parameters or running statistics (eps 1e-5): it has no
state_dict entries and normalises with per-sample statistics in eval mode too.

Two generator options are not NVIDIA's (``Pix2PixHDConfig.norm`` and ``.upsample``); both keep every key:
``norm="none"`` puts an ``nn.Identity`` where the instance norm was, ``upsample="resize"`` a
:class:`ResizeConv2d` (a 3x3 conv, weight ``[out, in, 3, 3]``) where the transposed conv was.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import DistillError
from networks.pix2pixhd.conditional import ConditionalGenerator
from networks.pix2pixhd.config import Pix2PixHDConfig, min_input_size
from networks.pix2pixhd.layers import (
    ResnetBlock,
    check_input,
    global_layers,
    norm_layer,
    residual_output,
    upsample_layer,
    zero_output_layer,
)


def _downsample_pool() -> nn.AvgPool2d:
    """NVIDIA's image pyramid step; count_include_pad=False matters (True moves outputs by ~0.5)."""
    return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)


class GlobalGenerator(nn.Module):
    """Encoder (conv7 + n_downsampling stride-2 convs), residual blocks, decoder (transposed convs), tanh."""

    config: Pix2PixHDConfig  # set by build_generator

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_downsampling: int = 4,
        n_blocks: int = 9,
        residual: bool = False,
        norm: str = "instance",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if residual and input_nc != output_nc:
            raise DistillError(f"residual output needs input_nc == output_nc, got {input_nc} and {output_nc}")
        self.input_nc, self.output_nc, self.residual = input_nc, output_nc, residual
        self.stride = 2**n_downsampling
        self.min_size = min_input_size(n_downsampling, n_blocks)
        self.model = nn.Sequential(
            *global_layers(input_nc, output_nc, ngf, n_downsampling, n_blocks, norm, upsample)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_nc, self.stride, self.min_size, "GlobalGenerator")
        out = self.model(x)
        return residual_output(x, out) if self.residual else out


class LocalEnhancer(nn.Module):
    """Global generator (ngf * 2**L filters, without its output layers) on the coarsest pyramid level,
    refined by L enhancers, each working at twice the resolution of the previous one."""

    config: Pix2PixHDConfig  # set by build_generator

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 32,
        n_downsample_global: int = 4,
        n_blocks_global: int = 9,
        n_local_enhancers: int = 1,
        n_blocks_local: int = 3,
        residual: bool = False,
        norm: str = "instance",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        assert n_local_enhancers >= 1
        if residual and input_nc != output_nc:
            raise DistillError(f"residual output needs input_nc == output_nc, got {input_nc} and {output_nc}")
        self.input_nc, self.output_nc, self.residual = input_nc, output_nc, residual
        self.n_local_enhancers = n_local_enhancers
        self.stride = 2 ** (n_downsample_global + n_local_enhancers)
        self.min_size = min_input_size(n_downsample_global, n_blocks_global, n_local_enhancers)
        ngf_global = ngf * 2**n_local_enhancers
        self.model = nn.Sequential(
            *global_layers(
                input_nc, output_nc, ngf_global, n_downsample_global, n_blocks_global, norm, upsample
            )[:-3]
        )
        for n in range(1, n_local_enhancers + 1):
            g = ngf * 2 ** (n_local_enhancers - n)
            down = [
                nn.ReflectionPad2d(3),
                nn.Conv2d(input_nc, g, kernel_size=7, padding=0),
                norm_layer(g, norm),
                nn.ReLU(True),
                nn.Conv2d(g, g * 2, kernel_size=3, stride=2, padding=1),
                norm_layer(g * 2, norm),
                nn.ReLU(True),
            ]
            up: list[nn.Module] = [ResnetBlock(g * 2, norm) for _ in range(n_blocks_local)]
            up += [upsample_layer(g * 2, g, upsample), norm_layer(g, norm), nn.ReLU(True)]
            if n == n_local_enhancers:
                up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*down))
            setattr(self, f"model{n}_2", nn.Sequential(*up))
        self.downsample = _downsample_pool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_nc, self.stride, self.min_size, "LocalEnhancer")
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            level = pyramid[self.n_local_enhancers - n]
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(level) + out)
        return residual_output(x, out) if self.residual else out


class NLayerDiscriminator(nn.Module):
    """PatchGAN with intermediate features: ``model0..model{n_layers+1}`` (NVIDIA's getIntermFeat layout).

    forward returns the n_layers + 2 outputs of those stages; the last is the [N,1,h,w] patch logit map.
    No sigmoid: the vanilla GAN loss uses BCE-with-logits on it.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.input_nc = input_nc
        kw, padw = 4, 2
        stages: list[list[nn.Module]] = [
            [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        ]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stages.append(
                [
                    nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=2, padding=padw),
                    norm_layer(nf),
                    nn.LeakyReLU(0.2, True),
                ]
            )
        nf_prev, nf = nf, min(nf * 2, 512)
        stages.append(
            [
                nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=1, padding=padw),
                norm_layer(nf),
                nn.LeakyReLU(0.2, True),
            ]
        )
        stages.append([nn.Conv2d(nf, 1, kernel_size=kw, stride=1, padding=padw)])
        for n, stage in enumerate(stages):
            setattr(self, f"model{n}", nn.Sequential(*stage))

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"model{n}") for n in range(self.n_layers + 2)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages():
            x = stage(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """num_D PatchGANs on an image pyramid; attributes ``scale{i}_layer{j}`` as in NVIDIA's checkpoints.

    forward returns one feature list per scale, the full-resolution scale first; NVIDIA runs
    ``scale{num_D-1}`` at full resolution and ``scale0`` at the coarsest level, kept here for weight
    compatibility.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, num_D: int = 2) -> None:
        super().__init__()
        self.num_D, self.n_layers, self.input_nc = num_D, n_layers, input_nc
        for i in range(num_D):
            net = NLayerDiscriminator(input_nc, ndf, n_layers)
            for j, stage in enumerate(net.stages()):
                setattr(self, f"scale{i}_layer{j}", stage)
        self.downsample = _downsample_pool()

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise DistillError(
                f"MultiscaleDiscriminator: expected input [N, {self.input_nc}, H, W], got {list(x.shape)}"
            )
        results = []
        for i in range(self.num_D):
            scale = self.num_D - 1 - i
            feats, h = [], x
            for j in range(self.n_layers + 2):
                h = getattr(self, f"scale{scale}_layer{j}")(h)
                feats.append(h)
            results.append(feats)
            if i != self.num_D - 1:
                x = self.downsample(x)
        return results


def init_weights(module: nn.Module) -> None:
    """NVIDIA's ``weights_init``: conv weights N(0, 0.02); biases keep PyTorch's defaults."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)


def build_generator(cfg: Pix2PixHDConfig, init: bool = True) -> nn.Module:
    """GlobalGenerator or LocalEnhancer for ``cfg`` (NVIDIA init unless ``init=False``); ``G.config`` = cfg.

    With ``cfg.residual`` the output layer starts at zero, so training starts from the identity. With
    ``cfg.condition`` other than "none" it is the strength-conditioned generator (``G(x, strength)``,
    :mod:`networks.pix2pixhd.conditional`).
    """
    if cfg.condition != "none":
        conditional = ConditionalGenerator(cfg)
        if init:
            init_weights(conditional)
            zero_output_layer(conditional)
            conditional.init_condition()
        conditional.config = cfg
        return conditional
    net: GlobalGenerator | LocalEnhancer
    if cfg.netG == "global":
        net = GlobalGenerator(
            cfg.input_nc,
            cfg.output_nc,
            cfg.ngf,
            cfg.n_downsample_global,
            cfg.n_blocks_global,
            cfg.residual,
            cfg.norm,
            cfg.upsample,
        )
    else:
        net = LocalEnhancer(
            cfg.input_nc,
            cfg.output_nc,
            cfg.ngf,
            cfg.n_downsample_global,
            cfg.n_blocks_global,
            cfg.n_local_enhancers,
            cfg.n_blocks_local,
            cfg.residual,
            cfg.norm,
            cfg.upsample,
        )
    if init:
        init_weights(net)
        if cfg.residual:
            zero_output_layer(net)
    net.config = cfg
    return net


def build_discriminator(cfg: Pix2PixHDConfig, init: bool = True) -> MultiscaleDiscriminator:
    """Conditional multi-scale discriminator: it sees cat(input, output) channels, as in NVIDIA's define_D."""
    net = MultiscaleDiscriminator(cfg.input_nc + cfg.output_nc, cfg.ndf, cfg.n_layers_D, cfg.num_D)
    if init:
        init_weights(net)
    return net
