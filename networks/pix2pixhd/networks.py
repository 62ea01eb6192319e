"""Pix2PixHD networks with NVIDIA/pix2pixHD's layer order, so their state_dicts load unchanged.

Module attribute names and ``nn.Sequential`` indices reproduce NVIDIA's ``models/networks.py``
(keys ``model.N.*``, ``model1_1.N.*``, ``model1_2.N.*``, ``scale{i}_layer{j}.0.*``), checked by
``tests/test_pix2pixhd_networks.py`` (keys) and ``tests/test_pix2pixhd_fixtures.py`` (the official outputs).
Normalisation is InstanceNorm2d without affine parameters or running statistics (eps 1e-5): it has no
state_dict entries and normalises with per-sample statistics in eval mode too.

Two generator options are not NVIDIA's (``Pix2PixHDConfig.norm`` and ``.upsample``); both keep every key:
``norm="none"`` puts an ``nn.Identity`` where the instance norm was, ``upsample="resize"`` a
:class:`ResizeConv2d` (a 3x3 conv, weight ``[out, in, 3, 3]``) where the transposed conv was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DistillError
from networks.pix2pixhd.config import Pix2PixHDConfig, min_input_size


def _norm(channels: int, kind: str = "instance") -> nn.Module:
    """NVIDIA's InstanceNorm2d, or an Identity in its place (same Sequential indices, so the same keys)."""
    if kind == "none":
        return nn.Identity()
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False, eps=1e-5)


class ResizeConv2d(nn.Conv2d):
    """2x nearest-neighbour upsampling, a 1-px reflection pad, then a 3x3 conv: every output pixel sees the same
    number of kernel taps, so no chequer (the transposed conv's uneven overlap)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(F.interpolate(x, scale_factor=2.0, mode="nearest"), (1, 1, 1, 1), mode="reflect")
        return self._conv_forward(x, self.weight, self.bias)


def _upsample(in_channels: int, out_channels: int, kind: str = "transpose") -> nn.Module:
    """The decoder's 2x step: NVIDIA's transposed conv, or :class:`ResizeConv2d`."""
    if kind == "resize":
        return ResizeConv2d(in_channels, out_channels)
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)


def _downsample_pool() -> nn.AvgPool2d:
    """NVIDIA's image pyramid step; count_include_pad=False matters (True moves outputs by ~0.5)."""
    return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)


def check_input(x: torch.Tensor, channels: int, stride: int, min_size: int, what: str) -> None:
    """Raise DistillError unless ``x`` is [N, channels, H, W], H and W multiples of ``stride`` and >= ``min_size``.

    Skipped while tracing (ONNX export), where the sizes are symbolic.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    if x.dim() != 4 or x.shape[1] != channels:
        raise DistillError(f"{what}: expected input [N, {channels}, H, W], got {list(x.shape)}")
    h, w = x.shape[2], x.shape[3]
    if h % stride or w % stride or h == 0 or w == 0:
        raise DistillError(
            f"{what}: input {h}x{w} (HxW) must have H and W divisible by the network stride {stride}; "
            f"resize or pad to e.g. {max(min_size, h // stride * stride)}x{max(min_size, w // stride * stride)}"
        )
    if h < min_size or w < min_size:
        raise DistillError(f"{what}: input {h}x{w} (HxW) is too small; H and W must be at least {min_size}")


class ResnetBlock(nn.Module):
    """x + [pad, conv3, IN, ReLU, pad, conv3, IN](x); no activation after the sum."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        self.channels = channels
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, padding=0),
            _norm(channels, norm),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, padding=0),
            _norm(channels, norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def residual_output(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The residual generator's output: the input plus the generator's tanh change, kept in [-1, 1]."""
    return (x + delta).clamp(-1.0, 1.0)


def zero_output_layer(net: nn.Module) -> None:
    """Zero the last conv, so a residual generator starts as the identity (the do-nothing baseline)."""
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def _global_layers(input_nc: int, output_nc: int, ngf: int, n_downsampling: int, n_blocks: int,
                   norm: str = "instance", upsample: str = "transpose") -> list[nn.Module]:
    """GlobalGenerator's layer list in NVIDIA's order (the last three: pad, conv7, tanh)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0), _norm(ngf, norm),
                               nn.ReLU(True)]
    for i in range(n_downsampling):
        c = ngf * 2**i
        layers += [nn.Conv2d(c, c * 2, kernel_size=3, stride=2, padding=1), _norm(c * 2, norm), nn.ReLU(True)]
    c = ngf * 2**n_downsampling
    layers += [ResnetBlock(c, norm) for _ in range(n_blocks)]
    for i in range(n_downsampling):
        c = ngf * 2 ** (n_downsampling - i)
        layers += [_upsample(c, c // 2, upsample), _norm(c // 2, norm), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
    return layers


class GlobalGenerator(nn.Module):
    """Encoder (conv7 + n_downsampling stride-2 convs), residual blocks, decoder (transposed convs), tanh."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_downsampling: int = 4, n_blocks: int = 9,
                 residual: bool = False, norm: str = "instance", upsample: str = "transpose") -> None:
        super().__init__()
        if residual and input_nc != output_nc:
            raise DistillError(f"residual output needs input_nc == output_nc, got {input_nc} and {output_nc}")
        self.input_nc, self.output_nc, self.residual = input_nc, output_nc, residual
        self.stride = 2**n_downsampling
        self.min_size = min_input_size(n_downsampling, n_blocks)
        self.model = nn.Sequential(*_global_layers(input_nc, output_nc, ngf, n_downsampling, n_blocks, norm, upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_nc, self.stride, self.min_size, "GlobalGenerator")
        out = self.model(x)
        return residual_output(x, out) if self.residual else out


class LocalEnhancer(nn.Module):
    """Global generator (ngf * 2**L filters, without its output layers) on the coarsest pyramid level,
    refined by L enhancers, each working at twice the resolution of the previous one."""

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
            *_global_layers(input_nc, output_nc, ngf_global, n_downsample_global, n_blocks_global, norm, upsample)[:-3]
        )
        for n in range(1, n_local_enhancers + 1):
            g = ngf * 2 ** (n_local_enhancers - n)
            down = [
                nn.ReflectionPad2d(3),
                nn.Conv2d(input_nc, g, kernel_size=7, padding=0),
                _norm(g, norm),
                nn.ReLU(True),
                nn.Conv2d(g, g * 2, kernel_size=3, stride=2, padding=1),
                _norm(g * 2, norm),
                nn.ReLU(True),
            ]
            up: list[nn.Module] = [ResnetBlock(g * 2, norm) for _ in range(n_blocks_local)]
            up += [_upsample(g * 2, g, upsample), _norm(g, norm), nn.ReLU(True)]
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
                [nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=2, padding=padw), _norm(nf), nn.LeakyReLU(0.2, True)]
            )
        nf_prev, nf = nf, min(nf * 2, 512)
        stages.append([nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=1, padding=padw), _norm(nf), nn.LeakyReLU(0.2, True)])
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
            raise DistillError(f"MultiscaleDiscriminator: expected input [N, {self.input_nc}, H, W], got {list(x.shape)}")
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
        from networks.pix2pixhd.conditional import ConditionalGenerator

        net: nn.Module = ConditionalGenerator(cfg)
        if init:
            init_weights(net)
            zero_output_layer(net)
            net.init_condition()
        net.config = cfg
        return net
    if cfg.netG == "global":
        net: nn.Module = GlobalGenerator(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.n_downsample_global, cfg.n_blocks_global,
                                         cfg.residual, cfg.norm, cfg.upsample)
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
