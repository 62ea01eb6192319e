"""Pix2PixHD configuration: NVIDIA's option names and defaults, plus named presets.

The field names and defaults follow NVIDIA/pix2pixHD's ``options/base_options.py`` and
``options/train_options.py``, so a user can carry a pix2pixHD command line over one to one
(``--ngf 32 --netG local`` -> ``get_preset("nvidia", ngf=32)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from core.errors import DistillError

NET_G_CHOICES = ("global", "local")
# How a generator takes the edit strength (networks/pix2pixhd/conditional.py): "none" = one fixed
# strength; "scale" = the residual times the strength; "plane" = also a constant strength plane beside the
# image; "modulation" = also a learned per-channel scale and shift of the bottleneck from the strength.
CONDITION_CHOICES = ("none", "scale", "plane", "modulation")
GAN_MODES = ("lsgan", "vanilla")
# The generator's normalisation: "instance" is NVIDIA's (every layer normalised per picture); "none" drops it, so
# no layer can steer per-picture statistics with a local spike (the "droplet" artifact StyleGAN2 diagnosed).
NORM_CHOICES = ("instance", "none")
# The decoder's 2x upsampling: "transpose" is NVIDIA's 3x3 stride-2 transposed conv (uneven kernel overlap, a
# chequer); "resize" is nearest-neighbour 2x then a 3x3 conv (Odena et al.'s resize-convolution).
UPSAMPLE_CHOICES = ("transpose", "resize")


@dataclass
class Pix2PixHDConfig:
    """Generator, discriminator, loss and optimiser settings (NVIDIA pix2pixHD defaults)."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = (
        64  # filters of the outermost generator layer (the global part uses ngf * 2**n_local_enhancers)
    )
    netG: str = "global"  # "global": GlobalGenerator; "local": LocalEnhancer around a global generator
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    residual: bool = (
        False  # output = clamp(input + G(input)): fine detail of the input has a path (not NVIDIA's)
    )
    condition: str = (
        "none"  # strength input (CONDITION_CHOICES): output = clamp(input + strength * G(input, strength))
    )
    n_edits: int = (
        1  # K: edits the strength input holds ([N] for 1, [N, K] above; multi-edit pairs' edit list)
    )
    norm: str = "instance"  # generator normalisation (NORM_CHOICES); the discriminator keeps instance norm
    upsample: str = "transpose"  # decoder upsampling (UPSAMPLE_CHOICES)
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 2
    gan_mode: str = "lsgan"  # "lsgan": MSE on raw D outputs; "vanilla": BCE with logits
    lambda_feat: float = 10.0  # discriminator feature matching
    lambda_vgg: float = 10.0  # VGG19 perceptual loss (NVIDIA weighs it with lambda_feat, also 10)
    lambda_l1: float = 0.0  # optional pixel L1 (not in NVIDIA's recipe)
    lambda_gan: float = 1.0  # weight of the generator's adversarial term (NVIDIA: 1)
    ema: float = (
        0.0  # decay of an exponential moving average of G's weights (e.g. 0.999; 0: none); exported when kept
    )
    lr_decay_steps: int = 0  # also decay the lr linearly to zero over the run's last N steps (of --max-steps)
    lr: float = 2e-4
    beta1: float = 0.5
    niter: int = 100  # epochs at the initial learning rate
    niter_decay: int = 100  # epochs of linear decay to zero

    def __post_init__(self) -> None:
        if self.netG not in NET_G_CHOICES:
            raise DistillError(f"pix2pixhd config: netG must be one of {NET_G_CHOICES}, got {self.netG!r}")
        if self.condition not in CONDITION_CHOICES:
            raise DistillError(
                f"pix2pixhd config: condition must be one of {CONDITION_CHOICES}, got {self.condition!r}"
            )
        if self.condition != "none" and (not self.residual or self.netG != "global"):
            raise DistillError(
                f"pix2pixhd config: condition={self.condition!r} needs the residual global generator "
                "(--residual --netG global): strength 0 must give back the input"
            )
        if not isinstance(self.n_edits, int) or self.n_edits < 1:
            raise DistillError(f"pix2pixhd config: n_edits must be a positive integer, got {self.n_edits!r}")
        if self.n_edits > 1 and self.condition not in ("plane", "modulation"):
            raise DistillError(
                f"pix2pixhd config: {self.n_edits} edits need condition plane or modulation (got "
                f"{self.condition!r}): the generator must see which edits are asked for"
            )
        if self.norm not in NORM_CHOICES:
            raise DistillError(f"pix2pixhd config: norm must be one of {NORM_CHOICES}, got {self.norm!r}")
        if self.upsample not in UPSAMPLE_CHOICES:
            raise DistillError(
                f"pix2pixhd config: upsample must be one of {UPSAMPLE_CHOICES}, got {self.upsample!r}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise DistillError(f"pix2pixhd config: ema must be in [0, 1), got {self.ema!r}")
        if self.gan_mode not in GAN_MODES:
            raise DistillError(
                f"pix2pixhd config: gan_mode must be one of {GAN_MODES}, got {self.gan_mode!r}"
            )
        positive = ("input_nc", "output_nc", "ngf", "ndf", "n_layers_D", "num_D")
        non_negative = (
            "n_downsample_global",
            "n_blocks_global",
            "n_blocks_local",
            "niter",
            "niter_decay",
            "lr_decay_steps",
        )
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise DistillError(
                    f"pix2pixhd config: {name} must be a positive integer, got {getattr(self, name)!r}"
                )
        for name in non_negative:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise DistillError(
                    f"pix2pixhd config: {name} must be an integer >= 0, got {getattr(self, name)!r}"
                )
        if self.netG == "local" and (
            not isinstance(self.n_local_enhancers, int) or self.n_local_enhancers < 1
        ):
            raise DistillError(
                f"pix2pixhd config: n_local_enhancers must be >= 1 with netG='local', got {self.n_local_enhancers!r}"
            )
        for name in ("lambda_feat", "lambda_vgg", "lambda_l1", "lambda_gan"):
            if getattr(self, name) < 0:
                raise DistillError(f"pix2pixhd config: {name} must be >= 0, got {getattr(self, name)!r}")
        if self.lr <= 0 or not 0 <= self.beta1 < 1:
            raise DistillError(
                f"pix2pixhd config: need lr > 0 and 0 <= beta1 < 1, got lr={self.lr}, beta1={self.beta1}"
            )

    @property
    def stride(self) -> int:
        """Input H and W must be multiples of this: one factor 2 per downsampling (and per local enhancer)."""
        if self.netG == "local":
            return 2 ** (self.n_downsample_global + self.n_local_enhancers)
        return 2**self.n_downsample_global

    @property
    def min_size(self) -> int:
        """Smallest input H and W the generator accepts (see :func:`min_input_size`)."""
        local = self.n_local_enhancers if self.netG == "local" else 0
        return min_input_size(self.n_downsample_global, self.n_blocks_global, local)

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


def min_input_size(n_downsampling: int, n_blocks: int, n_local_enhancers: int = 0) -> int:
    """Smallest H/W: the 7x7 reflection pad needs the coarsest input >= 4 px and, when there are residual
    blocks, their 1-px reflection pads need the bottleneck >= 2 px (NVIDIA's code fails below that too)."""
    bottleneck = 2 if n_blocks > 0 else 1
    return 2**n_local_enhancers * max(4, bottleneck * 2**n_downsampling)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Pix2PixHDConfig))


