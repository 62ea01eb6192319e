#!/bin/bash
# Smoke-test the CPU image: start it on a free port, wait for /readyz, POST an image to /transform,
# check the answer (200, an image body, Server-Timing and X-Model/X-Provider/X-Engine headers), POST
# one with a strength to the first strength-conditioned model when one is served (X-Strength), check
# the HEALTHCHECK command, stop the container.
#
#   docker/smoke_test.sh [IMAGE]            # default stylegan2-distill:cpu
#   MODEL_ZOO=/path/to/zoo docker/smoke_test.sh   # serve these entries (mounted read-only at /models)
#
# ENGINE=docker|podman as in build_cpu.sh (podman runs with runc and --network=host).
# READY_TIMEOUT (s, default 180). Exit status 0 only when every check passed.
set -euo pipefail

IMAGE=${1:-${IMAGE:-stylegan2-distill:cpu}}
READY_TIMEOUT=${READY_TIMEOUT:-180}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}   # the standard library suffices

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ "$ENGINE" = podman ]; then RUN=(podman --runtime runc); else RUN=(docker); fi

port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name="distill-smoke-$$"
args=(run -d --name "$name" --read-only --tmpfs /tmp --cpus 2)
if [ "$ENGINE" = podman ]; then
    args+=(--network=host -e "PORT=$port")   # rootful podman here: host network, the service binds $port
else
    args+=(-p "127.0.0.1:$port:8000")
fi
if [ -n "${MODEL_ZOO:-}" ]; then
    args+=(-v "$(cd "$MODEL_ZOO" && pwd):/models:ro" -e DISTILL_MODEL_ZOO=/models)
fi

cleanup() {
    status=$?
    if [ $status -ne 0 ]; then
        echo "--- container log ---" >&2
        "${RUN[@]}" logs "$name" 2>&1 | tail -n 40 >&2 || true
    fi
    "${RUN[@]}" rm -f "$name" >/dev/null 2>&1 || true
    exit $status
}
trap cleanup EXIT

echo "smoke_test: starting $IMAGE on 127.0.0.1:$port ($ENGINE)"
"${RUN[@]}" "${args[@]}" "$IMAGE" >/dev/null

"$PY" - "$port" "$READY_TIMEOUT" "$name" "${RUN[@]}" <<'PYEOF'
import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib

port, timeout, name, engine = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
base = f"http://127.0.0.1:{port}"

start = time.monotonic()
while True:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
            if r.status == 200:
                break
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        pass
    running = subprocess.run([*engine, "inspect", "--format", "{{.State.Running}}", name],
                             capture_output=True, text=True).stdout.strip()
    if running != "true":
        sys.exit("smoke_test: FAIL the container exited before /readyz turned ready")
    if time.monotonic() - start > timeout:
        sys.exit(f"smoke_test: FAIL /readyz not ready after {timeout:.0f} s")
    time.sleep(1)
print(f"smoke_test: ready after {time.monotonic() - start:.1f} s")

with urllib.request.urlopen(base + "/models", timeout=10) as r:
    models = json.load(r)
print("smoke_test: /models ->", json.dumps(models)[:300])


def png(width: int, height: int) -> bytes:
    """A colour-gradient RGB PNG, written with the standard library only (the host needs no Pillow)."""
    rows = b"".join(b"\0" + bytes(v for x in range(width) for v in ((x * 7) % 256, (y * 5) % 256, (x + y) % 256))
                    for y in range(height))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def multipart(fields: dict, image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"face.png\"\r\n"
                 f"Content-Type: image/png\r\n\r\n".encode() + image + f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post(path: str, fields: dict, timeout: float):
    body, content_type = multipart(fields, png(300, 240))
    req = urllib.request.Request(base + path, data=body, method="POST", headers={"Content-Type": content_type})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read(), time.perf_counter() - t0
    except urllib.error.HTTPError as e:  # a 4xx/5xx answer: report it as a failed check
        return e.code, e.headers, e.read(), time.perf_counter() - t0


status, headers, content, elapsed = post("/transform", {}, 60)
problems = []
if status != 200:
    problems.append(f"status {status}")
if not headers.get("Content-Type", "").startswith("image/"):
    problems.append(f"Content-Type {headers.get('Content-Type')}")
for h in ("Server-Timing", "X-Model", "X-Provider", "X-Engine"):
    if not headers.get(h):
        problems.append(f"missing header {h}")
magic = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"RIFF": "image/webp"}
kind = next((t for m, t in magic.items() if content.startswith(m)), None)
if kind is None or kind != headers.get("Content-Type"):
    problems.append(f"body ({len(content)} bytes, starts {content[:4]!r}) is not the {headers.get('Content-Type')} announced")
