"""`distill teacher`: inspect a StyleGAN2 checkpoint, sample a grid from it, or make a tiny random one.

    distill teacher info ffhq.pkl
    distill teacher sample ffhq.pkl --num 16 --truncation 0.7 --seed 0 --out grid.png
    distill teacher convert network-snapshot.pkl --out teacher.pt   # any format -> this project's .pt
    distill teacher random --resolution 32 --out tiny.pt      # UNTRAINED, for smoke tests only

Seeds follow the pair generator's rule (seed s -> z from a CPU ``torch.Generator`` seeded by s), so
``sample --seed 5`` shows the same face as pair 5 of ``distill pairs`` with the same truncation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from core.errors import FieldError
from networks.stylegan2 import Generator, estimate_w_avg, save_generator

UNTRAINED_NOTE = (
    "UNTRAINED: random StyleGAN2 weights for smoke tests and the offline quickstart; "
    "its images are abstract patterns, not faces"
)


def describe(G: Generator) -> dict[str, Any]:
    """The inferred configuration of a loaded generator, as printed by ``teacher info``."""
    info = getattr(G, "checkpoint_info", {})
    kw = G.init_kwargs
    metadata = info.get("metadata") or {}
    return {
        "note": metadata.get("description") if metadata.get("untrained") else None,
        "path": info.get("path"),
        "format": info.get("format"),
        "resolution": G.img_resolution,
        "img_channels": G.img_channels,
        "z_dim": G.z_dim,
        "w_dim": G.w_dim,
        "num_ws": G.num_ws,
        "mapping_layers": kw["mapping_layers"],
        "channels": {str(r): c for r, c in sorted(kw["channels"].items())},
        "architecture": kw["architecture"],
        "conv_clamp": kw["conv_clamp"],
        "lr_multiplier": kw["lr_multiplier"],
        "w_avg": info.get("w_avg_source"),
        "parameters": sum(p.numel() for p in G.parameters()),
    }


@torch.no_grad()
def sample_images(
    G: Generator,
    seeds: list[int],
    truncation: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """Images [N,3,H,W] (CPU, float32) for ``seeds``, generated in batches on G's device."""
    from training.directions import z_from_seeds

    device = G.w_avg.device
    out = []
    for start in tqdm(range(0, len(seeds), batch_size), desc="sample", unit="batch", disable=not progress):
        z = z_from_seeds(seeds[start : start + batch_size], G.z_dim).to(device)
        out.append(G(z, truncation_psi=truncation, noise_mode=noise_mode).float().cpu())
    return torch.cat(out)


def write_per_seed(
    G: Generator,
    seeds: list[int],
    out_dir: str | Path,
    truncation: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = 16,
    progress: bool = False,
) -> Path:
    """One PNG per seed (``seed000042.png``) in ``out_dir``, a batch at a time (thousands of 1024 px images
    never sit in memory together), and ``seeds.csv`` (``seed,file``) listing them: the images to score with
    an outside tool into the ``seed,<score>`` CSV that ``direction fit --scores`` reads. Returns the CSV."""
    from editing.images import save_image, to_uint8
    from training.directions import z_from_seeds

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = G.w_avg.device
    rows = ["seed,file"]
    for start in tqdm(range(0, len(seeds), batch_size), desc="sample", unit="batch", disable=not progress):
        chunk = seeds[start : start + batch_size]
        z = z_from_seeds(chunk, G.z_dim).to(device)
        images = to_uint8(G(z, truncation_psi=truncation, noise_mode=noise_mode).float().cpu())
        for seed, image in zip(chunk, images, strict=True):
            save_image(out / f"seed{seed:06d}.png", image)
            rows.append(f"{seed},seed{seed:06d}.png")
    csv = out / "seeds.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return csv


def random_generator(
    resolution: int,
    seed: int = 0,
    z_dim: int = 64,
    w_dim: int = 64,
    mapping_layers: int = 2,
    channel_base: int | None = None,
    channel_max: int = 64,
) -> Generator:
    """A tiny randomly initialised generator (NVlabs init) with ``w_avg`` set to the mean mapped w."""
    if resolution < 4 or resolution & (resolution - 1):
        raise FieldError("resolution", f"must be a power of two >= 4, got {resolution}")
    torch.manual_seed(seed)
    G = Generator(
        z_dim=z_dim,
        w_dim=w_dim,
        img_resolution=resolution,
        mapping_layers=mapping_layers,
        channel_base=channel_base or 16 * resolution,
        channel_max=channel_max,
    )
    G.eval().requires_grad_(False)
    G.mapping.w_avg.copy_(estimate_w_avg(G, seed=seed))
    return G


def write_random_generator(out: str | os.PathLike, resolution: int, seed: int = 0, **kwargs: Any) -> str:
    """Save :func:`random_generator` (``kwargs``: its sizes) to ``out``, marked untrained; its one-line summary."""
    G = random_generator(resolution, seed=seed, **kwargs)
    save_generator(G, out, extra={"untrained": True, "description": UNTRAINED_NOTE, "seed": seed})
    params = sum(p.numel() for p in G.parameters())
    return (
        f"wrote {out}: {UNTRAINED_NOTE}. resolution {resolution}, z/w {G.z_dim}/{G.w_dim}, "
        f"{params:,} parameters, seed {seed}"
    )
