"""Pix2PixHD's shared layers, in NVIDIA's order: the norm and upsampling choices, the residual block, the global
generator's layer list, the input check. Both generators (:mod:`networks.pix2pixhd.networks` and the
strength-conditioned :mod:`networks.pix2pixhd.conditional`) build from them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DistillError


def norm_layer(channels: int, kind: str = "instance") -> nn.Module:
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


def upsample_layer(in_channels: int, out_channels: int, kind: str = "transpose") -> nn.Module:
    """The decoder's 2x step: NVIDIA's transposed conv, or :class:`ResizeConv2d`."""
    if kind == "resize":
        return ResizeConv2d(in_channels, out_channels)
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)


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
            norm_layer(channels, norm),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, padding=0),
            norm_layer(channels, norm),
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
    if last.bias is not None:
        nn.init.zeros_(last.bias)


def global_layers(
    input_nc: int,
    output_nc: int,
    ngf: int,
    n_downsampling: int,
    n_blocks: int,
    norm: str = "instance",
    upsample: str = "transpose",
) -> list[nn.Module]:
    """GlobalGenerator's layer list in NVIDIA's order (the last three: pad, conv7, tanh)."""
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0),
        norm_layer(ngf, norm),
        nn.ReLU(True),
    ]
    for i in range(n_downsampling):
        c = ngf * 2**i
        layers += [
            nn.Conv2d(c, c * 2, kernel_size=3, stride=2, padding=1),
            norm_layer(c * 2, norm),
            nn.ReLU(True),
        ]
    c = ngf * 2**n_downsampling
    layers += [ResnetBlock(c, norm) for _ in range(n_blocks)]
    for i in range(n_downsampling):
        c = ngf * 2 ** (n_downsampling - i)
        layers += [upsample_layer(c, c // 2, upsample), norm_layer(c // 2, norm), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
    return layers
