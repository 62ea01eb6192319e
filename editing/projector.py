"""The legacy edit path: project a photo into StyleGAN2's W space by optimization, edit w, synthesize.

This is the slow baseline the distilled student replaces (DEVELOPERS.md: ~20 s an image on a GPU).
It follows the semantics of NVlabs' stylegan2-ada-pytorch ``projector.py``:

- w_avg and the W spread (root of the summed per-dimension variance) come from ``w_avg_samples``
  mapped z samples (10,000 by default, fixed seed), computed once per generator and cached;
- one w (tiled to all ``num_ws`` layers) and every ``noise_const`` buffer of the synthesis network
  are optimized with Adam (betas 0.9/0.999); the learning rate ramps up over the first 5 % of the
  steps and down with a cosine over the last 25 %;
- Gaussian noise of 0.05 x spread, decaying quadratically to zero over the first 75 %, is added
  to w at every step;
- noise buffers are regularized towards spatially uncorrelated noise at several scales (weight 1e5)
  and re-normalized to zero mean, unit variance after every step.

Distance: with a local torchvision-layout VGG16 weights file (``vgg16_path``) an LPIPS-like
perceptual distance (channel-normalized VGG16 features at five depths, squared difference averaged
over space and summed over layers; images area-downsampled to 256 px first, as NVlabs does).
Without weights (nothing can be downloaded) a pixel distance over an image pyramid: at every level
from full size down to 8 px (area downsampling by 2) the mean squared error plus the mean absolute
error, summed over levels. The coarse levels pull the overall layout and colour into place early,
the full-size level the details.

The generator given is never modified: the optimization runs on a private copy of its synthesis
network, so concurrent calls on one generator are safe.
"""

from __future__ import annotations

import copy
import math
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DistillError
from editing.directions import LatentEdit, apply_edits
from networks.stylegan2.networks import Generator

# ----------------------------------------------------------------------------
# Results and errors.


class ProjectionStopped(Exception):
    """Raised inside :func:`project` when ``should_stop()`` returned True (timeouts, shutdown)."""

    def __init__(self, step: int, steps: int):
        super().__init__(f"projection stopped at step {step} of {steps}")
        self.step = step
        self.steps = steps


@dataclass
class ProjectionResult:
    """The projected latent and the loss curve.

    ``ws``: [1, num_ws, w_dim], the optimized w tiled to every layer (W+ layout, ready for an edit).
    ``losses``: the total loss at each step. ``noise``: the optimized noise buffers by name (on the
    generator's device); :func:`render` uses them to reproduce the projected image exactly.
    """

    ws: torch.Tensor
    losses: list[float]
    noise: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# Distances.


