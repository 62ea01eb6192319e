"""Teacher benchmark: StyleGAN2 generation speed, fused (grouped conv) vs unfused modulated conv.

The pair generator renders thousands of teacher images, so the generator's throughput sets its speed.
Both modulated-conv paths compute the same images (to ~1e-6); this prints images/s for each, per
configuration and batch size, measured in interleaved rounds on the same machine, and their ratio.

    python benchmarks/teacher_benchmark.py                      # CPU/CUDA (auto), quick configurations
    python benchmarks/teacher_benchmark.py --device cuda --full # adds a 256 px config with official widths
    python benchmarks/teacher_benchmark.py --checkpoint G.pkl   # a real checkpoint instead of presets

Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from networks.stylegan2 import Generator, load_generator
from training.devices import exact_float32, pick_device

PRESETS = {
    "tiny-32": dict(
        z_dim=64, w_dim=64, img_resolution=32, mapping_layers=2, channel_base=512, channel_max=64
    ),
    "toy-128": dict(
        z_dim=128,
        w_dim=256,
        img_resolution=128,
        mapping_layers=4,
        channels={4: 256, 8: 256, 16: 128, 32: 96, 64: 48, 128: 24},
    ),
}
FULL_PRESETS = {
    "ffhq-256-widths": dict(
        z_dim=512, w_dim=512, img_resolution=256, mapping_layers=8, channel_base=16384, channel_max=512
    ),
}


def time_call(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def bench(G: Generator, batch: int, rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds per batch for each path, the two paths alternating within every round."""
    z = torch.randn([batch, G.z_dim], device=device)
    times: dict[str, list[float]] = {"fused": [], "unfused": []}
    for fused in (True, False):  # warm-up (allocator, cuDNN/oneDNN algorithm choice)
        G(z, fused_modconv=fused)
    for _ in range(rounds):
        for name, fused in (("fused", True), ("unfused", False)):
            times[name].append(time_call(lambda f=fused: G(z, truncation_psi=0.7, fused_modconv=f), device))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--full", action="store_true", help="add a 256 px config with official channel widths"
    )
    parser.add_argument("--checkpoint", help="benchmark this checkpoint instead of the presets")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    exact_float32()
    configs = (
        {args.checkpoint: None} if args.checkpoint else {**PRESETS, **(FULL_PRESETS if args.full else {})}
    )
    gpu = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    print(
        f"device {device} ({gpu}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{args.rounds} rounds, median per batch"
    )
    print("| config | params | batch | fused img/s | unfused img/s | fused/unfused |")
    print("|---|---|---|---|---|---|")
    for name, kwargs in configs.items():
        if kwargs is None:
            G = load_generator(name, device=device)
        else:
            torch.manual_seed(0)
            G = Generator(**kwargs).eval().requires_grad_(False).to(device)
        params = sum(p.numel() for p in G.parameters())
        for batch in (int(b) for b in args.batches.split(",")):
            t = bench(G, batch, args.rounds, device)
            print(
                f"| {name} | {params / 1e6:.2f} M | {batch} | {batch / t['fused']:.1f} | "
                f"{batch / t['unfused']:.1f} | {t['unfused'] / t['fused']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
