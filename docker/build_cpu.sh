#!/bin/bash
# Build the CPU image (docker/Dockerfile.cpu) as IMAGE (default stylegan2-distill:cpu). Idempotent.
#
# On a normal Docker host this is simply:
#     docker build -f docker/Dockerfile.cpu -t stylegan2-distill:cpu .
# and that is what the script runs when a working `docker` is found (ENGINE=docker to force it).
#
# Otherwise (ENGINE=podman, e.g. this project's CI machines: no Docker daemon, no registry access)
# it applies the podman recipe:
#   1. podman runs with runc and without default ulimits (crun and the default limits fail here). The
#      script changes no host file: it needs `default_ulimits = []` under [containers] in podman's
#      configuration (CONTAINERS_CONF when set, which podman then reads instead, else
#      /etc/containers/containers.conf, a file in /etc/containers/containers.conf.d/, or
#      ~/.config/containers/containers.conf), and stops with exit code 2 and that line when none has it;
#   2. the Debian base cannot be pulled: `debootstrap --variant=minbase bookworm` into a temporary
#      folder, slimmed as debian:bookworm-slim is (no apt caches/lists, docs, man pages, translations),
#      `podman import` it as BASE_IMAGE (default localhost/debian-bookworm-minbase), once;
#   3. pip inside the build uses the host's pip configuration: its CA bundle (`cert`), its local
#      indexes (`extra-index-url file://...`) and wheel folders (`find-links`), mounted read-only
#      (the folders at the same paths) and passed as PIP_ARGS; the CPU torch wheel then comes from find-links;
#   4. podman --runtime runc build --network=host --format docker (keeps the HEALTHCHECK).
set -euo pipefail

IMAGE=${IMAGE:-stylegan2-distill:cpu}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-bookworm-minbase:latest}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi

if [ "$ENGINE" = docker ]; then
    exec docker build -f docker/Dockerfile.cpu -t "$IMAGE" "$@" .
fi

command -v podman >/dev/null || { echo "build_cpu.sh: neither a working docker nor podman found (apt-get install podman runc debootstrap)" >&2; exit 2; }

# 1. podman's configuration: no default ulimits (checked, never written).
if [ -n "${CONTAINERS_CONF:-}" ]; then
    CONFS=("$CONTAINERS_CONF")
else
    CONFS=(/etc/containers/containers.conf /etc/containers/containers.conf.d/*.conf "${HOME:-/root}/.config/containers/containers.conf")
fi
if ! grep -qs '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[\]' "${CONFS[@]}"; then
    echo "build_cpu.sh: podman needs default ulimits off here; add 'default_ulimits = []' under [containers]" \
        "in ${CONFS[0]} and re-run (this script changes no host file)" >&2
    exit 2
fi
PODMAN=(podman --runtime runc)

# 2. The Debian base image.
if ! podman image exists "$BASE_IMAGE"; then
    command -v debootstrap >/dev/null || { echo "build_cpu.sh: debootstrap is needed to make $BASE_IMAGE" >&2; exit 2; }
    rootfs=$(mktemp -d /tmp/distill-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    # Slim it as debian:bookworm-slim is (about 125 MB less): debootstrap leaves its downloaded .debs and
    # the apt lists behind, and docs, man pages and translations are kept out of later installs too.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/*
    find "$rootfs"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/lintian/*' \
        > "$rootfs"/etc/dpkg/dpkg.cfg.d/docker-slim
    tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE"
    rm -rf "$rootfs"
    trap - EXIT
fi

# 3. pip configuration of this host, mounted read-only into the build.
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
pip_conf=$("$PY" -m pip config list 2>/dev/null || true)
conf_value() {  # last value of a pip option, from any scope (global., :env:., user.)
    printf '%s\n' "$pip_conf" | sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" | tail -n 1
}
PIP_ARGS=()
MOUNTS=()
mount_ro() { [ -e "$1" ] && MOUNTS+=(-v "$1:$1:ro"); }
cert=$(conf_value cert)
if [ -n "$cert" ] && [ -f "$cert" ]; then
    # not at its own path: the image's /etc/ssl/certs belongs to its ca-certificates package
    MOUNTS+=(-v "$cert:/run/host-pip-cert.pem:ro"); PIP_ARGS+=(--cert /run/host-pip-cert.pem)
fi
for url in $(conf_value extra-index-url); do
    # a local simple index links to files beside it (../files/...): mount its parent folder
    case "$url" in file://*) mount_ro "$(dirname "${url#file://}")" ;; esac
    PIP_ARGS+=(--extra-index-url "$url")
done
for dir in $(conf_value find-links); do
    mount_ro "$dir"; PIP_ARGS+=(--find-links "$dir")
done
TORCH_INDEX_ARGS=()
if ls "$(conf_value find-links)"/torch-*+cpu-*.whl >/dev/null 2>&1; then
    TORCH_INDEX_ARGS=(--build-arg "TORCH_INDEX=")  # the CPU wheel lies in find-links
fi

# 4. Build.
"${PODMAN[@]}" build --network=host --format docker \
    --ignorefile docker/Dockerfile.cpu.dockerignore \
    "${MOUNTS[@]}" \
    --build-arg "BASE=$BASE_IMAGE" \
    --build-arg "PIP_ARGS=${PIP_ARGS[*]}" \
    "${TORCH_INDEX_ARGS[@]}" \
    -f docker/Dockerfile.cpu -t "$IMAGE" "$@" .
podman image inspect "$IMAGE" --format 'built {{.RepoTags}}: {{.Size}} bytes'
