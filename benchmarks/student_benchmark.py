"""Student inference cost on this CPU: FLOPs, parameters, latency in every engine and precision, ceilings.

For each Pix2PixHD configuration and input size, the script counts the convolution multiply-adds with
forward hooks and times batch-1 inference (median of repeated runs after warm-up) in PyTorch eager,
ONNX Runtime's CPU provider (the fp32 graph `distill export` writes and its static INT8 QDQ variant)
and OpenVINO (the same files: f32, bf16 and the INT8 file), plus both engines on the INT8 file of the
graph whose ConvTranspose layers are rewritten as Conv + DepthToSpace (benchmarks/convtranspose_rewrite.py).
It relates the achieved GFLOP/s to this machine's ceilings, measured in the same run with one large
3x3 convolution in each engine and precision (fp32, bf16, int8), and names the CPU's ISA features
(AVX2, AVX-512, VNNI, AVX-512 BF16, AMX). Weights are random (NVIDIA's init): speed does not depend on
them, but INT8 and bf16 *error* does and must be checked on trained weights (`distill export` does, on
held-out pairs, and the service's engine choice gates on it).

    python benchmarks/student_benchmark.py                       # writes benchmarks/results/student_engines_cpu.md
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
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convtranspose_rewrite import rewrite  # noqa: E402

from engines.base import EngineSpec  # noqa: E402
from engines.cpu import isa_line, native_bf16  # noqa: E402
from engines.ort import cpu_session  # noqa: E402
from engines.ov import OpenVinoEngine, openvino_version  # noqa: E402
from engines.select import psnr_db  # noqa: E402
from networks.pix2pixhd import build_generator, get_preset  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.variants import quantize_int8  # noqa: E402

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

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
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


ENGINES = ("torch", "ORT fp32", "ORT int8", "OV f32", "OV bf16", "OV int8")
COLUMNS = ENGINES[:3] + ("ORT int8 D2S",) + ENGINES[3:] + ("OV int8 D2S",)
CEILING_SHAPES = ((128, 256), (256, 128), (512, 64))  # (channels, H=W): 19.3 GFLOP each


def ov_runner(
    path: Path, precision: str, size: tuple[int, int], threads: int, x: np.ndarray
) -> Callable[[], object]:
    """OpenVINO compiled for the CPU at ``size`` in ``precision`` (fp32, bf16, int8 on a QDQ file)."""
    variant = "int8" if precision == "int8" else "fp32"
    engine = OpenVinoEngine(EngineSpec("openvino", "cpu", variant, precision), path, size, threads=threads)
    request = engine.request  # its infer request directly: the ceiling's input is no picture
    return lambda: request.infer({0: x})[0]


class ConvReader:
    """Calibration data for the single-convolution ceiling model: two random inputs."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(0)
        self.items = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def measure_ceiling(tmp: Path, threads: int, repeats: int) -> dict[str, float]:
    """Best GFLOP/s (fp32-equivalent FLOPs) over 3x3 convolutions (channels -> channels, batch 1) of
    CEILING_SHAPES in each engine and precision: torch fp32, ORT fp32/int8, OpenVINO f32/bf16/int8."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    best = dict.fromkeys(ENGINES, 0.0)
    for c, hw in CEILING_SHAPES:
        conv = nn.Conv2d(c, c, 3, padding=1).eval()
        flops = 2 * c * c * 9 * hw * hw
        x = torch.randn(1, c, hw, hw)
        path, q8 = tmp / f"ceiling_{c}.onnx", tmp / f"ceiling_{c}.int8.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                conv,
                (x,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=["output"],
            )
        quantize_static(
            str(path),
            str(q8),
            ConvReader((1, c, hw, hw)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        xn = x.numpy()
        runners = {
            "torch": torch_runner(conv, x),
            "ORT fp32": ort_runner(cpu_session(path, threads), xn),
            "ORT int8": ort_runner(cpu_session(q8, threads), xn),
        }
        if openvino_version():
            runners |= {
                "OV f32": ov_runner(path, "fp32", (hw, hw), threads, xn),
                "OV bf16": ov_runner(path, "bf16", (hw, hw), threads, xn),
                "OV int8": ov_runner(q8, "int8", (hw, hw), threads, xn),
            }
        for name, fn in runners.items():
            best[name] = max(best[name], flops / median_time(fn, repeats, 2) / 1e9)
        del runners
    return best


def machine_description(threads: int) -> list[str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    except (OSError, subprocess.CalledProcessError):
        info = {}
    flags = info.get("Flags", "").split()
    simd = (
        ", ".join(
            f
            for f in (
                "avx2",
                "fma",
                "avx512f",
                "avx512_vnni",
                "avx_vnni",
                "avx512_bf16",
                "amx_bf16",
                "amx_int8",
            )
            if f in flags
        )
        or "?"
    )
    return [
        f"- CPU: {info.get('Model name', platform.processor() or '?')} ({info.get('Vendor ID', '?')}, "
        f"family {info.get('CPU family', '?')} model {info.get('Model', '?')}), {info.get('CPU(s)', os.cpu_count())} logical CPUs, "
        f"{info.get('Thread(s) per core', '?')} thread(s) per core, SIMD: {simd}"
        + (f", hypervisor {info['Hypervisor vendor']}" if "Hypervisor vendor" in info else ""),
        f"- ISA features: {isa_line()} (bf16 {'native' if native_bf16() else 'emulated: OpenVINO bf16 is slower here'})",
        f"- threads used: torch.set_num_threads({threads}), ORT intra_op_num_threads={threads} (graph optimizations "
        f"ALL), OpenVINO INFERENCE_NUM_THREADS={threads} (PERFORMANCE_HINT LATENCY)",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"openvino {openvino_version() or 'not installed'}",
    ]


def load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def smooth_inputs(n: int, size: int) -> np.ndarray:
    """Smooth random images in [-1, 1] (upsampled 8x8 noise): closer to pictures than white noise."""
    low = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 2 - 1
    return (
        torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
        .clamp(-1, 1)
        .numpy()
    )


def build_files(name: str, tmp: Path, model: nn.Module, size: int, stride: int) -> dict[str, Path]:
    """fp32 ONNX, its INT8 QDQ file, and both again with ConvTranspose rewritten as Conv + DepthToSpace."""
    fp32 = export_onnx(model, tmp / f"{name}.onnx", (size, size))
    d2s = tmp / f"{name}.d2s.onnx"
    n = rewrite(str(fp32), str(d2s))
    calib_size = max(stride * 4, 128)
    calib = list(smooth_inputs(2, calib_size))
    files = {
        "fp32": fp32,
        "int8": quantize_int8(fp32, tmp / f"{name}.int8.onnx", calib),
        "d2s": d2s,
        "int8 D2S": quantize_int8(d2s, tmp / f"{name}.d2s.int8.onnx", calib),
    }
    print(f"{name}: {n} ConvTranspose rewritten as Conv + DepthToSpace", flush=True)
    return files


def runners_for(
    files: dict[str, Path], size: int, threads: int, x: np.ndarray, sessions: dict
) -> dict[str, Callable]:
    fns = {
        "ORT fp32": ort_runner(sessions["fp32"], x),
        "ORT int8": ort_runner(sessions["int8"], x),
        "ORT int8 D2S": ort_runner(sessions["int8 D2S"], x),
    }
    if openvino_version():
        fns |= {
            "OV f32": ov_runner(files["fp32"], "fp32", (size, size), threads, x),
            "OV bf16": ov_runner(files["fp32"], "bf16", (size, size), threads, x),
            "OV int8": ov_runner(files["int8"], "int8", (size, size), threads, x),
            "OV int8 D2S": ov_runner(files["int8 D2S"], "int8", (size, size), threads, x),
        }
    return fns


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="student-bench-") as tmpdir:
        tmp = Path(tmpdir)
        ceiling = measure_ceiling(tmp, args.threads, args.repeats)
        print("conv ceilings (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.items()), flush=True)
        for name in args.configs:
            cfg = get_preset(name)
            model = build_generator(cfg).eval()
            params = sum(p.numel() for p in model.parameters())
            files = build_files(name, tmp, model, min(args.sizes), cfg.stride)
            sessions = {k: cpu_session(files[k], args.threads) for k in ("fp32", "int8", "int8 D2S", "d2s")}
            for size in args.sizes:
                if size % cfg.stride:
                    continue
                repeats = args.repeats if size < 1024 else args.repeats_1024
                flops = 2 * conv_macs(model, (size, size))
                x = torch.from_numpy(smooth_inputs(1, size))
                xn = x.numpy()
                t = {"torch": median_time(torch_runner(model, x), repeats, args.warmup)}
                outputs = {}
                for k, fn in runners_for(files, size, args.threads, xn, sessions).items():
                    t[k] = median_time(fn, repeats, args.warmup)
                    outputs[k] = (
                        np.asarray(fn(), dtype=np.float32).copy()
                        if not k.startswith("ORT")
                        else np.asarray(fn()[0], dtype=np.float32)
                    )
                ref = outputs["ORT fp32"]
                d2s = np.asarray(sessions["d2s"].run(None, {"input": xn})[0])
                psnr = {k: psnr_db(v, ref) for k, v in outputs.items() if k != "ORT fp32"}
                row = {
                    "config": name,
                    "size": size,
                    "gflop": flops / 1e9,
                    "params": params,
                    "repeats": repeats,
                    "d2s_diff": float(np.abs(d2s - ref).max()),
                    "psnr": psnr,
                    **t,
                }
                rows.append(row)
                print(
                    f"{name:7s} {size:5d}px {flops / 1e9:7.1f} GFLOP  "
                    + "  ".join(f"{k} {t[k] * 1e3:.1f}" for k in COLUMNS if k in t)
                    + " ms",
                    flush=True,
                )
            del sessions, model
        end = measure_ceiling(tmp, args.threads, args.repeats)
        print(
            "conv ceilings at the end (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in end.items()),
            flush=True,
        )
    both = {k: max(ceiling[k], end[k]) for k in ceiling}
    return render(args, rows, both, (ceiling, end), started, load_before, load_average())


def render(
    args: argparse.Namespace,
    rows: list[dict],
    ceiling: dict[str, float],
    both: tuple[dict[str, float], dict[str, float]],
    started: str,
    load_before: str,
    load_after: str,
) -> str:
    cols = [k for k in COLUMNS if rows and k in rows[0]]
    lines = [
        "# Student inference on CPU (batch 1): every engine and precision",
        "",
        f"Measured {started} by `python benchmarks/student_benchmark.py "
        f"--sizes {' '.join(map(str, args.sizes))} --configs {' '.join(args.configs)} --threads {args.threads} "
        f"--repeats {args.repeats}`.",
        "",
        *machine_description(args.threads),
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}. {args.note}".rstrip(),
        "  Absolute times are noisy on a shared machine; compare the columns of one row (measured back to back).",
        f"- latency: median of {args.repeats} runs ({args.repeats_1024} at 1024 px) after {args.warmup} warm-up run(s); "
        "FLOPs = 2 x multiply-adds of all Conv2d/ConvTranspose2d (forward hooks; norms, pads, activations excluded); "
        "int8 and bf16 GFLOP/s count the same fp32-equivalent FLOPs.",
        "- engines: torch eager; ONNX Runtime CPU provider (ORT) on the fp32 file and its INT8 QDQ file (per-channel "
        "int8 weights, uint8 activations, Conv only, first and last Conv in fp32, calibrated here on 2 smooth random "
        "inputs); OpenVINO (OV) on the same files: f32, bf16 (INFERENCE_PRECISION_HINT) and the INT8 file; "
        "D2S: the INT8 file of the graph whose ConvTranspose layers are rewritten as Conv + DepthToSpace "
        "(benchmarks/convtranspose_rewrite.py), which lets the quantizer take the upsampling layers too.",
        "- weights are random (NVIDIA init): speed does not depend on them, INT8/bf16 error does; the PSNR columns "
        "(against ORT fp32, one smooth random input) only show the order of magnitude. `distill export` measures "
        "it on held-out pairs and the service gates its engine choice at 35 dB.",
        "",
        "## Ceilings: the best of 3x3 convolutions "
        f"({', '.join(f'{c} ch at {hw} px' for c, hw in CEILING_SHAPES)}), batch 1, measured before and after the models",
        "",
        "| engine, precision | GFLOP/s (start) | GFLOP/s (end) | best | vs ORT fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in ENGINES:
        if both[0].get(k):
            lines.append(
                f"| {k} | {both[0][k]:.0f} | {both[1][k]:.0f} | {ceiling[k]:.0f} | "
                f"{ceiling[k] / ceiling['ORT fp32']:.2f}x |"
            )
    lines += [
        "",
        "Configurations:",
        *(f"- `{n}`: {CONFIGS[n]}" for n in args.configs),
        "",
        "## Latency (ms)",
        "",
        "| config | size | GFLOP | params (M) | " + " | ".join(cols) + " | fastest | fastest vs ORT fp32 |",
        "|---|---|---|---|" + "---:|" * len(cols) + "---|---:|",
    ]
    for r in rows:
        fastest = min(cols, key=lambda k: r[k])
        lines.append(
            f"| {r['config']} | {r['size']} | {r['gflop']:.1f} | {r['params'] / 1e6:.1f} | "
            + " | ".join(f"{r[k] * 1e3:.1f}" for k in cols)
            + f" | {fastest} | {r['ORT fp32'] / r[fastest]:.2f}x |"
        )
    lines += [
        "",
        "## Speed-up over ORT fp32, GFLOP/s and % of the same engine's ceiling",
        "",
        "| config | size | " + " | ".join(c for c in cols if c != "torch") + " |",
        "|---|---|" + "---|" * (len(cols) - 1),
    ]
    for r in rows:
        cells = []
        for k in cols:
            if k == "torch":
                continue
            g = r["gflop"] / r[k]
            base = k.replace(" D2S", "")
            cells.append(f"{r['ORT fp32'] / r[k]:.2f}x, {g:.0f} ({100 * g / ceiling[base]:.0f}%)")
        lines.append(f"| {r['config']} | {r['size']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## PSNR against ORT fp32 (dB, random weights, one smooth input)",
        "",
        "| config | size | "
        + " | ".join(c for c in cols if c not in ("torch", "ORT fp32"))
        + " | max abs diff, D2S fp32 graph vs fp32 |",
        "|---|---|" + "---:|" * (len(cols) - 1),
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['size']} | "
            + " | ".join(f"{r['psnr'][k]:.1f}" for k in cols if k not in ("torch", "ORT fp32"))
            + f" | {r['d2s_diff']:.1e} |"
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
    p.add_argument(
        "--note", default="", help="a sentence on the machine's state for the results (e.g. other jobs)"
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "student_engines_cpu.md")
    args = p.parse_args(argv)
    table = run(args)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
