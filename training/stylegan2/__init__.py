"""StyleGAN2 generator (NVlabs layout) that loads NVlabs and rosinality checkpoints exactly."""

from training.stylegan2.checkpoints import (
           FORMAT,
           infer_config,
           load_generator,
           read_checkpoint,
           save_generator,
)
from training.stylegan2.networks import Generator, MappingNetwork, SynthesisNetwork

__all__ = ["FORMAT", "Generator", "MappingNetwork", "SynthesisNetwork", "infer_config", "load_generator",
           "read_checkpoint", "save_generator"]
