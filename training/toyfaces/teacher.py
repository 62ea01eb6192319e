"""Teacher training for the toy-face domain: regress the project's StyleGAN2 ``G(z)`` onto the renderer.

There is no discriminator: for every z the renderer draws the face of ``params_from_z(z)`` and the
generator is trained to reproduce it (multi-scale L1 + image-gradient L1, optionally a perceptual
loss on the attribute model's features and an attribute-consistency loss read by the same model).
The result is a genuine StyleGAN2 (mapping network, W+, modulated convs, skip toRGB; loadable by
``networks.stylegan2.load_generator``) whose latent space is organised by the renderer's
attributes, which is what the rest of the pipeline needs from a teacher. It is not a GAN: its
samples are as sharp as the regression gets them, and the README says so.

Runs are resumable: ``RUN/checkpoints/latest.pt`` is written atomically every ``--checkpoint-every``
steps, at the end, and on SIGINT/SIGTERM; re-running the same command with ``--resume`` continues
exactly (the batch of step s depends only on (seed, s)). ``RUN/teacher.pt`` (the EMA generator in
``save_generator``'s format) is refreshed with every checkpoint, ``RUN/metrics.jsonl`` logs losses
and held-out PSNR against the renderer, ``RUN/samples/`` holds renderer-vs-teacher grids.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.atomic import atomic_torch_save, atomic_write_json
from core.errors import DistillError
from core.runfiles import CHECKPOINT, METRICS, RUN_JSON, SAMPLES, append_jsonl, truncate_jsonl
from editing.images import from_uint8, make_grid, save_image, to_uint8
from networks.stylegan2 import Generator, save_generator
from training.devices import cpu_has_native_bf16
from training.metrics import psnr
from training.toyfaces.renderer import NUM_PARAMS, params_from_z, render, sample_z

CHECKPOINT_FORMAT = "toyfaces-teacher-train/1"
HELD_OUT_SEED0 = (
    20_000_000  # held-out z are sample_z(seed) for seeds from here; training z come from (seed, step)
)
DEFAULT_CHANNELS = {4: 256, 8: 256, 16: 192, 32: 96, 64: 48, 128: 24}


@dataclass
class TeacherConfig:
    """Generator architecture, losses and optimisation of one teacher run (stored in its checkpoints)."""

    resolution: int = 128
    z_dim: int = 128
    w_dim: int = 256
    mapping_layers: int = 4
    channels: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    batch: int = 16
    lr: float = 2e-3
    mapping_lr_multiplier: float = 1.0
    l1_scales: int = 4
    grad_weight: float = 1.0
    perceptual_weight: float = 0.0
    attribute_weight: float = 0.0
    attribute_model: str | None = None
    ema_kimg: float = 5.0
    precision: str = "auto"
    seed: int = 0
    eval_faces: int = 64
    aligned: bool = (
        True  # FFHQ-like canonical pose (renderer.POSE held fixed); False: the renderer's pose jitter
    )
    init: str | None = (
        None  # warm start: a teacher.pt of the same architecture (weights only, fresh optimiser)
    )

    def __post_init__(self) -> None:
        self.channels = {int(k): int(v) for k, v in self.channels.items()}
        need = [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]
        if self.resolution < 8 or 2 ** int(math.log2(self.resolution)) != self.resolution:
            raise DistillError(f"--resolution {self.resolution}: must be a power of two >= 8")
        if sorted(self.channels) != need:
            raise DistillError(f"--channels must give every resolution {need}, got {sorted(self.channels)}")
        if self.z_dim < NUM_PARAMS:
            raise DistillError(
                f"--z-dim {self.z_dim}: the renderer reads {NUM_PARAMS} dims of z; use >= {NUM_PARAMS}"
            )
        if self.precision not in ("auto", "bf16", "fp32"):
            raise DistillError(f"--precision {self.precision!r}: choose auto, bf16 or fp32")
        if (self.perceptual_weight > 0 or self.attribute_weight > 0) and not self.attribute_model:
            raise DistillError("--perceptual/--attribute-weight need --attribute-model PATH.onnx")


def build_generator(cfg: TeacherConfig) -> Generator:
    """The project's StyleGAN2 Generator with the run's (small) architecture."""
    return Generator(
        z_dim=cfg.z_dim,
        w_dim=cfg.w_dim,
        img_resolution=cfg.resolution,
        mapping_layers=cfg.mapping_layers,
        channels=cfg.channels,
        lr_multiplier=cfg.mapping_lr_multiplier,
    )


def make_batch(
    seed: int, step: int, batch: int, z_dim: int, resolution: int, aligned: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [B,z_dim], renderer targets [B,3,R,R] in [-1,1]) for one step; a pure function of (seed, step)."""
    z = np.random.default_rng([seed, step]).standard_normal((batch, z_dim))
    images = np.stack([render(params_from_z(zi, aligned), resolution) for zi in z])
    return torch.from_numpy(z).float(), from_uint8(images)


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset over step indices, so DataLoader workers can render ahead of the trainer."""

    def __init__(self, cfg: TeacherConfig, start: int, stop: int) -> None:
        self.cfg, self.start, self.stop = cfg, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        return make_batch(c.seed, self.start + i, c.batch, c.z_dim, c.resolution, c.aligned)


def held_out(cfg: TeacherConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation set: z = sample_z(seed) for ``eval_faces`` seeds, and their renders."""
    z = np.stack([sample_z(HELD_OUT_SEED0 + i, cfg.z_dim) for i in range(cfg.eval_faces)])
    images = np.stack([render(params_from_z(zi, cfg.aligned), cfg.resolution) for zi in z])
    return torch.from_numpy(z).float(), from_uint8(images)


