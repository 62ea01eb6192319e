"""Student inference cost on this CPU: FLOPs, parameters, latency (torch eager, ORT fp32, ORT int8), ceiling.

For each Pix2PixHD configuration and input size, the script counts the convolution multiply-adds with
forward hooks, times batch-1 inference (median of repeated runs after warm-up) in PyTorch eager and
ONNX Runtime's CPU provider (the fp32 graph `distill export` writes and its static INT8 QDQ variant),
and relates the achieved GFLOP/s to this machine's convolution ceiling, measured in the same run with
one large 3x3 convolution in PyTorch and in ONNX Runtime. Weights are random (NVIDIA's init): speed
does not depend on them, but INT8 *error* does and must be checked on trained weights (`distill
export --variants int8` does, on held-out pairs).

    python benchmarks/student_benchmark.py                       # writes benchmarks/results/student_cpu.md
    python benchmarks/student_benchmark.py --sizes 256 --configs slim --out /tmp/quick.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from training.export import export_onnx
from training.pix2pixhd import build_generator, get_preset
from training.variants import cpu_session, quantize_int8

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "global": "NVIDIA defaults (netG global, ngf 64, 4 downsamplings, 9 blocks)",
    "nvidia": "NVIDIA 1024p recipe (netG local, ngf 32: inner global = the global preset at half resolution)",
    "slim": "slim preset (global, ngf 32, 3 downsamplings, 6 blocks)",
}


def conv_macs(model: nn.Module, size: tuple[int, int]) -> int:
    """Multiply-accumulates of every Conv2d and ConvTranspose2d for one [1,3,H,W] forward pass (forward hooks)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        per_group_in = module.in_channels // module.groups
        if isinstance(module, nn.ConvTranspose2d):
            # every input pixel scatters a (out_channels/groups) x kh x kw patch
            total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        else:
            total += output.numel() * per_group_in * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size))
    finally:
        for h in handles:
            h.remove()
    return total


def median_time(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ort_runner(session: ort.InferenceSession, x: np.ndarray) -> Callable[[], object]:
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def torch_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


@dataclass
class Ceiling:
    """Best GFLOP/s of large 3x3 convolutions in torch and ORT, and the shape that reached it."""

    torch_gflops: float
    ort_gflops: float
    shape: str

    @property
    def best(self) -> float:
        return max(self.torch_gflops, self.ort_gflops)


CEILING_SHAPES = ((128, 256), (256, 128), (512, 64))  # (channels, H=W): 19.3 GFLOP each


def measure_ceiling(tmp: Path, threads: int, repeats: int) -> Ceiling:
    """Max GFLOP/s over 3x3 convolutions (channels -> channels, batch 1) of CEILING_SHAPES, in torch and ORT."""
    best_torch = best_ort = 0.0
    best_shape = ""
    for c, hw in CEILING_SHAPES:
        conv = nn.Conv2d(c, c, 3, padding=1).eval()
        flops = 2 * c * c * 9 * hw * hw
        x = torch.randn(1, c, hw, hw)
        g_torch = flops / median_time(torch_runner(conv, x), repeats, 2) / 1e9
        path = tmp / f"ceiling_{c}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(conv, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"])
        g_ort = flops / median_time(ort_runner(cpu_session(path, threads), x.numpy()), repeats, 2) / 1e9
        if max(g_torch, g_ort) > max(best_torch, best_ort):
            best_shape = f"3x3 conv {c}->{c} ch at {hw}x{hw}, batch 1"
        best_torch, best_ort = max(best_torch, g_torch), max(best_ort, g_ort)
    return Ceiling(best_torch, best_ort, best_shape)


def combine(a: Ceiling, b: Ceiling) -> Ceiling:
    return Ceiling(max(a.torch_gflops, b.torch_gflops), max(a.ort_gflops, b.ort_gflops),
                   a.shape if a.best >= b.best else b.shape)


def machine_description(threads: int) -> list[str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    except (OSError, subprocess.CalledProcessError):
        info = {}
    flags = info.get("Flags", "").split()
    simd = ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags) or "?"
    return [
        f"- CPU: {info.get('Model name', platform.processor() or '?')} ({info.get('Vendor ID', '?')}, "
        f"family {info.get('CPU family', '?')} model {info.get('Model', '?')}), {info.get('CPU(s)', os.cpu_count())} logical CPUs, "
        f"{info.get('Thread(s) per core', '?')} thread(s) per core, SIMD: {simd}"
        + (f", hypervisor {info['Hypervisor vendor']}" if "Hypervisor vendor" in info else ""),
        f"- threads used: torch.set_num_threads({threads}), ORT intra_op_num_threads={threads}, graph optimizations ALL",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}",
    ]


