"""Image similarity metrics on tensors in [-1, 1]: PSNR and SSIM (Gaussian window, as Wang et al. 2004)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for [N,C,H,W] tensors in [-1,1] (data range 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean SSIM for [N,C,H,W] tensors in [-1,1]; computed on [0,1] with the usual constants."""
    x = (a.float() + 1) / 2
    y = (b.float() + 1) / 2
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    win = _gaussian_window(window, sigma, c, x.device)
    mu_x = F.conv2d(x, win, groups=c)
    mu_y = F.conv2d(y, win, groups=c)
    sxx = F.conv2d(x * x, win, groups=c) - mu_x**2
    syy = F.conv2d(y * y, win, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, win, groups=c) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
