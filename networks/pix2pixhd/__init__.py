"""Pix2PixHD student: NVIDIA-compatible generators and discriminators, losses, checkpoint loading."""

from networks.pix2pixhd.checkpoints import (
    CHECKPOINT_FORMAT,
    describe,
    infer_config,
    load_generator,
    save_generator,
)
from networks.pix2pixhd.config import PRESETS, Pix2PixHDConfig, get_preset
from networks.pix2pixhd.layers import ResnetBlock
from networks.pix2pixhd.losses import (
    GANLoss,
    VGGLoss,
    build_vgg_loss,
    feature_matching_loss,
    load_vgg19_features,
)
from networks.pix2pixhd.networks import (
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    build_discriminator,
    build_generator,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRESETS",
    "GANLoss",
    "GlobalGenerator",
    "LocalEnhancer",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "Pix2PixHDConfig",
    "ResnetBlock",
    "VGGLoss",
    "build_discriminator",
    "build_generator",
    "build_vgg_loss",
    "describe",
    "feature_matching_loss",
    "get_preset",
    "infer_config",
    "load_generator",
    "load_vgg19_features",
    "save_generator",
]