class VGG16Features(nn.Module):
    """VGG16's convolutional trunk in torchvision's layout (``features.N.weight``), returning the
    activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (the layers LPIPS uses)."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    mean: torch.Tensor
    std: torch.Tensor
    TAPS = (3, 8, 15, 22, 29)  # indices of the ReLUs whose outputs are compared

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: [N,3,H,W] in [-1,1] -> list of five feature maps."""
        x = ((images + 1) / 2 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


def load_vgg16(path: str | os.PathLike, device: torch.device) -> VGG16Features:
    """Load VGG16 weights saved by torchvision (``torch.save(vgg16(...).state_dict(), path)``).

    The classifier weights, if present, are ignored; only ``features.*`` is needed.
    """
    if not os.path.isfile(path):
        raise DistillError(
            f"--vgg16 {path}: no such file; give a torchvision VGG16 state_dict (.pth) or omit it"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DistillError(f"--vgg16 {path}: cannot be read as a torch state_dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = VGG16Features()
    feats = {k: v for k, v in state.items() if k.startswith("features.")} if isinstance(state, dict) else {}
    expected = {k for k in net.state_dict() if k.startswith("features.")}
    if set(feats) != expected:
        raise DistillError(
            f"--vgg16 {path}: not a torchvision VGG16 state_dict (expected keys features.0.weight ... "
            f"features.28.bias, found {sorted(feats)[:4]}...); save it with torch.save(torchvision.models.vgg16(...).state_dict())"
        )
    try:
        net.load_state_dict(feats, strict=False)
    except RuntimeError as exc:
        raise DistillError(f"--vgg16 {path}: weights do not match VGG16's shapes ({exc})") from exc
    return net.eval().requires_grad_(False).to(device)


class PerceptualDistance(nn.Module):
    """LPIPS-like distance on VGG16 features: unit-normalize each feature vector over channels,
    average the squared difference over space, sum over the five layers (uniform layer weights,
    LPIPS' learned linear weights cannot be downloaded here)."""

    def __init__(self, vgg: VGG16Features, target: torch.Tensor):
        super().__init__()
        self.vgg = vgg
        self.target_feats = [f.detach() for f in self._features(target)]

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.shape[-1] > 256:
            images = F.interpolate(images, size=(256, 256), mode="area")
        return [f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt() for f in self.vgg(images)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self._features(images)
        return cast(
            torch.Tensor,
            sum((a - b).square().sum(dim=1).mean() for a, b in zip(feats, self.target_feats, strict=True)),
        )


class PyramidPixelDistance(nn.Module):
    """Pixel distance over an image pyramid: sum over levels (full size, /2, /4, ... while the
    side stays >= 8 px) of mean squared error + mean absolute error, images in [-1,1]."""

    def __init__(self, target: torch.Tensor, min_size: int = 8):
        super().__init__()
        self.min_size = min_size
        self.target_levels = [t.detach() for t in self._pyramid(target)]

    def _pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        levels = [images]
        while min(levels[-1].shape[-2:]) // 2 >= self.min_size:
            levels.append(F.avg_pool2d(levels[-1], kernel_size=2))
        return levels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cast(
            torch.Tensor,
            sum(
                F.mse_loss(a, b) + F.l1_loss(a, b)
                for a, b in zip(self._pyramid(images), self.target_levels, strict=True)
            ),
        )


# ----------------------------------------------------------------------------
# W statistics, cached per generator.

_W_STATS: weakref.WeakKeyDictionary[nn.Module, dict[int, tuple[torch.Tensor, float]]] = (
    weakref.WeakKeyDictionary()
)


@torch.no_grad()
def w_stats(G: Generator, num_samples: int = 10_000, batch: int = 2_000) -> tuple[torch.Tensor, float]:
    """(w_avg [1,1,w_dim], spread) from ``num_samples`` mapped z (fixed seed 123, as NVlabs).

    spread = sqrt(sum over dims of the variance of w): the typical distance of a w from w_avg.
    Cached per generator object, so a service pays for it once.
    """
    cache = _W_STATS.setdefault(G, {})
    if num_samples in cache:
        return cache[num_samples]
    device = _device_of(G)
    gen = torch.Generator().manual_seed(123)
    chunks = []
    for start in range(0, num_samples, batch):
        z = torch.randn(min(batch, num_samples - start), G.z_dim, generator=gen).to(device)
        chunks.append(G.mapping(z, truncation_psi=1.0)[:, :1, :].float())
    w = torch.cat(chunks)  # [N, 1, C]
    w_avg = w.mean(dim=0, keepdim=True)
    spread = float(((w - w_avg).square().sum() / num_samples).sqrt())
    cache[num_samples] = (w_avg, spread)
    return w_avg, spread


def _device_of(G: Generator) -> torch.device:
    return next(G.parameters()).device


# ----------------------------------------------------------------------------
# Schedules and the noise regularizer.


def learning_rate(step: int, steps: int, lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """NVlabs' schedule: linear ramp-up over ``rampup`` of the steps, cosine ramp-down over the last ``rampdown``."""
    t = step / steps
    down = 0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / rampdown) * math.pi)
    return lr * down * min(1.0, t / rampup)


def w_noise_scale(step: int, steps: int, spread: float, factor: float = 0.05, ramp: float = 0.75) -> float:
    """Std of the exploration noise added to w: ``factor x spread``, decaying quadratically to 0 at ``ramp``."""
    return spread * factor * max(0.0, 1.0 - (step / steps) / ramp) ** 2


def noise_regularization(buffers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation at a one-pixel shift (both axes) of every noise map, repeated on
    2x average-pooled copies down to 8 px: zero for spatially white noise, large when the noise
    buffers start encoding image structure."""
    reg = torch.zeros((), device=buffers[0].device)
    for buf in buffers:
        noise = buf.reshape(1, 1, *buf.shape[-2:])
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


# ----------------------------------------------------------------------------
# Projection.


def _check_target(G: Generator, target: torch.Tensor) -> None:
    expected = (1, 3, G.img_resolution, G.img_resolution)
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != expected:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise DistillError(
            f"projection target has shape {shape}; the teacher needs {expected} in [-1,1] "
            f"(center-crop and resize the photo to {G.img_resolution} px first)"
        )


def project(
    G: Generator,
    target: torch.Tensor,
    *,
    steps: int = 1000,
    lr: float = 0.1,
    vgg16_path: str | os.PathLike | None = None,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    w_avg_samples: int = 10_000,
    noise_weight: float = 1e5,
) -> ProjectionResult:
    """Find the w (tiled to W+) whose synthesis best matches ``target`` [1,3,R,R] in [-1,1].

    ``should_stop()`` is polled before every step; when it returns True, :class:`ProjectionStopped`
    is raised (the service's timeout). ``progress(step, steps, loss)`` is called after every step.
    Runs on G's device; G itself is left untouched.
    """
    _check_target(G, target)
    if steps < 1:
        raise DistillError(f"projection steps must be >= 1, got {steps}")
    device = _device_of(G)
    target = target.detach().to(device=device, dtype=torch.float32)
    w_avg, spread = w_stats(G, w_avg_samples)

    synthesis = copy.deepcopy(G.synthesis).eval().requires_grad_(False)
    noise_bufs = {name: buf for name, buf in synthesis.named_buffers() if name.endswith("noise_const")}
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for buf in noise_bufs.values():
            buf.copy_(torch.randn(buf.shape, generator=gen, device=device))
    for buf in noise_bufs.values():
        buf.requires_grad_(True)

    distance: nn.Module = (
        PerceptualDistance(load_vgg16(vgg16_path, device), target)
        if vgg16_path
        else PyramidPixelDistance(target)
    )
    w_opt = w_avg.clone().requires_grad_(True)  # [1, 1, C]
    optimizer = torch.optim.Adam([w_opt, *noise_bufs.values()], lr=lr, betas=(0.9, 0.999))
    losses: list[float] = []
    for step in range(steps):
        if should_stop is not None and should_stop():
            raise ProjectionStopped(step, steps)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        sigma = w_noise_scale(step, steps, spread)
        w_noise = torch.randn(w_opt.shape, generator=gen, device=device) * sigma
        ws = (w_opt + w_noise).repeat(1, G.num_ws, 1)
        images = synthesis(ws, noise_mode="const")
        dist = distance(images)
        loss = dist + noise_weight * noise_regularization(list(noise_bufs.values())) if noise_bufs else dist
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for buf in noise_bufs.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps, losses[-1])

    for buf in noise_bufs.values():
        buf.requires_grad_(False)
    ws = w_opt.detach().repeat(1, G.num_ws, 1)
    noise = {name: buf.detach() for name, buf in noise_bufs.items()}
    return ProjectionResult(ws=ws, losses=losses, noise=noise)


@torch.no_grad()
def render(G: Generator, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Synthesize ``ws`` [N,num_ws,w_dim] with the given noise buffers (from a projection) on a copy
    of G's synthesis network; without ``noise``, G's own constant noise."""
    synthesis = G.synthesis
    if noise:
        synthesis = copy.deepcopy(G.synthesis)
        buffers = dict(synthesis.named_buffers())
        for name, value in noise.items():
            buffers[name].copy_(value)
    return synthesis(ws.to(_device_of(G)), noise_mode="const")


def legacy_edit(
    G: Generator,
    target: torch.Tensor,
    direction: torch.Tensor,
    alpha: float,
    layers: Sequence[int] = (0, 8),
    steps: int = 1000,
    normalize: bool = False,
    **kw: Any,
) -> torch.Tensor:
    """The seed system's edit: project ``target``, add ``alpha x direction`` on W+ ``layers``
    ([start, stop)), synthesize with the projected noise. Returns [1,3,R,R] in [-1,1].

    Extra keywords go to :func:`project` (lr, vgg16_path, seed, should_stop, progress, ...).
    """
    edit = LatentEdit(direction, alpha, (layers[0], layers[1]))
    return legacy_edits(G, target, [edit], steps=steps, normalize=normalize, **kw)


def legacy_edits(
    G: Generator,
    target: torch.Tensor,
    edits: Sequence[LatentEdit],
    steps: int = 1000,
    normalize: bool = False,
    **kw: Any,
) -> torch.Tensor:
    """:func:`legacy_edit` with several edits: project ``target`` once, add ``sum_k alpha_k d_k`` (each on its
    layers, :func:`editing.directions.apply_edits`), synthesize with the projected noise."""
    result = project(G, target, steps=steps, **kw)
    moved = [LatentEdit(e.direction.to(result.ws.device), e.alpha, e.layers) for e in edits]
    return render(G, apply_edits(result.ws, moved, normalize), result.noise)
