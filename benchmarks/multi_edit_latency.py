"""Latency of a student of K edits (strength [N, K]) against the one-edit student of the same preset, side by side.

Each conditioning (``plane``, ``modulation``) of the shipped student's architecture (``slim`` at ngf 24, no
instance norm, resize-convs, residual) is built with one edit and with ``--edits`` edits, exported to ONNX
with random weights (speed does not depend on them) and timed at batch 1 in ONNX Runtime fp32 on the CPU, in
interleaved rounds (each round: every model in rotating order, a pause, one untimed run, two timed runs), so a
busy spell of a shared machine hits every model alike. The ratio is the K-edit model's median latency over the
one-edit model's of the same conditioning.

    python benchmarks/multi_edit_latency.py                       # 128 px, K = 4, prints the table
    python benchmarks/multi_edit_latency.py --out benchmarks/results/multi_edit_cpu.md
"""

from __future__ import annotations

import argparse
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
from engines.cpu import cpu_model, isa_line  # noqa: E402
from engines.ort import cpu_session  # noqa: E402
from networks.pix2pixhd import build_generator, get_preset  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.variants import feeds  # noqa: E402

SHIPPED = {"ngf": 24, "norm": "none", "upsample": "resize", "residual": True}
CONDITIONS = ("plane", "modulation")
TIMED_RUNS = 2  # per model and round
PAUSE_S = 0.05  # between models: the last session's threads stop spinning


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--edits", type=int, default=4, help="K, the edits of the multi-edit student")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = p.parse_args()
    if args.edits < 2 or args.size <= 0 or args.size % 8 or args.rounds < 1:
        print(
            "multi_edit_latency: --edits must be >= 2, --size a positive multiple of 8, --rounds >= 1",
            file=sys.stderr,
        )
        return 2
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cond in CONDITIONS:
            for k in (1, args.edits):
                torch.manual_seed(0)
                G = build_generator(get_preset("slim", condition=cond, n_edits=k, **SHIPPED)).eval()
                path = export_onnx(G, Path(tmp) / f"{cond}{k}.onnx", (args.size, args.size))
                strength = np.full((1, k), 0.5, np.float32)
                session = cpu_session(path, args.threads)
                models[(cond, k)] = (session, feeds(session, x, strength))
        times: dict[tuple[str, int], list[float]] = {key: [] for key in models}
        keys = list(models)
        for r in range(args.rounds):
            for i in range(len(keys)):
                key = keys[(r + i) % len(keys)]
                session, feed = models[key]
                time.sleep(PAUSE_S)
                session.run(None, feed)
                for _ in range(TIMED_RUNS):
                    t0 = time.perf_counter()
                    session.run(None, feed)
                    times[key].append((time.perf_counter() - t0) * 1e3)
    medians = {key: statistics.median(t) for key, t in times.items()}
    lines = [
        f"Students of 1 and {args.edits} edits, `slim` ngf 24 (no norm, resize-conv, residual), {args.size}x"
        f"{args.size}, batch 1, ONNX Runtime fp32 CPU, {args.threads} thread(s), {args.rounds} rounds of "
        f"{TIMED_RUNS} runs; {cpu_model()} ({isa_line()}). Ratio: the {args.edits}-edit student over the one-edit one.",
        "",
        f"Command: `python benchmarks/multi_edit_latency.py {' '.join(sys.argv[1:])}` (nice'd, beside a training job).",
        "",
        f"| condition | 1 edit ms | {args.edits} edits ms | ratio |",
        "|---|---:|---:|---:|",
    ]
    for cond in CONDITIONS:
        one, many = medians[(cond, 1)], medians[(cond, args.edits)]
        lines.append(f"| {cond} | {one:.2f} | {many:.2f} | {many / one:.3f}x |")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