def load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="student-bench-") as tmpdir:
        tmp = Path(tmpdir)
        ceiling = measure_ceiling(tmp, args.threads, args.repeats)
        print(f"conv ceiling: torch {ceiling.torch_gflops:.0f} GFLOP/s, ORT {ceiling.ort_gflops:.0f} GFLOP/s", flush=True)
        for name in args.configs:
            cfg = get_preset(name)
            model = build_generator(cfg).eval()
            params = sum(p.numel() for p in model.parameters())
            fp32 = export_onnx(model, tmp / f"{name}.onnx", (min(args.sizes),) * 2)
            calib_size = max(cfg.stride * 4, 128)
            rng = np.random.default_rng(0)
            calib = [rng.uniform(-1, 1, (3, calib_size, calib_size)).astype(np.float32) for _ in range(2)]
            int8 = quantize_int8(fp32, tmp / f"{name}.int8.onnx", calib)
            sessions = {"fp32": cpu_session(fp32, args.threads), "int8": cpu_session(int8, args.threads)}
            for size in args.sizes:
                if size % cfg.stride:
                    continue
                repeats = args.repeats if size < 1024 else args.repeats_1024
                flops = 2 * conv_macs(model, (size, size))
                x = torch.rand(1, 3, size, size) * 2 - 1
                t = {"torch": median_time(torch_runner(model, x), repeats, args.warmup)}
                for k, s in sessions.items():
                    t[k] = median_time(ort_runner(s, x.numpy()), repeats, args.warmup)
                row = {"config": name, "size": size, "gflop": flops / 1e9, "params": params, "repeats": repeats, **t}
                rows.append(row)
                print(f"{name:7s} {size:5d}px  {flops / 1e9:8.1f} GFLOP  torch {t['torch'] * 1e3:9.1f} ms  "
                      f"ORT fp32 {t['fp32'] * 1e3:9.1f} ms  ORT int8 {t['int8'] * 1e3:9.1f} ms", flush=True)
            del sessions, model
        end = measure_ceiling(tmp, args.threads, args.repeats)
        print(f"conv ceiling at the end: torch {end.torch_gflops:.0f} GFLOP/s, ORT {end.ort_gflops:.0f} GFLOP/s", flush=True)
    return render(args, rows, combine(ceiling, end), (ceiling, end), started, load_before, load_average())


def render(args: argparse.Namespace, rows: list[dict], ceiling: Ceiling, both: tuple[Ceiling, Ceiling],
           started: str, load_before: str, load_after: str) -> str:
    lines = [
        "# Student inference on CPU (batch 1)",
        "",
        f"Measured {started} by `python benchmarks/student_benchmark.py "
        f"--sizes {' '.join(map(str, args.sizes))} --configs {' '.join(args.configs)} --threads {args.threads}`.",
        "",
        *machine_description(args.threads),
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}. The machine is shared with other "
        "jobs, so absolute times are noisy; compare the columns of one row (measured back to back).",
        f"- convolution ceiling, same run: the best of 3x3 convs ({', '.join(f'{c} ch at {hw} px' for c, hw in CEILING_SHAPES)}) "
        f"measured before and after the models (start: torch {both[0].torch_gflops:.0f} / ORT {both[0].ort_gflops:.0f}, "
        f"end: torch {both[1].torch_gflops:.0f} / ORT {both[1].ort_gflops:.0f} GFLOP/s); best: {ceiling.shape}, "
        f"torch {ceiling.torch_gflops:.0f}, ORT {ceiling.ort_gflops:.0f} GFLOP/s. % ceiling below is against {ceiling.best:.0f}; "
        "a figure over 100% means contention depressed the ceiling runs.",
        f"- latency: median of {args.repeats} runs ({args.repeats_1024} at 1024 px) after {args.warmup} warm-up run(s); "
        "FLOPs = 2 x multiply-adds of all Conv2d/ConvTranspose2d (counted with forward hooks; norms, pads, "
        "activations excluded).",
        "- weights are random (NVIDIA init): speed does not depend on them, INT8 error does. INT8 = static QDQ, "
        "per-channel int8 weights, uint8 activations, Conv only (ConvTranspose stays fp32), calibrated here on 2 "
        "random inputs; its error must be checked on trained weights (`distill export --variants int8` gates it "
        "at 35 dB PSNR against fp32 on held-out pairs). INT8 GFLOP/s counts the same fp32-equivalent FLOPs.",
        "",
        "Configurations:",
        *(f"- `{n}`: {CONFIGS[n]}" for n in args.configs),
        "",
        "| config | size | GFLOP | params (M) | torch eager ms | ORT fp32 ms | ORT int8 ms | ORT fp32 speedup over torch | "
        "int8 speedup over fp32 | GFLOP/s torch / fp32 / int8 | % ceiling torch / fp32 / int8 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = {k: r["gflop"] / r[k] for k in ("torch", "fp32", "int8")}
        pct = {k: 100 * v / ceiling.best for k, v in g.items()}
        lines.append(
            f"| {r['config']} | {r['size']} | {r['gflop']:.1f} | {r['params'] / 1e6:.1f} | {r['torch'] * 1e3:.1f} | "
            f"{r['fp32'] * 1e3:.1f} | {r['int8'] * 1e3:.1f} | {r['torch'] / r['fp32']:.2f}x | "
            f"{r['fp32'] / r['int8']:.2f}x | {g['torch']:.0f} / {g['fp32']:.0f} / {g['int8']:.0f} | "
            f"{pct['torch']:.0f}% / {pct['fp32']:.0f}% / {pct['int8']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeats-1024", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "student_cpu.md")
    args = p.parse_args(argv)
    table = run(args)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
