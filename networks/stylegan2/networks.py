"""StyleGAN2 generator in the layout of NVlabs stylegan2-ada-pytorch (`training/networks.py`).

One implementation for every checkpoint format: parameter and buffer names are exactly NVlabs'
(``mapping.fc0.weight``, ``synthesis.b4.const``, ``synthesis.b8.conv0.noise_const``, ...), and
other formats are re-keyed to them at load time (see ``checkpoints.py``). Pure PyTorch (no custom
CUDA ops), float32, numerically equivalent to the reference's fp32 path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("const", "random", "none")

# ----------------------------------------------------------------------------
# Primitive ops.


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """2D FIR filter outer(taps, taps), normalised to sum 1 (NVlabs' ``resample_filter``)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: Sequence[int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad (negative = crop), FIR-filter, downsample. Pure torch.

    ``padding`` is (x0, x1, y0, y1); ``f`` is a 2D [fh, fw] filter applied as a true convolution
    (flipped), scaled by ``gain``; channels are filtered independently.
    """
    assert x.ndim == 4 and f.ndim == 2
    n, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    f = (f * gain).to(x.dtype).flip([0, 1])
    f = f[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, f, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by ``up`` with the FIR filter ``f`` (the skip-architecture image path)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up**2)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply linear or leaky ReLU (0.2), scale, clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = math.sqrt(2) if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """Modulated (and demodulated) convolution, optionally upsampling ×2 (transposed conv + FIR).

    Fused: one grouped convolution with per-sample weights (groups = batch). Unfused: scale the
    activations before and after one shared convolution. Both agree to ~1e-6.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    assert x.shape[1] == in_ch and styles.shape == (n, in_ch), (x.shape, styles.shape, weight.shape)
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 sum_k w[o,i,k]^2: a matmul, no [N,O,I,k,k] tensor.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
    if not fused_modconv:
        x = x * styles.reshape(n, in_ch, 1, 1)
        x = _conv2d_resample(x, weight, resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.reshape(n, out_ch, 1, 1)
        return x if noise is None else x + noise
    scale = styles.reshape(n, 1, in_ch, 1, 1)
    if dcoefs is not None:
        scale = scale * dcoefs.reshape(n, out_ch, 1, 1, 1)
    w = weight[None] * scale
    x = x.reshape(1, n * in_ch, *x.shape[2:])
    x = _conv2d_resample(
        x, w.reshape(n * out_ch, in_ch, kh, kw), resample_filter, up=up, padding=padding, groups=n
    )
    x = x.reshape(n, out_ch, *x.shape[2:])
    return x if noise is None else x + noise


def _conv2d_resample(
    x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, up: int = 1, padding: int = 0, groups: int = 1
) -> torch.Tensor:
    """Convolution (cross-correlation, as stored) with optional ×up upsampling, NVlabs' padding rules."""
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    assert f is not None
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1]
    p0 = padding + (fw + up - 1) // 2
    p1 = padding + (fw - up) // 2
    if kh == 1 and kw == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up**2)
    # Transposed conv expects [in, out/groups, kh, kw] per group; the stored weight is not flipped.
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    p0 -= kw - 1
    p1 -= kw - up
    pt = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, w, stride=up, padding=pt, groups=groups)
    return upfirdn2d(x, f, padding=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up**2)


# ----------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: stored weights are scaled at run time."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