def warm_start(G: Generator, path: str | Path) -> None:
    """Copy the weights of the teacher at ``path`` into ``G`` (same architecture), e.g. the committed teacher.pt."""
    from networks.stylegan2 import load_generator

    if not Path(path).is_file():
        raise DistillError(
            f"--init {path}: not found; give a teacher.pt (e.g. model_zoo/toyfaces-age/teacher.pt)"
        )
    source = load_generator(path)
    mine, theirs = G.state_dict(), source.state_dict()
    mismatch = sorted(
        k
        for k in mine.keys() | theirs.keys()
        if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape
    )
    if mismatch:
        raise DistillError(
            f"--init {path}: a different architecture ({len(mismatch)} tensors differ, e.g. {mismatch[0]}); "
            "train with the same --resolution/--channels/--w-dim/--mapping-layers or start without --init"
        )
    G.load_state_dict(theirs)


def trained_aligned(G: Generator) -> bool:
    """Whether a loaded toy-face teacher was trained on the aligned domain (teachers from before it were not)."""
    meta = (getattr(G, "checkpoint_info", None) or {}).get("metadata") or {}
    config = (meta.get("toyfaces") or {}).get("config")
    return True if config is None else bool(config.get("aligned", False))


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class RegressionLoss(torch.nn.Module):
    """Multi-scale L1 + gradient L1 (+ attribute-model feature L1 and attribute consistency)."""

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attr = None
        if cfg.attribute_model and (cfg.perceptual_weight > 0 or cfg.attribute_weight > 0):
            from training.toyfaces.attributes import load_torch

            self.attr = load_torch(cfg.attribute_model)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        assert fake.shape == real.shape, (fake.shape, real.shape)
        fake, real = fake.float(), real.float()
        terms: dict[str, torch.Tensor] = {}
        l1, f, r = 0.0, fake, real
        for s in range(self.cfg.l1_scales):
            if s:
                f, r = F.avg_pool2d(f, 2), F.avg_pool2d(r, 2)
            l1 = l1 + (f - r).abs().mean()
        terms["l1"] = l1 / self.cfg.l1_scales
        if self.cfg.grad_weight > 0:
            (fx, fy), (rx, ry) = image_gradients(fake), image_gradients(real)
            terms["grad"] = self.cfg.grad_weight * ((fx - rx).abs().mean() + (fy - ry).abs().mean())
        if self.attr is not None and self.cfg.perceptual_weight > 0:
            with torch.no_grad():
                real_feats = self.attr.features(real)
            fake_feats = self.attr.features(fake)
            terms["perceptual"] = (
                self.cfg.perceptual_weight
                * sum((a - b).abs().mean() for a, b in zip(fake_feats, real_feats, strict=True))
                / len(real_feats)
            )
        if self.attr is not None and self.cfg.attribute_weight > 0:
            from training.toyfaces.attributes import NUM_ATTRIBUTES

            with torch.no_grad():
                target = self.attr(real)[:, :NUM_ATTRIBUTES]
            terms["attributes"] = (
                self.cfg.attribute_weight * (self.attr(fake)[:, :NUM_ATTRIBUTES] - target).abs().mean()
            )
        terms["total"] = sum(terms.values())
        return terms


