"""A hostile mixed load: 16 clients for two minutes against one `distill serve`, every answer checked.

Each client loops over request kinds drawn at random: plain `/transform`, the strength dial at strengths
inside and outside its range, a large photo on an FFHQ-aligned model at `size=original` (alignment and
paste-back), `faces=all`, legacy jobs (submitted, polled, fetched), and oversized uploads (a PNG whose
header claims more pixels than `DISTILL_MAX_PIXELS`). Every answer must be a 2xx, or a 4xx/503 with a JSON
body naming an error code (503 with `Retry-After`); anything else (a 500, a dropped connection, plain text)
is a failure. The server's memory (its process and children, from /proc) is sampled every 0.2 s and set
beside the serving pod's request and limit in deploy/k8s/serve-cpu.yaml (4 GiB, 8 GiB).

    python benchmarks/mixed_load.py --seconds 120 --clients 16 --out benchmarks/results/mixed_load_cpu.md
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.harness import emit, machine, serve, server_pids, table  # noqa: E402
from model_zoo.registry import write_entry  # noqa: E402
from tests.app_helpers import png_header_only  # noqa: E402

GIB = 1024**3
POD_REQUEST, POD_LIMIT = 4 * GIB, 8 * GIB
KINDS = ("plain", "strength", "face", "faces_all", "legacy_job", "oversized")


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_zoo(root: Path) -> None:
    """The shipped default and dial, and a copy of the default that expects FFHQ-aligned faces."""
    for name in ("toyfaces-age", "toyfaces-age-strength"):
        (root / name).symlink_to(REPO / "model_zoo" / name, target_is_directory=True)
    faces = root / "faces"
    shutil.copytree(REPO / "model_zoo" / "toyfaces-age", faces, ignore=shutil.ignore_patterns("evaluation"))
    manifest = json.loads((faces / "manifest.json").read_text())
    manifest["name"] = "faces"
    manifest["input"]["alignment"] = "ffhq"
    write_entry(faces, manifest, list(manifest["files"]))


def server_rss(port: int) -> int:
    """Resident bytes of the `distill serve --port PORT` process and all its descendants."""
    total = 0
    for pid in server_pids(port):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class Tally:
    """Answers per (kind, status) and the failures, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failures: list[str] = []

    def check(self, kind: str, r: httpx.Response) -> None:
        ok = 200 <= r.status_code < 300
        reason = ""
        if not ok:
            try:
                body = r.json()
                code = body.get("error") or body.get("code") or body.get("detail")
            except ValueError:
                code = None
            if code is None or not (400 <= r.status_code < 500 or r.status_code == 503):
                reason = f"{kind}: {r.status_code} {r.text[:120]!r}"
            elif r.status_code == 503 and "Retry-After" not in r.headers:
                reason = f"{kind}: 503 without Retry-After"
        label = str(r.status_code) if ok else f"{r.status_code} {_code(r)}"
        with self.lock:
            self.counts[(kind, label)] += 1
            if reason:
                self.failures.append(reason)

    def fail(self, kind: str, why: str) -> None:
        with self.lock:
            self.counts[(kind, "no answer")] += 1
            self.failures.append(f"{kind}: {why}")


def _code(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("error") or body.get("code") or "")
    except ValueError:
        return ""


def client_loop(base: str, deadline: float, seed: int, uploads: dict[str, bytes], tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as c:
        while time.monotonic() < deadline:
            kind = rng.choice(KINDS)
            try:
                if kind == "plain":
                    r = c.post(f"{base}/transform", files={"image": ("f.jpg", uploads["face"])})
                elif kind == "strength":
                    s = rng.uniform(-2.0, 2.0)
                    r = c.post(
                        f"{base}/transform",
                        files={"image": ("f.jpg", uploads["face"])},
                        data={"model": "toyfaces-age-strength", "strength": f"{s:.3f}"},
                    )
                elif kind in ("face", "faces_all"):
                    data = {"model": "faces", "size": "original"}
                    if kind == "faces_all":
                        data["faces"] = "all"
                    r = c.post(f"{base}/transform", files={"image": ("p.jpg", uploads["photo"])}, data=data)
                elif kind == "oversized":
                    r = c.post(f"{base}/transform", files={"image": ("b.png", uploads["bomb"])})
                else:
                    r = c.post(
                        f"{base}/legacy/jobs",
                        files={"image": ("f.jpg", uploads["face"])},
                        data={"steps": "3"},
                    )
                    tally.check(kind, r)
                    if r.status_code == 202:
                        job = r.json()["id"]
                        while time.monotonic() < deadline + 60:
                            s = c.get(f"{base}/legacy/jobs/{job}")
                            if s.status_code != 200 or s.json().get("status") not in ("queued", "running"):
                                break
                            time.sleep(0.5)
                        r = c.get(f"{base}/legacy/jobs/{job}/result")
                        kind = "legacy_result"
                    else:
                        continue
                tally.check(kind, r)
                if r.status_code == 503:
                    time.sleep(float(r.headers.get("Retry-After", "1")))
            except httpx.HTTPError as e:
                tally.fail(kind, type(e).__name__)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--photo-side", type=int, default=3000, help="side of the large face photo (px)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((args.photo_side, args.photo_side)))
    face = np.asarray(Image.open(REPO / "model_zoo/toyfaces-age/samples/00000007.png").convert("RGB"))
    uploads = {"face": jpeg(face), "photo": jpeg(photo), "bomb": png_header_only(40000, 40000)}
    tally, peak = Tally(), [0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        make_zoo(Path(tmp))
        env = {"DISTILL_MODELS": "toyfaces-age,toyfaces-age-strength,faces", "DISTILL_LEGACY_WORKERS": "1"}
        with serve(Path(tmp), env) as base:
            port = int(base.rsplit(":", 1)[1])
            idle = server_rss(port)
            deadline = time.monotonic() + args.seconds
            threads = [
                threading.Thread(target=client_loop, args=(base, deadline, i, uploads, tally))
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak[0] = max(peak[0], server_rss(port))
                time.sleep(0.2)
            peak[1] = server_rss(port)
            ready = httpx.get(f"{base}/readyz", timeout=10).status_code
    rows = [[kind, status, n] for (kind, status), n in sorted(tally.counts.items())]
    m = machine()
    lines = [
        f"{args.clients} clients for {args.seconds:.0f} s, one `distill serve` (defaults, one legacy worker); "
        f"{m['cpu']}, {m['cores usable']} cores, load average at the end {m['load average at start']}",
        "",
        table(["request", "answer", "count"], rows),
        "",
        f"- answers: {sum(tally.counts.values())}; failures (a 5xx other than 503, no JSON error, a 503 "
        f"without Retry-After, no answer): {len(tally.failures)}",
        f"- server memory (process and children): idle {idle / GIB:.2f} GiB, peak {peak[0] / GIB:.2f} GiB, "
        f"after {peak[1] / GIB:.2f} GiB; the serving pod's request {POD_REQUEST / GIB:.0f} GiB, "
        f"limit {POD_LIMIT / GIB:.0f} GiB",
        f"- /readyz after the load: {ready}",
    ]
    lines += [f"  - {f}" for f in tally.failures[:20]]
    emit(lines, args.out)
    return 0 if not tally.failures and peak[0] < POD_REQUEST and ready == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
