"""NVIDIA pix2pixHD's objective: one G and one D step against the same discriminator weights, AMP, the lr schedule, G's EMA."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.errors import DistillError
from networks.pix2pixhd import (
    GANLoss,
    Pix2PixHDConfig,
    feature_matching_loss,
)


@dataclass(frozen=True)
class AmpMode:
    """Autocast dtype (None: float32) and whether fp16 loss scaling is on."""

    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def scaled(self) -> bool:
        return self.dtype == torch.float16


def resolve_amp(name: str, device: torch.device) -> AmpMode:
    """``auto``: bf16 on CUDA GPUs that support it, else fp16 with a GradScaler; float32 on CPU.

    bf16 autocast is allowed on CPU but measured 20-30x slower than float32 for the slim student's
    training step here (torch 2.13, AVX-512 EPYC), so ``auto`` never picks it there.
    """
    if name == "auto":
        if device.type != "cuda":
            return AmpMode(None)
        return AmpMode(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if name == "fp16" and device.type != "cuda":
        raise DistillError("--amp fp16 needs a CUDA device; use --amp bf16 or off on CPU")
    return AmpMode({"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name])


def learning_rate(cfg: Pix2PixHDConfig, epoch: int) -> float:
    """NVIDIA's schedule as a function of the 0-based epoch: lr for niter epochs, then linear decay to 0."""
    if epoch < cfg.niter or cfg.niter_decay == 0:
        return cfg.lr
    return cfg.lr * max(0.0, 1.0 - (epoch - cfg.niter) / cfg.niter_decay)


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Parameters of ``net`` do not require grad inside the block (gradients still flow to its input)."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _split_batch(
    preds: list[list[torch.Tensor]], n: int
) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    return [[f[:n] for f in scale] for scale in preds], [[f[n:] for f in scale] for scale in preds]


class Pix2PixHDObjective:
    """One pix2pixHD training iteration (G and D forward, backward, Adam step) plus optimiser state.

    ``G`` and ``D`` may be DistributedDataParallel wrappers. D's loss runs the wrapped D once on the
    fake and real pairs stacked along the batch (per-sample InstanceNorm makes that identical to two
    passes); the generator's adversarial pass uses the unwrapped D with frozen parameters, so D's
    gradient all-reduce happens once per iteration, on D's own loss.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        cfg: Pix2PixHDConfig,
        device: torch.device,
        amp: AmpMode,
        vgg: nn.Module | None = None,
    ) -> None:
        self.G, self.D, self.cfg, self.device, self.amp = G, D, cfg, device, amp
        self.g_net, self.d_net = unwrap(G), unwrap(D)
        self.vgg = vgg
        self.gan = GANLoss(cfg.gan_mode)
        betas = (cfg.beta1, 0.999)
        self.opt_G = torch.optim.Adam(self.g_net.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.d_net.parameters(), lr=cfg.lr, betas=betas)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp.scaled)
        self.g_ema = copy.deepcopy(self.g_net).eval().requires_grad_(False) if cfg.ema > 0 else None
        self.terms = ["G_GAN", "G_feat"] + (["G_vgg"] if vgg is not None and cfg.lambda_vgg > 0 else [])
        self.terms += ["G_l1"] if cfg.lambda_l1 > 0 else []

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp.dtype, enabled=self.amp.dtype is not None)

    def step(
        self, a: torch.Tensor, b: torch.Tensor, strength: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Train on one batch of inputs ``a`` and targets ``b`` ([N,3,H,W] in [-1,1]); detached losses.

        ``strength`` [N]: each pair's relative edit strength, for a conditional generator (cfg.condition)."""
        assert a.shape == b.shape and a.dim() == 4, (a.shape, b.shape)
        n = a.shape[0]
        cfg = self.cfg
        with self._autocast():
            fake = self.G(a) if cfg.condition == "none" else self.G(a, strength)
            pairs = torch.cat([torch.cat([a, fake.detach()], 1), torch.cat([a, b], 1)], 0)
            pred_fake_d, pred_real = _split_batch(self.D(pairs), n)
            loss_D_fake = self.gan(pred_fake_d, False)
            loss_D_real = self.gan(pred_real, True)
            loss_D = 0.5 * (loss_D_fake + loss_D_real)
            with frozen(self.d_net):
                pred_fake = self.d_net(torch.cat([a, fake], 1))
            loss_G_GAN = self.gan(pred_fake, True) * cfg.lambda_gan
            loss_G_feat = feature_matching_loss(pred_fake, pred_real, cfg.lambda_feat)
            loss_G = loss_G_GAN + loss_G_feat
            losses = {"G_GAN": loss_G_GAN, "G_feat": loss_G_feat}
            if self.vgg is not None and cfg.lambda_vgg > 0:
                losses["G_vgg"] = self.vgg(fake.float(), b.float()) * cfg.lambda_vgg
                loss_G = loss_G + losses["G_vgg"]
            if cfg.lambda_l1 > 0:
                losses["G_l1"] = F.l1_loss(fake.float(), b.float()) * cfg.lambda_l1
                loss_G = loss_G + losses["G_l1"]
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_G).backward()
        self.scaler.step(self.opt_G)
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_D).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        self._update_ema()
        losses.update(G=loss_G, D=loss_D, D_real=loss_D_real, D_fake=loss_D_fake)
        return {k: v.detach().float() for k, v in losses.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.g_ema is None:
            return
        for e, p in zip(self.g_ema.parameters(), self.g_net.parameters(), strict=True):
            e.lerp_(p.detach().to(e.dtype), 1.0 - self.cfg.ema)
        for e, b in zip(self.g_ema.buffers(), self.g_net.buffers(), strict=True):
            e.copy_(b)

    @property
    def g_eval(self) -> nn.Module:
        """The generator the outputs are judged on: the moving average when one is kept."""
        return self.g_ema if self.g_ema is not None else self.g_net

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer_G": self.opt_G.state_dict(),
            "optimizer_D": self.opt_D.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_G.load_state_dict(state["optimizer_G"])
        self.opt_D.load_state_dict(state["optimizer_D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