if problems:
    sys.exit("smoke_test: FAIL /transform: " + "; ".join(problems) + f" {content[:200]!r}")
print(f"smoke_test: POST /transform (300x240 PNG) -> {status} {headers['Content-Type']} {len(content)} bytes "
      f"in {elapsed * 1000:.0f} ms; X-Model={headers['X-Model']} X-Provider={headers['X-Provider']} "
      f"X-Engine={headers['X-Engine']} X-Precision={headers.get('X-Precision')}")
print(f"smoke_test: Server-Timing: {headers['Server-Timing']}")
for m in models["models"]:
    print(f"smoke_test: model {m['name']}: engine {m.get('engine')} {m.get('precision')} ({m.get('engine_reason')})")

# A strength-conditioned model (the strength dial), when one is served: a strength inside its range.
dial = next((m for m in models["models"] if m.get("strength")), None)
if dial:
    low, high = dial["strength"]["range"]
    strength = min(max(0.5, low), high)
    status, headers, content, elapsed = post("/transform", {"model": dial["name"], "strength": f"{strength:g}"}, 60)
    if (status != 200 or not headers.get("Content-Type", "").startswith("image/")
            or headers.get("X-Model") != dial["name"] or headers.get("X-Strength") != f"{strength:g}"):
        sys.exit(f"smoke_test: FAIL /transform strength={strength:g} on {dial['name']} -> {status} "
                 f"{headers.get('Content-Type')} X-Strength={headers.get('X-Strength')} {content[:200]!r}")
    print(f"smoke_test: POST /transform model={dial['name']} strength={strength:g} -> {status} "
          f"{headers['Content-Type']} {len(content)} bytes in {elapsed * 1000:.0f} ms; "
          f"X-Strength={headers['X-Strength']} X-Engine={headers.get('X-Engine')}")
else:
    print("smoke_test: no strength-conditioned model served: strength not checked")

# The legacy path (torch projection in its own process), when the default model ships a teacher.
default = next(m for m in models["models"] if m["name"] == models["default"])
if default["legacy"]:
    status, headers, content, elapsed = post("/legacy/transform", {"steps": "5"}, 300)
    if status != 200 or not headers.get("Content-Type", "").startswith("image/"):
        sys.exit(f"smoke_test: FAIL /legacy/transform -> {status} {headers.get('Content-Type')} {content[:200]!r}")
    print(f"smoke_test: POST /legacy/transform (5 steps) -> {status} {headers['Content-Type']} in {elapsed:.1f} s")
else:
    print("smoke_test: the default model ships no teacher: /legacy/transform not checked")
PYEOF

"${RUN[@]}" logs "$name" 2>&1 | grep -m1 '^distill-entrypoint:' || true

# The image's HEALTHCHECK: configured, and its command passes inside the running container.
"${RUN[@]}" image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}' | grep -q healthz \
    || { echo "smoke_test: FAIL the image has no HEALTHCHECK on /healthz" >&2; exit 1; }
"${RUN[@]}" exec "$name" python3 -c \
    "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)" \
    || { echo "smoke_test: FAIL healthcheck command" >&2; exit 1; }
user=$("${RUN[@]}" exec "$name" id -u)
[ "$user" != 0 ] || { echo "smoke_test: FAIL the service runs as root" >&2; exit 1; }
echo "smoke_test: healthcheck ok, running as uid $user"
echo "smoke_test: PASS"
