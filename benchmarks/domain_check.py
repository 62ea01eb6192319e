"""The domain check of a model-zoo entry on held-out clean renders, and what it adds to a served request.

Accuracy: clean renders (the toy domain's photographs, seeds from ``CLEAN_SEED0``: no teacher, pair or
evaluation drew them) of adults (renderer age >= ADULT_AGE, the student's domain) and of children (age below
it), each framed as ``/transform`` frames it (PNG upload, ``imaging.decode``: centred crop at the native size)
and judged by the entry's :class:`~app.domain.DomainCheck`: the share of adults inside and of children outside,
both also by renderer-age band (where the scorer errs).

Latency: two in-process services on the entry (``DISTILL_DOMAIN_CHECK=warn`` and ``off``, both ONNX Runtime on
the CPU) answer the same uploads in alternation; the table gives each one's median round trip, and the median ``domain`` stage
(Server-Timing) of the checked one.

    python benchmarks/domain_check.py --entry model_zoo/toyfaces-age --num 500 --out benchmarks/results/domain_check_cpu.md
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app import imaging  # noqa: E402
from app.config import Settings  # noqa: E402
from app.domain import DomainCheck  # noqa: E402
from model_zoo.registry import load_entry  # noqa: E402
from training.directions import z_from_seeds  # noqa: E402
from training.toyfaces.attributes import ADULT_AGE  # noqa: E402
from training.toyfaces.clean_renders import CLEAN_SEED0  # noqa: E402
from training.toyfaces.renderer import params_from_z, render  # noqa: E402

CHILD_BANDS = ((0.0, 0.1), (0.1, 0.15), (0.15, ADULT_AGE))
ADULT_BANDS = ((ADULT_AGE, 0.3), (0.3, 1.0))


def clean_renders(
    num: int, z_dim: int, size: int
) -> tuple[list[bytes], list[float], list[bytes], list[float]]:
    """PNG uploads and renderer ages of the first ``num`` adults and ``num`` children from ``CLEAN_SEED0`` on."""
    adults: list[tuple[bytes, float]] = []
    children: list[tuple[bytes, float]] = []
    seed = CLEAN_SEED0
    while len(adults) < num or len(children) < num:
        p = params_from_z(z_from_seeds([seed], z_dim)[0].double().numpy())
        group = adults if p.age >= ADULT_AGE else children
        if len(group) < num:
            buf = io.BytesIO()
            Image.fromarray(render(p, size)).save(buf, format="PNG")
            group.append((buf.getvalue(), float(p.age)))
        seed += 1
    return (
        [b for b, _ in adults],
        [a for _, a in adults],
        [b for b, _ in children],
        [a for _, a in children],
    )


def framed(upload: bytes, native_hw: tuple[int, int]) -> np.ndarray:
    """The picture the student sees: ``/transform``'s decoding and centred crop at the native size."""
    s = Settings()
    decoded = imaging.decode(
        upload,
        native_hw=native_hw,
        max_bytes=s.max_upload_bytes,
        max_pixels=s.max_pixels,
        keep_original=False,
    )
    return decoded.pixels


def accuracy(check: DomainCheck, native_hw: tuple[int, int], num: int, z_dim: int) -> list[str]:
    adults, adult_ages, children, child_ages = clean_renders(num, z_dim, native_hw[0])
    inside = np.array([check.judge([framed(u, native_hw)]).inside for u in adults])
    outside = np.array([not check.judge([framed(u, native_hw)]).inside for u in children])
    lines = [
        f"domain {check.ranges()}, clean renders from seed {CLEAN_SEED0}",
        f"adults (age >= {ADULT_AGE}) inside:  {inside.mean():.1%} of {len(inside)}",
        *_bands(inside, np.array(adult_ages), ADULT_BANDS, "inside"),
        f"children (age < {ADULT_AGE}) outside: {outside.mean():.1%} of {len(outside)}",
        *_bands(outside, np.array(child_ages), CHILD_BANDS, "outside"),
    ]
    return lines


def _bands(
    hits: np.ndarray, ages: np.ndarray, bands: tuple[tuple[float, float], ...], what: str
) -> list[str]:
    """The share of ``hits`` per renderer-age band (the last band's top included)."""
    lines = []
    for low, high in bands:
        band = (ages >= low) & ((ages < high) | (high == bands[-1][1]) & (ages <= high))
        if band.any():
            lines.append(f"  age {low:.2f}-{high:.2f}: {hits[band].mean():.1%} of {int(band.sum())} {what}")
    return lines


def latency(entry_dir: Path, requests: int) -> list[str]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    entry = load_entry(entry_dir)
    uploads, _, children, _ = clean_renders(8, entry.spec.teacher.z_dim if entry.spec.teacher else 128, 128)
    uploads += children
    settings = Settings(  # one engine for both: a choice by measurement could differ between the two
        model_zoo=entry_dir.parent,
        models=(entry.name,),
        legacy_workers=0,
        max_batch=1,
        engine="onnxruntime",
        provider="cpu",
    )
    times: dict[str, list[float]] = {"warn": [], "off": []}
    stage: list[float] = []
    with (
        TestClient(create_app(settings.replace(domain_check="warn"))) as warn,
        TestClient(create_app(settings.replace(domain_check="off"))) as off,
    ):
        for client in (warn, off):
            while client.get("/readyz").status_code != 200:
                time.sleep(0.1)
        for i in range(requests):
            for mode, client in (("warn", warn), ("off", off)) if i % 2 else (("off", off), ("warn", warn)):
                start = time.perf_counter()
                r = client.post("/transform", files={"image": ("f.png", uploads[i % len(uploads)])})
                times[mode].append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, r.text
                if mode == "warn":
                    timing = dict(
                        part.split(";dur=")
                        for part in r.headers["Server-Timing"].split(", ")
                        if ";dur=" in part
                    )
                    stage.append(float(timing["domain"]))
    warn_ms, off_ms = statistics.median(times["warn"]), statistics.median(times["off"])
    return [
        f"/transform round trip, median of {requests} each (in-process, batch 1, alternating):",
        f"  DISTILL_DOMAIN_CHECK=warn {warn_ms:.2f} ms, off {off_ms:.2f} ms: {warn_ms - off_ms:+.2f} ms",
        f"  the domain stage itself (Server-Timing): median {statistics.median(stage):.2f} ms",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entry", type=Path, default=REPO / "model_zoo" / "toyfaces-age", help="model-zoo entry")
    p.add_argument("--num", type=int, default=500, help="adults and children each")
    p.add_argument("--requests", type=int, default=200, help="timed /transform requests per mode")
    p.add_argument("--out", type=Path, default=None, help="also write the figures to this markdown file")
    args = p.parse_args()
    entry = load_entry(args.entry)
    if entry.spec.domain is None:
        print(f"{args.entry}: the entry records no domain", file=sys.stderr)
        return 2
    check = DomainCheck(entry.name, entry.spec.domain, entry.path, "warn")
    z_dim = entry.spec.teacher.z_dim if entry.spec.teacher and entry.spec.teacher.z_dim else 128
    lines = accuracy(check, entry.input_size, args.num, z_dim) + latency(args.entry, args.requests)
    print("\n".join(lines))
    if args.out is not None:
        command = " ".join(["python", *sys.argv])
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
        args.out.write_text(
            f"# Domain check of {entry.name}\n\n`{command}` on {machine}\n\n```\n"
            + "\n".join(lines)
            + "\n```\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
