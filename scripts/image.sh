#!/usr/bin/env bash
# Build the platform image without a Docker engine: buildah (Debian package, as root, vfs storage,
# chroot isolation). Where no container registry is reachable the base comes from Debian packages:
# a debootstrap minbase root (cached in the tools cache, keyed by suite and package list) committed
# as a local base image. With BASE=<image> (e.g. python:3.11-slim-bookworm) it is used instead.
#
#   scripts/image.sh build IMAGE   build the Dockerfile's image as IMAGE (makes the base first)
#   scripts/image.sh base          only make the Debian base image; prints its name
#   scripts/image.sh info IMAGE    size and layers of IMAGE
#
# Environment:
#   BASE            base image for the Dockerfile's ARG BASE (default: the Debian base made here)
#   DEBIAN_SUITE    suite of the Debian base (default bookworm: Python 3.11, as the lock needs)
#   DEBIAN_MIRROR   mirror for debootstrap (default: debootstrap's own)
#   BUILDAH         the buildah command (default: buildah --storage-driver vfs)
#   IMAGE_LAYERS    1: keep every step as a cached layer (fast rebuilds, but full copies on vfs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CONSTRUCTOS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constructos}"
SUITE="${DEBIAN_SUITE:-bookworm}"
# What the official python slim image has that the build and the services use.
PACKAGES="python3,python3-venv,python-is-python3,ca-certificates,passwd"
KEY="$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-8)"
BASE_DIR="$CACHE/debian-$SUITE-minbase-$KEY"
BASE_IMAGE="localhost/constructos-base:$SUITE-$KEY"
read -r -a BUILDAH <<<"${BUILDAH:-buildah --storage-driver vfs}"

die() { echo "image: $*" >&2; exit 1; }
log() { echo "image: $*" >&2; }

need() {
  command -v "$1" >/dev/null && return
  log "installing $2 (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null || die "could not install $2: run 'apt-get install $2' as root"
}

has_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# The Debian root as a tarball, made once per suite and package list.
rootfs() {
  [[ -s "$BASE_DIR/rootfs.tar" ]] && return
  need debootstrap debootstrap
  local dir="$BASE_DIR/rootfs.tmp"
  rm -rf "$dir" && mkdir -p "$dir"
  log "debootstrap $SUITE minbase ($PACKAGES) into the tools cache"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$BASE_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed, see $BASE_DIR/debootstrap.log"
  # An image needs no package lists, caches or logs (the official slim images drop them too).
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/log/* "$dir"/debootstrap
  tar -C "$dir" --numeric-owner -cf "$BASE_DIR/rootfs.tar.tmp" .
  mv "$BASE_DIR/rootfs.tar.tmp" "$BASE_DIR/rootfs.tar"
  rm -rf "$dir"
}

base() {
  has_image "$BASE_IMAGE" && { echo "$BASE_IMAGE"; return; }
  rootfs
  local ctr
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add "$ctr" "$BASE_DIR/rootfs.tar" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  "${BUILDAH[@]}" commit --rm --quiet "$ctr" "$BASE_IMAGE" >/dev/null
  log "base image $BASE_IMAGE"
  echo "$BASE_IMAGE"
}

build() {
  local image="${1:?usage: image.sh build IMAGE}" from="${BASE:-}" args=()
  [[ -n "$from" ]] || from="$(base)"
  # Downloads inside the build stage trust what this machine trusts: its CA bundle is mounted
  # read-only for the RUN steps and named in build-stage ARGs; none of it reaches the final stage.
  local bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
  if [[ -s "$bundle" ]]; then
    args+=(--volume "$(readlink -f "$bundle"):/etc/ssl/certs/ca-certificates.crt:ro"
      --build-arg SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
      --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt --build-arg UV_SYSTEM_CERTS=1)
  fi
  # vfs has no copy-on-write: a cached layer is a full copy of the tree, so none are kept (the
  # package downloads are, in the Dockerfile's cache mount). IMAGE_LAYERS=1 keeps them.
  [[ "${IMAGE_LAYERS:-0}" == 1 ]] && args+=(--layers)
  log "building $image from $from"
  "${BUILDAH[@]}" build --isolation chroot --build-arg BASE="$from" "${args[@]}" \
    --tag "$image" --file "$ROOT/Dockerfile" "$ROOT"
  info "$image"
}

info() {
  local image="${1:?usage: image.sh info IMAGE}"
  "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"
  "${BUILDAH[@]}" inspect --type image --format '{{len .OCIv1.RootFS.DiffIDs}} layers{{println}}' "$image"
}

[[ $EUID -eq 0 ]] || die "buildah with vfs storage and chroot isolation runs as root here"
need buildah buildah
case "${1:-}" in
  build) build "${2:-}" ;;
  base) base ;;
  info) info "${2:-}" ;;
  *) die "usage: image.sh build IMAGE | base | info IMAGE" ;;
esac