class Conv2dLayer(nn.Module):
    """Plain equalized-lr convolution; used here only as the 1×1 upsampling ``skip`` of 'resnet' blocks."""

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.activation, self.up, self.conv_clamp = activation, up, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        x = _conv2d_resample(x, w.to(x.dtype), self.resample_filter, up=self.up, padding=self.padding)
        act_gain = (math.sqrt(2) if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm, ``num_layers`` lrelu FC layers (lr ×0.01), broadcast to ``num_ws``, truncation."""

    w_avg: torch.Tensor

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        layer_features: int | None = None,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = True,
    ) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.training and update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally ×2 upsampling) + noise + bias + lrelu·sqrt(2) (+ clamp)."""

    resample_filter: torch.Tensor
    noise_const: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        fused_modconv: bool = True,
        gain: float = 1.0,
    ) -> torch.Tensor:
        assert noise_mode in NOISE_MODES, noise_mode
        in_res = self.resolution // self.up
        assert x.shape[1:] == (self.in_channels, in_res, in_res), (tuple(x.shape), self.in_channels, in_res)
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype)
                * self.noise_strength
            )
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            fused_modconv=fused_modconv,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act="lrelu", gain=math.sqrt(2) * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv to image channels, no demodulation, linear output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv0) + conv1, plus ToRGB / skip per the architecture."""

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_noise: bool = True,
    ):
        super().__init__()
        assert architecture in ARCHITECTURES, architecture
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        layer_kwargs: dict[str, Any] = dict(
            w_dim=w_dim,
            resolution=resolution,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
            use_noise=use_noise,
        )
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        fused_modconv: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert ws.shape[1] == self.num_conv + self.num_torgb
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(
                x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv, gain=math.sqrt(0.5)
            )
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, R, R]: blocks b4, b8, ..., b{R}."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channels: dict[int, int],
        architecture: str = "skip",
        conv_clamp: float | None = None,
        use_noise: bool = True,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        log2 = int(math.log2(img_resolution))
        assert img_resolution >= 4 and img_resolution == 2**log2, img_resolution
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        missing = [r for r in self.block_resolutions if r not in channels]
        assert not missing, f"channels missing for resolutions {missing}"
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(
                in_channels,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=(res == img_resolution),
                architecture=architecture,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                use_noise=use_noise,
            )
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", fused_modconv: bool | None = None
    ) -> torch.Tensor:
        """``fused_modconv=None``: the grouped-conv path in eval mode on GPU (NVlabs' default); the
        shared-conv path in training and on CPU, where it measured ~1.3x faster at batch 16
        (benchmarks/teacher_benchmark.py). Both give the same images to ~1e-6."""
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (
            f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}"
        )
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if fused_modconv is None:
            fused_modconv = not self.training and ws.device.type != "cpu"
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        assert img is not None  # the last block always draws (every architecture has a toRGB there)
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> W+) then ``synthesis`` (W+ -> image); NVlabs key names.

    ``channels`` gives the channel count per resolution ({4: 512, 8: 512, ...}); when None it follows
    NVlabs' rule min(channel_base // R, channel_max).
    """

    checkpoint_info: dict[str, Any]  # set by networks.stylegan2.checkpoints.load_generator

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        mapping_layers: int = 8,
        channels: dict[int, int] | None = None,
        channel_base: int = 32768,
        channel_max: int = 512,
        lr_multiplier: float = 0.01,
        conv_clamp: float | None = None,
        w_avg_beta: float | None = 0.995,
        architecture: str = "skip",
        mapping_features: int | None = None,
        use_noise: bool = True,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or img_resolution != 2**log2:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        if channels is None:
            channels = {2**i: min(channel_base // 2**i, channel_max) for i in range(2, log2 + 1)}
        channels = {int(k): int(v) for k, v in channels.items()}
        resample_filter = [float(t) / float(sum(resample_filter)) for t in resample_filter]
        self.init_kwargs: dict[str, Any] = dict(
            z_dim=z_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            mapping_layers=mapping_layers,
            channels=dict(channels),
            lr_multiplier=lr_multiplier,
            conv_clamp=conv_clamp,
            w_avg_beta=w_avg_beta,
            architecture=architecture,
            mapping_features=mapping_features,
            use_noise=use_noise,
            resample_filter=list(resample_filter),
        )
        self.z_dim, self.w_dim = z_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim,
            img_resolution,
            img_channels,
            channels,
            architecture=architecture,
            conv_clamp=conv_clamp,
            use_noise=use_noise,
            resample_filter=resample_filter,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim,
            w_dim,
            self.num_ws,
            num_layers=mapping_layers,
            layer_features=mapping_features,
            lr_multiplier=lr_multiplier,
            w_avg_beta=w_avg_beta,
        )

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def channels(self) -> dict[int, int]:
        return dict(self.init_kwargs["channels"])

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
