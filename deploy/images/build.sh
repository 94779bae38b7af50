#!/usr/bin/env bash
# Builds the five service images with podman, tagged parley-<service>:$VERSION (default dev).
#
#   deploy/images/build.sh [service...]       (make images runs it, then check.py)
#
# VERSION and IMAGE_SOURCE (the repository's URL) become the images' OCI labels.
# Where no container registry answers, the base images are built here first, under the
# upstream names the Dockerfiles use: python:3.11-slim from Debian bookworm (debootstrap),
# and ghcr.io/astral-sh/uv from the uv wheel on PyPI. An image already present is kept.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
services=("$@")
((${#services[@]})) || services=(gateway conversation llm-router retrieval ingest)
version="${VERSION:-dev}"
makefile_uv="$(sed -n 's/^UV_VERSION := //p' "$root/Makefile")"
uv_version="${UV_VERSION:-$makefile_uv}"
python_image=docker.io/library/python:3.11-slim
uv_image="ghcr.io/astral-sh/uv:$uv_version"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/deploy/images/containers.conf}"

step() { printf '== %s (%ds)\n' "$1" "$SECONDS"; }

# Runs a command with its output kept aside, shown only when it fails.
quietly() {
    local log status=0
    log="$(mktemp)"
    "$@" >"$log" 2>&1 || status=$?
    ((status == 0)) || tail -n 80 "$log" >&2
    rm -f "$log"
    return "$status"
}

install_tools() {
    local missing=() tool
    for tool in podman buildah runc debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]})) || return 0
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly apt-get update
    quietly apt-get install -y "${missing[@]}"
}

build_python_image() {
    step "building $python_image from Debian bookworm"
    local rootfs
    rootfs="$(mktemp -d)"
    quietly debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$rootfs" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    # What a container never reads: documentation, translations, package lists and caches.
    rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian} "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*
    tar -C "$rootfs" -c . | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$python_image" >/dev/null
    rm -rf "$rootfs"
}

build_uv_image() {
    step "building $uv_image from the uv wheel"
    local dir container
    dir="$(mktemp -d)"
    quietly python3 -m pip download --no-deps --only-binary=:all: --dest "$dir" "uv==$uv_version"
    python3 -m zipfile -e "$dir"/uv-*.whl "$dir/wheel"
    chmod 0755 "$dir"/wheel/uv-*.data/scripts/{uv,uvx}
    container="$(buildah from scratch)"
    buildah copy --quiet "$container" "$dir"/wheel/uv-*.data/scripts/uv /uv >/dev/null
    buildah copy --quiet "$container" "$dir"/wheel/uv-*.data/scripts/uvx /uvx >/dev/null
    buildah config --entrypoint '["/uv"]' "$container"
    buildah commit --quiet --rm "$container" "$uv_image" >/dev/null
    rm -rf "$dir"
}

# A plain `docker build` takes the Dockerfiles' default uv: it must be the Makefile's.
stale="$(grep -L "^ARG UV_VERSION=$makefile_uv\$" "$root"/services/*/Dockerfile || true)"
[[ -z "$stale" ]] || { echo "ARG UV_VERSION differs from the Makefile's in: $stale" >&2; exit 1; }

install_tools
podman image exists "$python_image" || build_python_image
podman image exists "$uv_image" || build_uv_image

build_args=(--build-arg "VERSION=$version" --build-arg "UV_VERSION=$uv_version")
[[ -z "${IMAGE_SOURCE:-}" ]] || build_args+=(--build-arg "SOURCE=$IMAGE_SOURCE")
# Behind a TLS-inspecting proxy, uv inside the build needs the proxy's CA to reach PyPI.
[[ ! -s "${SSL_CERT_FILE:-}" ]] || build_args+=(--secret "id=ca,src=$SSL_CERT_FILE")

for service in "${services[@]}"; do
    step "building parley-$service:$version"
    quietly podman build --pull=never "${build_args[@]}" \
        --file "$root/services/$service/Dockerfile" --tag "parley-$service:$version" "$root"
done
step "built ${services[*]}"
