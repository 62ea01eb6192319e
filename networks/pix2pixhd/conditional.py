"""A strength-conditioned Pix2PixHD global generator: one student for the whole range of an edit (or of K edits).

``output = clamp(x + s * G(x, s), -1, 1)`` for a relative strength ``s`` per image (training/strength.py:
1.0 = the entry's alpha). The residual is scaled by ``s``, so ``s = 0`` gives back the input exactly and
``-s`` starts as the opposite edit; how ``G`` itself sees ``s`` is ``cfg.condition``:

- ``scale``: not at all (the change is linear in ``s``; the baseline);
- ``plane``: a constant plane of ``s`` concatenated to the image (4 input channels to the first conv);
- ``modulation``: a small MLP maps ``s`` to a per-channel scale and shift of the bottleneck features,
  applied after the encoder and after every residual block (FiLM; zero-initialised, so it starts as ``scale``).

With ``cfg.n_edits`` K > 1 the strength is a vector ``s`` [N, K] (the multi-edit pairs' edits in their order)
and ``output = clamp(x + |s|_1 * G(x, s), -1, 1)``: ``G`` sees the whole vector (K planes, or the FiLM MLP
over K inputs), and the gate ``|s|_1 = sum_k |s_k|`` is exactly 0 only at ``s = 0``, so all zeros gives back
the input exactly (INT8 too, whose Add and Mul stay float32; fp16 gives it back rounded to float16) while no
mix of edits can cancel it (a learned linear gate ``w . s`` would vanish on a whole hyperplane). The sign and
the mix of the edits are ``G``'s to read from ``s``; the gate only sets the size, which grows linearly with
the edits as the teacher's ``w + sum_k s_k alpha_k d_k`` does. ``scale`` is refused for K > 1 (``G`` would not know which edit);
K output heads (``sum_k s_k G_k``) would cost a full-resolution 7x7 conv per edit.

The layers keep NVIDIA's global-generator layout under ``model.*`` (so :func:`infer_config` reads them);
the modulation MLP is ``film.*``. The ONNX graph has two inputs, ``input`` [N,3,H,W] and ``strength`` [N]
([N, K] for K edits).
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import DistillError
from networks.pix2pixhd.config import Pix2PixHDConfig, min_input_size
from networks.pix2pixhd.layers import ResnetBlock, check_input, global_layers

FILM_HIDDEN = 64


class ConditionalGenerator(nn.Module):
    """The residual global generator with a strength input (see the module docstring)."""

    config: Pix2PixHDConfig  # set by build_generator

    def __init__(self, cfg: Pix2PixHDConfig) -> None:
        super().__init__()
        if cfg.condition == "none" or not cfg.residual or cfg.netG != "global":
            raise DistillError(
                f"ConditionalGenerator needs condition scale/plane/modulation on the residual global "
                f"generator, got condition={cfg.condition!r} residual={cfg.residual} netG={cfg.netG!r}"
            )
        self.condition, self.n_edits = cfg.condition, cfg.n_edits
        self.input_nc, self.output_nc, self.residual = cfg.input_nc, cfg.output_nc, True
        self.stride = 2**cfg.n_downsample_global
        self.min_size = min_input_size(cfg.n_downsample_global, cfg.n_blocks_global)
        extra = cfg.n_edits if cfg.condition == "plane" else 0
        self.model = nn.Sequential(
            *global_layers(
                cfg.input_nc + extra,
                cfg.output_nc,
                cfg.ngf,
                cfg.n_downsample_global,
                cfg.n_blocks_global,
                cfg.norm,
                cfg.upsample,
            )
        )
        self.bottleneck_channels = cfg.ngf * 2**cfg.n_downsample_global
        self.encoder_end = 4 + 3 * cfg.n_downsample_global  # index of the first residual block
        self.film_points = cfg.n_blocks_global + 1
        if cfg.condition == "modulation":
            self.film = nn.Sequential(
                nn.Linear(cfg.n_edits, FILM_HIDDEN),
                nn.ReLU(True),
                nn.Linear(FILM_HIDDEN, 2 * self.bottleneck_channels * self.film_points),
            )

    def init_condition(self) -> None:
        """Zero the modulation's last layer: training starts from the unmodulated (``scale``) generator."""
        if self.condition == "modulation":
            last = self.film[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_nc, self.stride, self.min_size, "ConditionalGenerator")
        k = self.n_edits
        s = strength.reshape(-1) if k == 1 else strength.reshape(-1, k)  # float32 [N] or [N, K] (no cast: the
        # fp16 converter keeps a Cast node's float32 type)
        if not torch.jit.is_tracing() and s.shape[0] != x.shape[0]:
            raise DistillError(f"ConditionalGenerator: {x.shape[0]} images but {s.shape[0]} strengths")
        plane = s.view(-1, k, 1, 1) * torch.ones_like(x[:, :1])
        cond, gate = (s.view(-1, 1), plane) if k == 1 else (s, s.abs().sum(1).view(-1, 1, 1, 1))
        h = torch.cat([x, plane], 1) if self.condition == "plane" else x
        film = None
        if self.condition == "modulation":
            film = self.film(cond).view(-1, self.film_points, 2, self.bottleneck_channels, 1, 1)
        point = 0
        for i, layer in enumerate(self.model):
            if film is not None and i == self.encoder_end:
                h = h * (1 + film[:, point, 0]) + film[:, point, 1]
                point += 1
            h = layer(h)
            if film is not None and isinstance(layer, ResnetBlock):
                h = h * (1 + film[:, point, 0]) + film[:, point, 1]
                point += 1
        return (x + gate * h).clamp(-1.0, 1.0)


def is_conditional(net: nn.Module) -> bool:
    """Whether a generator (or its DDP wrapper) takes a strength input."""
    net = getattr(net, "module", net)
    return getattr(getattr(net, "config", None), "condition", "none") != "none"


def edit_count(net: nn.Module) -> int:
    """K, the edits a conditional generator's strength input holds (1: a [N] strength)."""
    net = getattr(net, "module", net)
    return int(getattr(getattr(net, "config", None), "n_edits", 1))
