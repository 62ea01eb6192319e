"""Student capacity against latency on this CPU: the candidate toy-face students side by side.

Each candidate is a Pix2PixHD generator configuration (the shipped `slim` ngf-16 student with NVIDIA's
instance norm and transposed convs, the same without instance norm, with resize-convolutions, and wider
ones). Every candidate is exported to ONNX with random weights (speed does not depend on them) and timed
at batch 1 in ONNX Runtime fp32 and OpenVINO bf16 (the service's engines on this CPU) in interleaved rounds
(engines.select.time_rounds), so a busy spell of a shared machine hits every candidate alike. The table
gives GFLOP, parameters, the median latency per engine and the ratio to the shipped student in the same
engine; quality figures come from trained students only (README, "A student as clean as its teacher").

    python benchmarks/student_presets.py                    # 128 px, prints the table
    python benchmarks/student_presets.py --size 512 --rounds 5 --out /tmp/presets.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.harness import emit  # noqa: E402
from engines.base import EngineSpec  # noqa: E402
from engines.cpu import cpu_model, isa_line, native_bf16  # noqa: E402
from engines.measure import open_spec  # noqa: E402
from engines.ov import openvino_version  # noqa: E402
from engines.select import time_rounds  # noqa: E402
from networks.pix2pixhd import build_generator, get_preset  # noqa: E402
from training.export import export_onnx  # noqa: E402

SLIM16 = {"ngf": 16, "residual": True}
CANDIDATES: dict[str, dict[str, object]] = {
    "slim ngf16, instance norm, transposed conv (shipped before)": SLIM16,
    "slim ngf16, no norm, transposed conv": SLIM16 | {"norm": "none"},
    "slim ngf16, no norm, resize-conv": SLIM16 | {"norm": "none", "upsample": "resize"},
    "slim ngf24, no norm, transposed conv": SLIM16 | {"ngf": 24, "norm": "none"},
    "slim ngf32, no norm, transposed conv": SLIM16 | {"ngf": 32, "norm": "none"},
}
BASELINE = next(iter(CANDIDATES))


def conv_gflop(model: torch.nn.Module, size: int) -> float:
    """2 x multiply-adds of every convolution for one [1,3,size,size] forward pass."""
    total = 0

    def hook(module: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return 2 * total / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument(
        "--rounds", type=int, default=8, help="timing rounds (each: 2 timed runs per candidate and engine)"
    )
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = p.parse_args()
    engines = [EngineSpec("onnxruntime", "cpu", "fp32", "fp32")]
    if openvino_version() is not None:
        engines.append(EngineSpec("openvino", "cpu", "fp32", "bf16" if native_bf16() else "fp32"))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    rows, timed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(CANDIDATES.items()):
            torch.manual_seed(0)
            G = build_generator(get_preset("slim", **overrides)).eval()
            torch.nn.init.normal_(
                [m for m in G.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight, 0, 0.02
            )
            path = export_onnx(G, Path(tmp) / f"c{i}.onnx", (args.size, args.size))
            rows[name] = {
                "gflop": conv_gflop(G, args.size),
                "params": sum(t.numel() for t in G.parameters()) / 1e6,
            }
            for spec in engines:
                timed.append(
                    ((name, spec.label), open_spec(spec, path, (args.size, args.size), args.threads))
                )
        keys = [k for k, _ in timed]
        times = time_rounds(
            [(k, e) for k, e in timed], x, args.rounds, deadline=time.perf_counter() + 3600, cut=False
        )
    medians = {k: statistics.median(times[id(k)]) for k in keys}
    labels = [s.label for s in engines]
    lines = [
        f"Student candidates at {args.size}x{args.size}, batch 1, {args.threads} threads, {args.rounds} rounds; "
        f"{cpu_model()} ({isa_line()}). Ratio: latency over the shipped-before student's in the same engine.",
        "",
        "| candidate | GFLOP | params (M) | " + " | ".join(f"{lab} ms | ratio" for lab in labels) + " |",
        "|---|---:|---:|" + "---:|---:|" * len(labels),
    ]
    for name, r in rows.items():
        cells = []
        for lab in labels:
            ms = next(medians[k] for k in keys if k == (name, lab))
            base = next(medians[k] for k in keys if k == (BASELINE, lab))
            cells.append(f"{ms:.2f} | {ms / base:.2f}x")
        lines.append(f"| {name} | {r['gflop']:.2f} | {r['params']:.2f} | " + " | ".join(cells) + " |")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
