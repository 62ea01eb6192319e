#!/bin/bash
# Smoke-test the CPU image: start it on a free port, wait for /readyz, POST an image to /transform,
# check the answer (200, an image body, Server-Timing and X-Model/X-Provider headers), check the
# HEALTHCHECK command, stop the container.
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
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ "$ENGINE" = podman ]; then RUN=(podman --runtime runc); else RUN=(docker); fi

port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name="distill-smoke-$$"
args=(run -d --name "$name" --read-only --tmpfs /tmp --cpus 2 -e DISTILL_LEGACY_WORKERS=0)
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
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from PIL import Image

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

img = Image.new("RGB", (300, 240))
img.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(240) for x in range(300)])
buf = io.BytesIO()
img.save(buf, format="JPEG", quality=90)
boundary = uuid.uuid4().hex
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"face.jpg\"\r\n"
        f"Content-Type: image/jpeg\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
req = urllib.request.Request(base + "/transform", data=body, method="POST",
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
t0 = time.perf_counter()
with urllib.request.urlopen(req, timeout=60) as r:
    status, headers, content = r.status, r.headers, r.read()
elapsed = time.perf_counter() - t0
problems = []
if status != 200:
    problems.append(f"status {status}")
if not headers.get("Content-Type", "").startswith("image/"):
    problems.append(f"Content-Type {headers.get('Content-Type')}")
for h in ("Server-Timing", "X-Model", "X-Provider"):
    if not headers.get(h):
        problems.append(f"missing header {h}")
try:
    out = Image.open(io.BytesIO(content))
    out.load()
except Exception as e:  # noqa: BLE001 - any decode failure is a failed check
    problems.append(f"body is not an image ({e})")
    out = None
if problems:
    sys.exit("smoke_test: FAIL /transform: " + "; ".join(problems))
print(f"smoke_test: POST /transform -> {status} {headers['Content-Type']} {out.size[0]}x{out.size[1]} "
      f"in {elapsed * 1000:.0f} ms; X-Model={headers['X-Model']} X-Provider={headers['X-Provider']}")
print(f"smoke_test: Server-Timing: {headers['Server-Timing']}")
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
