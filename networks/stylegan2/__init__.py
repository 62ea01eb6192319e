"""StyleGAN2 generator (NVlabs layout) that loads NVlabs and rosinality checkpoints exactly.

from networks.stylegan2 import load_generator
G = load_generator("network-snapshot.pkl", device="cuda")   # or a rosinality .pt, a state_dict, ...
ws = G.mapping(z, truncation_psi=0.7)                        # [N, num_ws, w_dim]
img = G.synthesis(ws, noise_mode="const")                    # [N, 3, R, R], about [-1, 1]
"""

from networks.stylegan2.checkpoints import (
    FORMAT,
    estimate_w_avg,
    infer_config,
    load_generator,
    read_checkpoint,
    save_generator,
)
from networks.stylegan2.networks import Generator, MappingNetwork, SynthesisNetwork

__all__ = [
    "FORMAT",
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "estimate_w_avg",
    "infer_config",
    "load_generator",
    "read_checkpoint",
    "save_generator",
]
