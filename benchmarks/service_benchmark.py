"""Service benchmark: the seed's legacy-vs-student table, the service's overhead and its behaviour under load.

Everything goes through a real ``distill serve`` (uvicorn) on 127.0.0.1, driven over HTTP:

(a) The seed's table: the same N images through ``/transform`` (student) and ``/legacy/transform``
    (projection + edit), sequentially; mean, p50, p95 and the speedup, per provider.
(b) Service overhead: ``/transform`` p50 over HTTP against a bare ``onnxruntime`` ``session.run`` p50
    on the same model file, threads and input size, interleaved in rounds in the same run (target <= 1.15x).
(c) Load: 1, 4 and 16 concurrent clients for a fixed time each: throughput, p50/p95/p99, errors, mean
    micro-batch size, with micro-batching (the service's default) and without (DISTILL_MAX_BATCH=1);
    the two servers run side by side and are loaded in alternating slices.
(d) Real photographs: a 1024x768 portrait (scikit-image's astronaut, enlarged) through the FFHQ path, stage
    by stage: face detection + landmarks, alignment and paste-back measured in-process, then
    ``/transform size=original`` on a copy of the entry marked ``input.alignment: ffhq`` (Server-Timing
    stages) against the same request with ``align=off`` (the centred crop).

Usage::

    python benchmarks/service_benchmark.py                       # the default model entry, quick settings
    python benchmarks/service_benchmark.py --full                # the seed's settings: 500 images, 1000 steps
    python benchmarks/service_benchmark.py --model-zoo ZOO --model NAME --providers cpu,cuda
    python benchmarks/service_benchmark.py --make-entry slim --size 128   # no trained entry: an UNTRAINED one
    python benchmarks/service_benchmark.py --align-only --make-entry slim --size 256   # (d) only

``--make-entry`` exports an untrained Pix2PixHD preset and a random teacher through ``distill export``
into a temporary zoo: right for speed (the cost of a network does not depend on its weights), meaningless
for image quality. Every request loop is bounded (counts or a deadline) and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from benchmarks.harness import (  # noqa: E402
    Sample,
    machine,
    make_untrained_entry,
    ms,
    percentile,
    post,
    record,
    serve,
    table,
    test_images,
)
from benchmarks.service_align import align_report  # noqa: E402

STAGES = ("decode", "preprocess", "queue", "inference", "postprocess", "encode")


def seed_table(
    base: str, model: str, images: list[bytes], n_legacy: int, steps: int
) -> tuple[Sample, Sample, Sample]:
    """Student on every image, legacy on the first ``n_legacy`` of the same images, one at a time; also
    one-step legacy requests (the fixed cost of a projection, for extrapolating to other step counts)."""
    student, legacy, one_step = Sample(), Sample(), Sample()
    with httpx.Client(timeout=600) as client:
        post(
            client, base + "/transform", images[0], Sample(), model=model
        )  # connection + first-request warm-up
        for img in images:
            post(client, base + "/transform", img, student, model=model, format="jpeg")
        if n_legacy:  # warm-up: the projection process loads the teacher and its W statistics once
            post(client, base + "/legacy/transform", images[0], Sample(), model=model, steps="1")
        for img in images[:n_legacy]:
            post(client, base + "/legacy/transform", img, one_step, model=model, format="jpeg", steps="1")
            post(
                client, base + "/legacy/transform", img, legacy, model=model, format="jpeg", steps=str(steps)
            )
    return student, legacy, one_step


def overhead(
    base: str, model: str, entry, image: bytes, threads: int, pairs: int
) -> tuple[Sample, list[float], Sample]:
    """HTTP /transform vs bare session.run on the same ONNX file and input, alternating one of each
    ``pairs`` times (so a change in the machine's load hits both sides alike). A pause before each
    measurement lets the other side's ONNX Runtime threads stop spin-waiting (they would steal the cores).
    Also returns GET /healthz round trips: the floor that HTTP alone costs on this machine."""
    import onnxruntime as ort

    from editing.images import from_uint8

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(entry.variant_path("fp32")), opts, providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    x = from_uint8(pixels).numpy()
    in_name, out_name = entry.manifest["input"]["name"], entry.manifest["output"]["name"]
    for _ in range(3):
        session.run([out_name], {in_name: x})
    # The multipart body is encoded once, so the client's own work stays out of the comparison.
    request = httpx.Request(
        "POST",
        base,
        files={"image": ("face.jpg", image, "image/jpeg")},
        data={"model": model, "format": "jpeg"},
    )
    body, content_type = request.read(), request.headers["Content-Type"]
    http, bare, floor = Sample(), [], Sample()
    with httpx.Client(timeout=60) as client:

        def send() -> None:
            t0 = time.perf_counter()
            r = client.post(base + "/transform", content=body, headers={"Content-Type": content_type})
            record(http, r, time.perf_counter() - t0)

        send()
        for _ in range(pairs):
            time.sleep(0.05)
            send()
            time.sleep(0.05)
            t0 = time.perf_counter()
            session.run([out_name], {in_name: x})
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            record(floor, client.get(base + "/healthz"), time.perf_counter() - t0)
    return http, bare, floor


async def _load(
    base: str, model: str, images: list[bytes], clients: int, seconds: float
) -> tuple[Sample, float]:
    sample = Sample()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        base + "/transform",
                        data={"model": model, "format": "jpeg"},
                        files={"image": ("face.jpg", images[i % len(images)], "image/jpeg")},
                    )
                except httpx.HTTPError as e:
                    sample.error(type(e).__name__)
                else:
                    record(sample, r, time.perf_counter() - t0)
                i += clients

        await asyncio.gather(*(worker(k) for k in range(clients)))
        return sample, time.perf_counter() - start


def load(base: str, model: str, images: list[bytes], clients: int, seconds: float) -> tuple[Sample, float]:
    """``clients`` concurrent request loops until ``seconds`` have passed; returns the sample and the wall time."""
    return asyncio.run(_load(base, model, images, clients, seconds))


def load_levels(
    servers: dict[str, str],
    model: str,
    images: list[bytes],
    clients: Sequence[int],
    seconds: float,
    provider: str,
    repeats: int = 2,
) -> list[list[object]]:
    """Each concurrency level on each server (label -> base URL), in ``repeats`` alternating slices of
    ``seconds / repeats`` (order reversed every repeat), so drifts in the machine's load hit every
    server alike. One table row per server and level."""
    totals: dict[tuple[str, int], tuple[Sample, float]] = {}
    for c in clients:
        for rep in range(repeats):
            for label in list(servers) if rep % 2 == 0 else list(reversed(servers)):
                print(
                    f"[{provider}] (c) load: {c} clients x {seconds / repeats:g} s, micro-batching {label} ...",
                    flush=True,
                )
                sample, wall = load(servers[label], model, images, c, seconds / repeats)
                acc, acc_wall = totals.get((label, c), (Sample(), 0.0))
                acc.latencies += sample.latencies
                acc.batch_sizes += sample.batch_sizes
                for reason, n in sample.errors.items():
                    acc.errors[reason] = acc.errors.get(reason, 0) + n
                totals[(label, c)] = (acc, acc_wall + wall)
    rows: list[list[object]] = []
    for label in servers:
        for c in clients:
            sample, wall = totals[(label, c)]
            st = sample.stats()
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(sample.errors.items())) or "0"
            if not st["n"]:
                rows.append([provider, label, c, "0", "-", "-", "-", errors, "-"])
                continue
            mean_batch = statistics.fmean(sample.batch_sizes) if sample.batch_sizes else float("nan")
            rows.append(
                [
                    provider,
                    label,
                    c,
                    f"{st['n'] / wall:.1f}",
                    ms(st["p50"]),
                    ms(st["p95"]),
                    ms(st["p99"]),
                    errors,
                    f"{mean_batch:.2f}",
                ]
            )
    return rows


# ----------------------------------------------------------------------------
# (d) real photographs: alignment and paste-back.


# ----------------------------------------------------------------------------
# Machine description and report.


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model-zoo", type=Path, help="model-zoo root (default: $DISTILL_MODEL_ZOO or the package's)"
    )
    p.add_argument("--model", help="entry to benchmark (default: the first entry)")
    p.add_argument(
        "--make-entry",
        metavar="PRESET",
        help="export an UNTRAINED Pix2PixHD preset (slim, global, tiny) + random teacher into a temporary zoo",
    )
    p.add_argument("--size", type=int, default=128, help="native size of --make-entry (default 128)")
    p.add_argument("--providers", help="comma list of cpu, cuda (default: every one this onnxruntime has)")
    p.add_argument("--student-n", type=int, default=20, help="images through /transform (seed: 500)")
    p.add_argument(
        "--legacy-n", type=int, default=3, help="of the same images, through /legacy/transform (seed: 500)"
    )
    p.add_argument("--legacy-steps", type=int, default=100, help="projection steps (seed and NVlabs: 1000)")
    p.add_argument(
        "--full", action="store_true", help="the seed's settings: 500 images, 500 legacy, 1000 steps"
    )
    p.add_argument("--overhead-pairs", type=int, default=40, help="alternating HTTP / session.run pairs")
    p.add_argument("--load-seconds", type=float, default=10.0, help="duration of each load level")
    p.add_argument("--clients", default="1,4,16", help="concurrency levels of the load test")
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="ONNX Runtime intra-op threads, for the service and the bare session alike",
    )
    p.add_argument(
        "--legacy-threads",
        type=int,
        default=1,
        help="torch threads of the projection process (default 1: on a shared 2-core machine, 2 threads "
        "measured 5x slower a step than 1)",
    )
    p.add_argument("--align-n", type=int, default=20, help="rounds of the real-photo alignment part (d)")
    p.add_argument("--align-only", action="store_true", help="run only part (d), on the cpu provider")
    p.add_argument(
        "--out",
        type=Path,
        help="markdown report (default benchmarks/results/service_<providers>.md, "
        "service_align_cpu.md with --align-only)",
    )
    args = p.parse_args(argv)
    if args.full:
        args.student_n, args.legacy_n, args.legacy_steps = 500, 500, 1000

    sys.path.insert(0, str(REPO))
    from model_zoo.registry import default_root, get_entry, list_entries

    providers = args.providers.split(",") if args.providers else available_providers()
    if args.align_only:
        providers = ["cpu"]
    clients = [int(c) for c in args.clients.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="service-bench-")
    if args.make_entry:
        print(
            f"exporting an UNTRAINED {args.make_entry} Pix2PixHD at {args.size} px + random teacher ...",
            flush=True,
        )
        zoo = Path(tmp.name)
        model = make_untrained_entry(zoo, args.make_entry, args.size).name
    else:
        zoo = args.model_zoo or default_root()
        entries = list_entries(zoo)
        if not entries:
            p.error(f"no model-zoo entries under {zoo}; pass --model-zoo or --make-entry slim")
        model = args.model or entries[0].name
    entry = get_entry(model, zoo)
    images = [] if args.align_only else test_images(entry, max(args.student_n, args.legacy_n))
    info = machine()
    untrained = "UNTRAINED" in (entry.manifest.get("description") or "")
    report = [
        "# Service benchmark (CPU machine)" if providers == ["cpu"] else "# Service benchmark",
        "",
        f"`python benchmarks/service_benchmark.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        table(["", ""], list(info.items())),
        "",
        f"Model entry `{entry.name}` ({entry.manifest.get('description', '')}), native size "
        f"{entry.input_size[0]}x{entry.input_size[1]}, variant fp32"
        + (
            "; its weights are random (an untrained network costs the same time as a trained one)."
            if untrained
            else "."
        ),
        f"Teacher: {entry.teacher_path.name if entry.teacher_path else 'none'}. "
        f"ONNX Runtime intra-op threads: {args.threads}; projection torch threads: {args.legacy_threads}. "
        "Client and server share the machine's cores.",
        "",
    ]
    base_env = {
        "DISTILL_INTRA_OP_THREADS": str(args.threads),
        "DISTILL_LEGACY_THREADS": str(args.legacy_threads),
        "DISTILL_LEGACY_MAX_STEPS": str(max(1000, args.legacy_steps)),
        "DISTILL_LEGACY_STEPS": str(args.legacy_steps),
        "DISTILL_LEGACY_TIMEOUT_S": "36000",
        "DISTILL_MODELS": model,
        "DISTILL_DEFAULT_MODEL": model,
    }

    seed_rows, overhead_rows, load_rows, stage_rows = [], [], [], []
    legacy_notes: list[str] = []
    for provider in [] if args.align_only else providers:
        env = {**base_env, "DISTILL_PROVIDER": provider}
        with serve(zoo, env) as base, serve(zoo, {**env, "DISTILL_MAX_BATCH": "1"}) as base_unbatched:
            print(
                f"[{provider}] (a) {args.student_n} student / {args.legacy_n} legacy requests ...", flush=True
            )
            n_legacy = args.legacy_n if entry.teacher_path is not None else 0
            student, legacy, one_step = seed_table(
                base, model, images[: args.student_n], n_legacy, args.legacy_steps
            )
            s = student.stats()
            seed_rows.append(
                [
                    f"student (/transform, {provider})",
                    s["n"],
                    "-",
                    f"{s['mean']:.3f}",
                    f"{s['p50']:.3f}",
                    f"{s['p95']:.3f}",
                    "1.0x",
                    student.n_errors,
                ]
            )
            if legacy.latencies:
                lg = legacy.stats()
                seed_rows.append(
                    [
                        f"legacy (/legacy/transform, {provider})",
                        lg["n"],
                        args.legacy_steps,
                        f"{lg['mean']:.2f}",
                        f"{lg['p50']:.2f}",
                        f"{lg['p95']:.2f}",
                        f"{lg['mean'] / s['mean']:.0f}x",
                        legacy.n_errors,
                    ]
                )
                if args.legacy_steps < 1000 and one_step.latencies and args.legacy_steps > 1:
                    fixed = statistics.fmean(one_step.latencies)
                    per_step = (lg["mean"] - fixed) / (args.legacy_steps - 1)
                    full = fixed + 999 * per_step
                    seed_rows.append(
                        [
                            f"legacy, 1000 steps EXTRAPOLATED ({provider})",
                            "-",
                            1000,
                            f"{full:.1f}",
                            "-",
                            "-",
                            f"{full / s['mean']:.0f}x",
                            "-",
                        ]
                    )
                    legacy_notes.append(
                        f"{provider}: a 1-step projection request takes {fixed:.2f} s (fixed cost), "
                        f"each further step {per_step * 1000:.1f} ms; the EXTRAPOLATED row is "
                        "fixed + 999 x per-step."
                    )
            if provider == "cpu":
                for label, server in (("on (default)", base), ("off (1)", base_unbatched)):
                    print(
                        f"[{provider}] (b) overhead, micro-batching {label}: HTTP vs bare session.run ...",
                        flush=True,
                    )
                    http, bare, floor = overhead(
                        server, model, entry, images[0], args.threads, args.overhead_pairs
                    )
                    hp, bp = percentile(http.latencies, 50), percentile(bare, 50)
                    overhead_rows.append(
                        [
                            provider,
                            label,
                            f"{entry.input_size[0]}x{entry.input_size[1]}",
                            len(bare),
                            ms(bp),
                            ms(hp),
                            f"{hp / bp:.2f}x",
                            "yes" if hp / bp <= 1.15 else "NO",
                            ms(hp - bp),
                            ms(percentile(floor.latencies, 50)),
                        ]
                    )
                    stage_rows.append(
                        [f"{provider}, micro-batching {label}"]
                        + [ms(statistics.median(t.get(k, 0.0) for t in http.timings)) for k in STAGES]
                    )
            load_rows += load_levels(
                {"on (default)": base, "off (1)": base_unbatched},
                model,
                images,
                clients,
                args.load_seconds,
                provider,
            )

    if args.align_only:
        report += align_report(entry, Path(tmp.name), {**base_env, "DISTILL_PROVIDER": "cpu"}, args.align_n)
    else:
        report += seed_report(args, seed_rows, legacy_notes, overhead_rows, stage_rows, load_rows)
        report += align_report(entry, Path(tmp.name), {**base_env, "DISTILL_PROVIDER": "cpu"}, args.align_n)
    report.append(
        f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(the machine's cores are shared with other jobs: compare rows of one run, not across runs)."
    )
    text = "\n".join(report)
    print("\n" + text)
    default_name = "service_align_cpu.md" if args.align_only else f"service_{'_'.join(providers)}.md"
    out = args.out or REPO / "benchmarks" / "results" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"\nwrote {out}")
    tmp.cleanup()
    return 0


def seed_report(
    args: argparse.Namespace,
    seed_rows: list,
    legacy_notes: list[str],
    overhead_rows: list,
    stage_rows: list,
    load_rows: list,
) -> list[str]:
    """Parts (a) to (c) of the report."""
    report = [
        "## (a) The seed's table: legacy vs student, same images, sequential requests over HTTP",
        "",
        table(["path", "N", "steps", "mean s", "p50 s", "p95 s", "speedup (mean)", "errors"], seed_rows),
        "",
        "Latency is client-side, upload to last byte (JPEG in and out at the native size). The seed measured "
        "19.36 s legacy vs 0.11 s student on a GPU (176x) and 1.5 s student on an 8-vCPU c5.2xlarge.",
        "",
        *[f"- {note}" for note in legacy_notes],
        "",
    ]
    if overhead_rows:
        report += [
            "## (b) Service overhead: /transform p50 over HTTP vs bare `session.run` p50, same model and threads",
            "",
            table(
                [
                    "provider",
                    "micro-batching",
                    "size",
                    "N each",
                    "session.run p50 ms",
                    "HTTP p50 ms",
                    "ratio",
                    "<= 1.15x",
                    "difference ms",
                    "GET /healthz p50 ms",
                ],
                overhead_rows,
            ),
            "",
            "Requests one at a time (multipart body encoded once), alternating with the bare runs; GET /healthz "
            "is the round trip of an empty request. The difference is HTTP, multipart parsing, "
            "JPEG decode/encode, the client, and (micro-batching on) the batcher's wait for company "
            "(`queue`, DISTILL_MAX_WAIT_MS). Median server-side stages (Server-Timing, ms):",
            "",
            table(["", *STAGES], stage_rows),
            "",
        ]
    report += [
        "## (c) Load: concurrent clients for a fixed time, micro-batching on and off",
        "",
        table(
            [
                "provider",
                "micro-batching",
                "clients",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "mean batch",
            ],
            load_rows,
        ),
        "",
        f"Each level runs {args.load_seconds:g} s per server, in two alternating halves (both servers run side by "
        "side, only one is loaded at a time). Closed loop: every client sends its next request when the previous "
        "one returns. `mean batch` is the X-Batch-Size the service reported.",
        "",
    ]
    return report


if __name__ == "__main__":
    sys.exit(main())
