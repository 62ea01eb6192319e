"""The benchmarks' shared harness: statistics and Markdown tables, an untrained zoo entry and test images, a real
``distill serve`` on a loopback port driven over HTTP, and the machine description every report starts with."""

from __future__ import annotations

import io
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# ----------------------------------------------------------------------------
# Statistics and tables.


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of a non-empty sequence."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass
class Sample:
    """Latencies (s) of one series of requests, the statuses seen and the response headers kept."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    timings: list[dict[str, float]] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    providers: set[str] = field(default_factory=set)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def stats(self) -> dict[str, float]:
        x = self.latencies
        if not x:
            return {"n": 0}
        return {
            "n": len(x),
            "mean": statistics.fmean(x),
            "p50": percentile(x, 50),
            "p95": percentile(x, 95),
            "p99": percentile(x, 99),
        }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])]
    )


def emit(lines: Sequence[str], out: Path | None) -> None:
    """Print a report and, when ``out`` is given, write it there too (a Markdown file under results/)."""
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def parse_server_timing(header: str) -> dict[str, float]:
    """``decode;dur=1.2, inference;dur=40`` -> {"decode": 0.0012, "inference": 0.040} (seconds)."""
    out = {}
    for part in header.split(","):
        m = re.match(r"\s*([\w-]+)\s*;.*?dur=([\d.]+)", part)
        if m:
            out[m.group(1)] = float(m.group(2)) / 1000
    return out


# ----------------------------------------------------------------------------
# Budgets, errors and the commit.


def seconds_left(deadline: float) -> float:
    """Seconds until ``deadline`` (a ``time.monotonic()`` value); negative once it has passed."""
    return deadline - time.monotonic()


def budget_note(budget_s: float) -> str:
    """What a row skipped for lack of time says."""
    return f"the {budget_s:g} s budget was spent"


def short(e: BaseException) -> str:
    """An exception as one short line for a table cell: its end, where a server's log says what went wrong."""
    text = " ".join(str(e).split()) or type(e).__name__
    return ("..." + text[-300:]) if len(text) > 300 else text


def commit() -> str:
    """The checkout's short commit hash, or "unknown" outside git."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------
# The model entry and the test images.


def make_untrained_entry(
    root: Path, preset: str, size: int, seed: int = 0, variants: Sequence[str] = ()
) -> Path:
    """Export an UNTRAINED Pix2PixHD ``preset`` at ``size`` px plus a random teacher and direction as a zoo
    entry through the real ``distill export`` (for timing only: the weights are random), with ``variants``
    (e.g. fp16) kept whatever their error: on random weights the export's gate means nothing, and the service
    gates them again at warm-up."""
    import torch

    from networks.pix2pixhd import build_generator
    from networks.pix2pixhd.checkpoints import save_generator as save_student
    from networks.pix2pixhd.config import get_preset
    from networks.stylegan2 import load_generator

    work = root / "_sources"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = get_preset(preset)
    save_student(build_generator(cfg), work / "student.pt", cfg)
    distill = [sys.executable, "-m", "distill"]
    subprocess.run(
        [
            *distill,
            "teacher",
            "random",
            "--resolution",
            str(size),
            "--seed",
            str(seed),
            "--out",
            str(work / "teacher.pt"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    w_dim = load_generator(work / "teacher.pt").w_dim
    np.save(work / "direction.npy", np.random.default_rng(seed).standard_normal(w_dim).astype(np.float32))
    out = root / f"untrained-{preset}-{size}"
    subprocess.run(
        [
            *distill,
            "export",
            str(work / "student.pt"),
            "--out",
            str(out),
            "--description",
            f"UNTRAINED {preset} Pix2PixHD for benchmarks (random weights)",
            "--teacher",
            str(work / "teacher.pt"),
            "--direction",
            str(work / "direction.npy"),
            "--alpha",
            "1.5",
            "--layers",
            "0:8",
            "--attribute",
            "random",
            "--size",
            f"{size}x{size}",
            "--timing-repeats",
            "0",
        ]
        + (
            ["--variants", ",".join(variants), "--min-variant-psnr", "0", "--num-eval", "4"]
            if variants
            else []
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def test_images(entry, n: int) -> list[bytes]:
    """``n`` JPEG uploads at the entry's native size: faces sampled from its teacher when it ships one
    (the legacy path's own domain), else smooth random colour fields."""
    import torch

    h, w = entry.input_size
    if entry.teacher_path is not None:
        from editing.images import to_uint8
        from networks.stylegan2 import load_generator

        G = load_generator(entry.teacher_path)
        with torch.no_grad():
            z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(1234))
            pixels = to_uint8(torch.cat([G(z[i : i + 1], truncation_psi=0.7) for i in range(n)]))
    else:
        rng = np.random.default_rng(1234)
        pixels = np.stack(
            [
                np.asarray(
                    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
                        (w, h), Image.BICUBIC
                    )
                )
                for _ in range(n)
            ]
        )
    out = []
    for p in pixels:
        im = Image.fromarray(p)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


