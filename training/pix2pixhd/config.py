"""Pix2PixHD configuration: NVIDIA's option names and defaults, plus named presets.

The field names and defaults follow NVIDIA/pix2pixHD's ``options/base_options.py`` and
``options/train_options.py``, so a user can carry a pix2pixHD command line over one to one
(``--ngf 32 --netG local`` -> ``get_preset("nvidia", ngf=32)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from training.errors import DistillError

NET_G_CHOICES = ("global", "local")
GAN_MODES = ("lsgan", "vanilla")


@dataclass
class Pix2PixHDConfig:
    """Generator, discriminator, loss and optimiser settings (NVIDIA pix2pixHD defaults)."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64  # filters of the outermost generator layer (the global part uses ngf * 2**n_local_enhancers)
    netG: str = "global"  # "global": GlobalGenerator; "local": LocalEnhancer around a global generator
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 2
    gan_mode: str = "lsgan"  # "lsgan": MSE on raw D outputs; "vanilla": BCE with logits
    lambda_feat: float = 10.0  # discriminator feature matching
    lambda_vgg: float = 10.0  # VGG19 perceptual loss (NVIDIA weighs it with lambda_feat, also 10)
    lambda_l1: float = 0.0  # optional pixel L1 (not in NVIDIA's recipe)
    lr: float = 2e-4
    beta1: float = 0.5
    niter: int = 100  # epochs at the initial learning rate
    niter_decay: int = 100  # epochs of linear decay to zero

    def __post_init__(self) -> None:
        if self.netG not in NET_G_CHOICES:
            raise DistillError(f"pix2pixhd config: netG must be one of {NET_G_CHOICES}, got {self.netG!r}")
        if self.gan_mode not in GAN_MODES:
            raise DistillError(f"pix2pixhd config: gan_mode must be one of {GAN_MODES}, got {self.gan_mode!r}")
        positive = ("input_nc", "output_nc", "ngf", "ndf", "n_layers_D", "num_D")
        non_negative = ("n_downsample_global", "n_blocks_global", "n_blocks_local", "niter", "niter_decay")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise DistillError(f"pix2pixhd config: {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in non_negative:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise DistillError(f"pix2pixhd config: {name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.netG == "local" and (not isinstance(self.n_local_enhancers, int) or self.n_local_enhancers < 1):
            raise DistillError(
                f"pix2pixhd config: n_local_enhancers must be >= 1 with netG='local', got {self.n_local_enhancers!r}"
            )
        for name in ("lambda_feat", "lambda_vgg", "lambda_l1"):
            if getattr(self, name) < 0:
                raise DistillError(f"pix2pixhd config: {name} must be >= 0, got {getattr(self, name)!r}")
        if self.lr <= 0 or not 0 <= self.beta1 < 1:
            raise DistillError(f"pix2pixhd config: need lr > 0 and 0 <= beta1 < 1, got lr={self.lr}, beta1={self.beta1}")

    @property
    def stride(self) -> int:
        """Input H and W must be multiples of this: one factor 2 per downsampling (and per local enhancer)."""
        if self.netG == "local":
            return 2 ** (self.n_downsample_global + self.n_local_enhancers)
        return 2**self.n_downsample_global

    def replace(self, **overrides: Any) -> Pix2PixHDConfig:
        """A copy with some fields changed; unknown names raise DistillError."""
        check_field_names(overrides, "override")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pix2PixHDConfig:
        """Build from ``asdict(cfg)`` output (as stored in checkpoints); unknown keys raise DistillError."""
        if not isinstance(d, dict):
            raise DistillError(f"pix2pixhd config: expected a dict of options, got {type(d).__name__}")
        check_field_names(d, "config key")
        return cls(**d)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Pix2PixHDConfig))


def check_field_names(d: dict[str, Any], what: str) -> None:
    unknown = sorted(set(d) - set(field_names()))
    if unknown:
        raise DistillError(f"pix2pixhd: unknown {what}(s) {unknown}; valid names: {', '.join(field_names())}")


def _nvidia() -> Pix2PixHDConfig:
    """NVIDIA's 1024p recipe: ``--netG local`` with every other option at its default (inner global ngf 128)."""
    return Pix2PixHDConfig(netG="local")


def _global() -> Pix2PixHDConfig:
    """NVIDIA's defaults with the global generator only (their 512p stage, and the seed project's student)."""
    return Pix2PixHDConfig(netG="global")


def _slim() -> Pix2PixHDConfig:
    """A CPU student: global generator, ngf 32, 3 downsamplings, 6 residual blocks, ndf 32.

    Generator cost (multiply-adds x 2, convolutions only) at 256x256: about 10.8 GFLOP against 90 GFLOP for
    the ``global`` preset (8.4x less), 1.9 M parameters against 45.6 M. At this machine's ~220 GFLOP/s
    conv ceiling the forward pass is ~50 ms at 256 px; a training step (G forward + backward, two
    discriminator passes of about 1.2 GFLOP each at ndf 32, num_D 2) is ~0.4 s at batch 1 on 2 cores,
    so an epoch of 2,000 pairs at 256 px takes roughly 15 minutes (at 128 px, 4x less).
    3 downsamplings (stride 8) keep the bottleneck at 32x32 for 256 px inputs, enough context for a
    face-wide edit, and let 8-pixel-multiple sizes through.
    """
    return Pix2PixHDConfig(
        netG="global", ngf=32, n_downsample_global=3, n_blocks_global=6, ndf=32, n_layers_D=3, num_D=2
    )


def _tiny() -> Pix2PixHDConfig:
    """For tests: a few thousand parameters, 32-64 px inputs, seconds per step on CPU."""
    return Pix2PixHDConfig(
        netG="global", ngf=4, n_downsample_global=2, n_blocks_global=1, ndf=4, n_layers_D=2, num_D=2, lambda_vgg=0.0
    )


PRESETS = {"nvidia": _nvidia, "global": _global, "slim": _slim, "tiny": _tiny}


def get_preset(name: str, **overrides: Any) -> Pix2PixHDConfig:
    """A named configuration (``nvidia``, ``global``, ``slim``, ``tiny``) with fields overridden."""
    if name not in PRESETS:
        raise DistillError(f"pix2pixhd: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]().replace(**overrides)
