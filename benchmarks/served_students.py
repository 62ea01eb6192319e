"""Served latency of several model-zoo entries side by side: one `distill serve`, `/transform` in rounds.

Each entry folder is linked under the name given into a temporary zoo, one real `distill serve` (the default
settings: the engine chosen by measurement) loads them all, and each round sends every model, in rotating
order, a block of the same JPEG uploads at its native size (teacher samples when the first entry ships a
teacher). A busy spell of a shared machine hits every model alike, so the ratios compare numbers taken
seconds apart. The table gives each model's served engine, the p50/p95 round trip, the p50 of its
`inference` stage (Server-Timing) and the ratio of its p50 to the first model's.

    python benchmarks/served_students.py --entry before=/tmp/old/toyfaces-age --entry after=model_zoo/toyfaces-age
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.harness import Sample, emit, post, serve, test_images  # noqa: E402
from model_zoo.registry import get_entry  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--entry", action="append", required=True, metavar="NAME=FOLDER", help="a model-zoo entry folder"
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--block", type=int, default=5, help="requests per model per round")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = p.parse_args()
    pairs = [e.split("=", 1) for e in args.entry]
    if any(len(pair) != 2 for pair in pairs):
        p.error("--entry takes NAME=FOLDER")
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Path(tmp)
        for name, folder in pairs:
            (zoo / name).symlink_to(Path(folder).resolve(), target_is_directory=True)
        names = [name for name, _ in pairs]
        images = test_images(get_entry(names[0], zoo), args.images)
        samples = {name: Sample() for name in names}
        engines: dict[str, str] = {}
        with serve(zoo, {"DISTILL_MODELS": ",".join(names)}) as base, httpx.Client(timeout=60) as client:
            for name in names:  # untimed: every model's first requests
                post(client, f"{base}/transform", images[0], Sample(), model=name)
                r = client.post(
                    f"{base}/transform",
                    files={"image": ("f.jpg", images[0], "image/jpeg")},
                    data={"model": name},
                )
                engines[name] = f"{r.headers.get('X-Engine', '?')} {r.headers.get('X-Precision', '')}".strip()
            for r in range(args.rounds):
                for k in range(len(names)):
                    name = names[(r + k) % len(names)]
                    for i in range(args.block):
                        post(
                            client,
                            f"{base}/transform",
                            images[(r + i) % len(images)],
                            samples[name],
                            model=name,
                        )
    first = samples[names[0]].stats().get("p50")
    lines = [
        f"/transform at the native size, one server, {args.rounds} rounds x {args.block} requests per model",
        "",
        "| model | engine | p50 ms | p95 ms | inference p50 ms | errors | p50 vs first |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        s = samples[name]
        st = s.stats()
        stage = [t["inference"] * 1e3 for t in s.timings if "inference" in t]
        inference = statistics.median(stage) if stage else float("nan")
        lines.append(
            f"| {name} | {engines[name]} | {st['p50'] * 1e3:.2f} | {st['p95'] * 1e3:.2f} | {inference:.2f} | "
            f"{s.n_errors} | {st['p50'] / first:.2f}x |"
        )
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