def check_field_names(d: dict[str, Any], what: str) -> None:
    unknown = sorted(set(d) - set(field_names()))
    if unknown:
        raise DistillError(f"pix2pixhd: unknown {what}(s) {unknown}; valid names: {', '.join(field_names())}")


def _nvidia() -> Pix2PixHDConfig:
    """NVIDIA's released high-resolution recipe (``scripts/train_1024p_*.sh``): ``--netG local --ngf 32 --num_D 3``.

    Its inner global generator has ngf 64, the same tensors as the ``global`` preset, so a trained global
    generator initialises it (NVIDIA's two-stage training). ``netG local`` with ngf 64 instead would make a
    730 M-parameter generator (inner global ngf 128); pass ``ngf=64`` to get it.
    """
    return Pix2PixHDConfig(netG="local", ngf=32, num_D=3)


def _global() -> Pix2PixHDConfig:
    """NVIDIA's defaults (netG global): 182 M generator parameters, 109 GFLOP at 256x256, 435 GFLOP at 512x512.

    The seed project's and the distillation paper's student (pix2pixHD at 512 px, default options).
    """
    return Pix2PixHDConfig(netG="global")


def _slim() -> Pix2PixHDConfig:
    """A CPU student: global generator, ngf 32, 3 downsamplings (stride 8), 6 residual blocks, ndf 32.

    Generator cost (2 x multiply-adds of the convolutions): 4.8 GFLOP at 128x128, 19.4 GFLOP at 256x256
    (77 GFLOP at 512), 5.6x less than the ``global`` preset; 7.9 M parameters against 182 M. The two
    discriminators cost 0.67 GFLOP per pass at 128 px. Measured on this machine (2 threads, batch 1, other jobs
    sharing the cores, so upper bounds): a full
    training step (G forward and backward, three D passes, Adam) takes 0.20 s at 128 px and 0.66 s at 256 px;
    inference 47 ms at 128 px and 0.16 s at 256 px. So 10,000 pairs at 128 px are one epoch in about
    35 minutes on 2 cores. The bottleneck (32x32 at 256 px, 256 channels) keeps a face-wide receptive field.
    """
    return Pix2PixHDConfig(
        netG="global", ngf=32, n_downsample_global=3, n_blocks_global=6, ndf=32, n_layers_D=3, num_D=2
    )


def _tiny() -> Pix2PixHDConfig:
    """For tests: a few thousand parameters, 32-64 px inputs, seconds per step on CPU."""
    return Pix2PixHDConfig(
        netG="global",
        ngf=4,
        n_downsample_global=2,
        n_blocks_global=1,
        ndf=4,
        n_layers_D=2,
        num_D=2,
        lambda_vgg=0.0,
    )


PRESETS = {"nvidia": _nvidia, "global": _global, "slim": _slim, "tiny": _tiny}


def get_preset(name: str, **overrides: Any) -> Pix2PixHDConfig:
    """A named configuration (``nvidia``, ``global``, ``slim``, ``tiny``) with fields overridden."""
    if name not in PRESETS:
        raise DistillError(f"pix2pixhd: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]().replace(**overrides)
