#!/bin/sh
# Container entrypoint: size the service to the CPUs this container may actually use, then start it.
#
# The CPU count is the smallest of nproc (the cpuset / affinity) and the CFS quota
# (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), rounded up. From it:
#   DISTILL_WORKERS           uvicorn worker processes: 1 up to 4 CPUs, else CPUs / 4 (1 on the GPU image)
#   DISTILL_INTRA_OP_THREADS  ONNX Runtime threads per worker: CPUs / workers
#   DISTILL_LEGACY_THREADS    torch threads of each projection process: CPUs / 2
# Any of them already set in the environment is kept; DISTILL_CPUS overrides the CPU count itself
# (DISTILL_CGROUP_ROOT, default /sys/fs/cgroup, says where the cgroup files are).
# Extra arguments go to `distill serve`; `--print-config` prints the settings and exits.
set -eu

cg=${DISTILL_CGROUP_ROOT:-/sys/fs/cgroup}
cpus=$(nproc)
quota=""
if [ -r "$cg/cpu.max" ]; then
    read -r q p < "$cg/cpu.max"
    [ "$q" != "max" ] && quota=$(( (q + p - 1) / p ))
elif [ -r "$cg/cpu/cpu.cfs_quota_us" ]; then
    q=$(cat "$cg/cpu/cpu.cfs_quota_us")
    p=$(cat "$cg/cpu/cpu.cfs_period_us")
    [ "$q" -gt 0 ] && quota=$(( (q + p - 1) / p ))
fi
if [ -n "$quota" ] && [ "$quota" -lt "$cpus" ]; then
    cpus=$quota
fi
cpus=${DISTILL_CPUS:-$cpus}
[ "$cpus" -ge 1 ] || cpus=1

if [ -z "${DISTILL_WORKERS:-}" ]; then
    if [ "${DISTILL_PROVIDER:-auto}" = "cuda" ] || [ "$cpus" -le 4 ]; then
        DISTILL_WORKERS=1
    else
        DISTILL_WORKERS=$(( cpus / 4 ))
    fi
fi
: "${DISTILL_INTRA_OP_THREADS:=$(( cpus / DISTILL_WORKERS > 0 ? cpus / DISTILL_WORKERS : 1 ))}"
: "${DISTILL_LEGACY_THREADS:=$(( cpus / 2 > 0 ? cpus / 2 : 1 ))}"
: "${OMP_NUM_THREADS:=$DISTILL_INTRA_OP_THREADS}"
export DISTILL_WORKERS DISTILL_INTRA_OP_THREADS DISTILL_LEGACY_THREADS OMP_NUM_THREADS

# GPU image: CUDA/cuDNN come from NVIDIA's PyPI wheels (site-packages/nvidia/*/lib).
for lib in /opt/venv/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$lib" ] && LD_LIBRARY_PATH="${lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

variant=""  # the GPU image: which variant the CUDA provider loads (each model's log line says what it got)
[ "${DISTILL_PROVIDER:-auto}" = "cuda" ] && \
    variant=", variant ${DISTILL_VARIANT_CUDA:-auto (fp16 where the entry ships it, else fp32)}"
echo "distill-entrypoint: ${cpus} CPUs -> ${DISTILL_WORKERS} worker(s) x ${DISTILL_INTRA_OP_THREADS} ORT threads," \
     "legacy ${DISTILL_LEGACY_THREADS} threads, provider ${DISTILL_PROVIDER:-auto}${variant}" >&2
if [ "${1:-}" = "--print-config" ]; then
    printf 'CPUS=%s\nDISTILL_WORKERS=%s\nDISTILL_INTRA_OP_THREADS=%s\nDISTILL_LEGACY_THREADS=%s\n' \
        "$cpus" "$DISTILL_WORKERS" "$DISTILL_INTRA_OP_THREADS" "$DISTILL_LEGACY_THREADS"
    exit 0
fi
exec distill serve --host 0.0.0.0 --port "${PORT:-8000}" --workers "$DISTILL_WORKERS" "$@"