class TeacherTrainer:
    """Owns G, its EMA, the optimiser and the run folder; ``train`` runs until a stop condition."""

    def __init__(
        self, run_dir: str | Path, cfg: TeacherConfig, device: torch.device | str = "cpu", warm: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.G = build_generator(cfg).to(self.device).train()
        if cfg.init and warm:
            warm_start(self.G, cfg.init)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
        self.loss = RegressionLoss(cfg).to(self.device)
        self.step = 0
        self.last_psnr: float | None = None
        self._held_out: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.cfg),
            "step": self.step,
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt": self.opt.state_dict(),
            "last_psnr": self.last_psnr,
        }

    def save(self) -> None:
        """Atomically write latest.pt and teacher.pt (the EMA generator, loadable by load_generator)."""
        atomic_torch_save(self.checkpoint_path, self.state())
        save_generator(
            self.G_ema,
            self.run_dir / "teacher.pt",
            extra={
                "toyfaces": {
                    "step": self.step,
                    "config": asdict(self.cfg),
                    "held_out_psnr": self.last_psnr,
                    "trained_by": "regression onto training.toyfaces.renderer (no discriminator)",
                }
            },
        )

    @classmethod
    def resume(cls, run_dir: str | Path, device: torch.device | str = "cpu") -> TeacherTrainer:
        path = Path(run_dir) / CHECKPOINT
        if not path.is_file():
            raise DistillError(f"{path}: no checkpoint to resume; start the run without --resume")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DistillError(f"{path}: unreadable checkpoint ({e}); delete it to restart the run") from e
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise DistillError(f"{path}: not a toy-face teacher checkpoint ({CHECKPOINT_FORMAT})")
        config = {"aligned": False, **ckpt["config"]}  # runs from before the aligned domain were unaligned
        self = cls(run_dir, TeacherConfig(**config), device, warm=False)
        self.G.load_state_dict(ckpt["G"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.opt.load_state_dict(ckpt["opt"])
        self.step = int(ckpt["step"])
        self.last_psnr = ckpt.get("last_psnr")
        truncate_jsonl(self.run_dir / METRICS, lambda row: row.get("step", 0) <= self.step)
        return self

    # -- training --------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16)

    @property
    def uses_bf16(self) -> bool:
        """auto: bf16 on CUDA and on CPUs with native bf16 (measured 1.9x faster per step at batch 8 on
        AVX-512 BF16); fp32 elsewhere, where emulated bf16 was measured ~10x slower."""
        if self.cfg.precision != "auto":
            return self.cfg.precision == "bf16"
        return self.device.type == "cuda" or cpu_has_native_bf16()

    def train_step(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        z, target = z.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
        ws = self.G.mapping(z)  # fp32: the mapping is cheap and its w_avg tracking needs fp32
        with self._autocast():
            fake = self.G.synthesis(ws, noise_mode="const")
            terms = self.loss(fake, target, z)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt.step()
        self.step += 1
        self._update_ema()
        return {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        half_life = self.cfg.ema_kimg * 1000
        beta = min(0.5 ** (self.cfg.batch / max(half_life, 1e-8)), (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    @torch.no_grad()
    def evaluate(self, write_samples: bool = True) -> dict[str, float]:
        """Held-out PSNR of the EMA generator against the renderer (and a sample grid)."""
        if self._held_out is None:
            self._held_out = held_out(self.cfg)
        z, real = self._held_out
        fakes = []
        for i in range(0, len(z), 32):
            ws = self.G_ema.mapping(z[i : i + 32].to(self.device))
            with self._autocast():
                fakes.append(self.G_ema.synthesis(ws, noise_mode="const").float().clamp(-1, 1).cpu())
        fake = torch.cat(fakes)
        value = float(psnr(fake, real).mean())
        if write_samples:
            n = min(8, len(z))
            grid = make_grid([list(to_uint8(real[:n])), list(to_uint8(fake[:n]))])
            save_image(self.run_dir / SAMPLES / f"step{self.step:07d}.png", grid)
        return {"held_out_psnr": value}

    def train(
        self,
        steps: int,
        minutes: float | None = None,
        checkpoint_every: int = 500,
        eval_every: int = 500,
        workers: int = 0,
        progress: bool = True,
    ) -> str:
        """Train up to ``steps`` total steps (or ``minutes``); returns why it stopped."""
        stop = {"reason": None}

        def on_signal(signum, _frame):
            stop["reason"] = signal.Signals(signum).name

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.run_dir / RUN_JSON,
            {"config": asdict(self.cfg), "device": str(self.device), "bf16": self.uses_bf16},
        )
        t_end = time.monotonic() + 60 * minutes if minutes else math.inf
        loader = torch.utils.data.DataLoader(
            StepBatches(self.cfg, self.step, steps),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        bar = tqdm(total=steps, initial=self.step, desc="train teacher", unit="step", disable=not progress)
        t0, s0 = time.monotonic(), self.step
        reason = "steps"
        try:
            for z, target in loader:
                terms = self.train_step(z, target)
                bar.update()
                bar.set_postfix(loss=f"{terms['total']:.4f}")
                row = {
                    "step": self.step,
                    **{k: round(v, 6) for k, v in terms.items()},
                    "steps_per_s": round((self.step - s0) / max(time.monotonic() - t0, 1e-9), 4),
                }
                if self.step % eval_every == 0 or self.step == steps:
                    row.update(self.evaluate())
                    self.last_psnr = row["held_out_psnr"]
                append_jsonl(self.run_dir / METRICS, row)
                if stop["reason"] or time.monotonic() > t_end:
                    reason = stop["reason"] or "minutes"
                    break
                if self.step % checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        self.save()
        return reason