# ----------------------------------------------------------------------------
# The server.


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def serve(zoo: Path, env: dict[str, str], ready_timeout: float = 300.0, workers: int = 1) -> Iterator[str]:
    """Run ``distill serve --workers N`` on a free loopback port with ``env`` added; yield its base URL; stop it."""
    port = free_port()
    full_env = {**os.environ, "DISTILL_MODEL_ZOO": str(zoo), **env}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distill",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://{HOST}:{port}"
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(
                        f"distill serve exited ({proc.returncode}):\n{log.read().decode()[-3000:]}"
                    )
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"distill serve not ready after {ready_timeout:.0f} s")
                time.sleep(0.5)
            yield base
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def server_pids(port: int) -> set[int]:
    """The `distill serve --port PORT` process and all its descendants (its uvicorn workers, their children)."""
    procs: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        procs[pid] = (ppid, cmd)
    roots = [p for p, (_, cmd) in procs.items() if "serve" in cmd and f"--port {port}" in cmd]
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in procs.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


def cpu_seconds(pids: set[int], main_thread: bool = False) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far: all their threads, or (``main_thread``)
    only each one's main thread, where a uvicorn worker runs its event loop. Gone processes count 0."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def post(client: httpx.Client, url: str, image: bytes, sample: Sample, **form: str) -> None:
    """One upload; its latency, or the reason it failed, goes into ``sample``."""
    t0 = time.perf_counter()
    try:
        r = client.post(url, files={"image": ("face.jpg", image, "image/jpeg")}, data=form)
    except httpx.HTTPError as e:
        sample.error(type(e).__name__)
        return
    elapsed = time.perf_counter() - t0
    record(sample, r, elapsed)


def record(sample: Sample, r: httpx.Response, elapsed: float) -> None:
    if r.status_code != 200:
        sample.error(str(r.status_code))
        return
    sample.latencies.append(elapsed)
    sample.timings.append(parse_server_timing(r.headers.get("Server-Timing", "")))
    if r.headers.get("X-Batch-Size"):
        sample.batch_sizes.append(int(r.headers["X-Batch-Size"]))
    if r.headers.get("X-Provider"):
        sample.providers.add(r.headers["X-Provider"])


# ----------------------------------------------------------------------------
# (a) legacy vs student, (b) overhead, (c) load.


# ----------------------------------------------------------------------------
# The machine.


def machine() -> dict[str, str]:
    import onnxruntime as ort
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        mem_s = f"{mem / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        mem_s = "unknown"
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": cpu,
        "cores usable": str(len(os.sched_getaffinity(0))),
        "memory": mem_s,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime providers": ", ".join(ort.get_available_providers()),
        "torch": torch.__version__,
        "commit": commit(),
    }
