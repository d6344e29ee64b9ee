#!/usr/bin/env bash
# Build the binaries of the single-node cluster from the Go module proxy, once, into the tools cache
# (each keyed by its pinned version; a finished binary is never rebuilt).
#
#   scripts/node-build.sh kubernetes   kube-apiserver, kubelet, controller-manager, scheduler, proxy, kubectl
#   scripts/node-build.sh kserve       KServe's controller manager (cmd/manager) + its config/ from the module zip
#   scripts/node-build.sh coredns      CoreDNS (in-cluster DNS)
#   scripts/node-build.sh traefik      Traefik (the Gateway API implementation)
#   scripts/node-build.sh all          all of them
#
# Versions: KUBE_VERSION (v1.31.4), KSERVE_VERSION (v0.20.0), COREDNS_VERSION (v1.13.1),
# TRAEFIK_VERSION (v3.6.12). Binaries are stripped and built with CGO_ENABLED=0.
set -euo pipefail

CACHE="${CONSTRUCTOS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constructos}"
KUBE_VERSION="${KUBE_VERSION:-v1.31.4}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.13.1}"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}"
KUBE_DIR="$CACHE/kubernetes-$KUBE_VERSION"
KSERVE_DIR="$CACHE/kserve-$KSERVE_VERSION"
COREDNS_DIR="$CACHE/coredns-$COREDNS_VERSION"
TRAEFIK_DIR="$CACHE/traefik-$TRAEFIK_VERSION"
KUBE_BINARIES=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

die() { echo "node-build: $*" >&2; exit 1; }
log() { echo "node-build: $*" >&2; }
command -v go >/dev/null || die "Go is needed once to build the node's binaries and was not found on PATH."

# The go.mod of MODULE@VERSION as the proxy serves it (a path in the module cache).
gomod_of() { (cd "$1" && GOFLAGS=-mod=mod go mod download -json "$2" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p'); }
# The folder of MODULE@VERSION's sources in the module cache.
dir_of() { (cd "$1" && GOFLAGS=-mod=mod go mod download -json "$2" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p'); }

all_built() { local dir="$1"; shift; for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done; }

kubernetes() {
  all_built "$KUBE_DIR" "${KUBE_BINARIES[@]}" && return
  log "building Kubernetes $KUBE_VERSION (${KUBE_BINARIES[*]}) into $KUBE_DIR (cold: ~15 min on 2 cores, once)"
  local src="$KUBE_DIR/src" gomod staged v=k8s.io/component-base/version minor="${KUBE_VERSION#v1.}"
  mkdir -p "$src"
  [[ -f "$src/go.mod" ]] || echo "module kubernetesbuild" >"$src/go.mod"
  gomod="$(gomod_of "$src" "k8s.io/kubernetes@$KUBE_VERSION")"
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy."
  # The module zip of k8s.io/kubernetes has no staging/ folder: replace each staged module
  # (the `=> ./staging/...` lines of its go.mod) with its published k8s.io/* version.
  staged="$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
  {
    echo "module kubernetesbuild"
    echo "go 1.22"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    for name in $staged; do echo "replace $name => $name v0${KUBE_VERSION#v1}"; done
  } >"$src/go.mod"
  local pkgs=() b
  for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  mkdir -p "$KUBE_DIR/partial"
  (cd "$src" && go get "${pkgs[@]/%/@$KUBE_VERSION}" >/dev/null &&
    CGO_ENABLED=0 go build -trimpath -o "$KUBE_DIR/partial/" \
      -ldflags="-s -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*} -X $v.gitTreeState=clean" \
      "${pkgs[@]}") || die "building Kubernetes $KUBE_VERSION failed."
  for b in "${KUBE_BINARIES[@]}"; do mv "$KUBE_DIR/partial/$b" "$KUBE_DIR/$b"; done
  rmdir "$KUBE_DIR/partial"
  log "built ${KUBE_BINARIES[*]} in $KUBE_DIR"
}

kserve() {
  [[ -x "$KSERVE_DIR/manager" && -x "$KSERVE_DIR/agent" && -d "$KSERVE_DIR/config" ]] && return
  log "building KServe $KSERVE_VERSION's manager and agent into $KSERVE_DIR (cold: ~6 min, once)"
  local src="$KSERVE_DIR/src" gomod mod
  mkdir -p "$src"
  [[ -f "$src/go.mod" ]] || echo "module kservebuild" >"$src/go.mod"
  gomod="$(gomod_of "$src" "github.com/kserve/kserve@$KSERVE_VERSION")"
  [[ -f "$gomod" ]] || die "could not download github.com/kserve/kserve@$KSERVE_VERSION from the Go module proxy."
  # The manager's own go.mod pins its dependencies with replace lines (controller-runtime, k8s.io/*):
  # a module that requires it must carry the same lines.
  {
    echo "module kservebuild"
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo "require github.com/kserve/kserve $KSERVE_VERSION"
    awk '/^replace \($/ {inblock=1; next} inblock && /^\)/ {inblock=0; next}
         inblock && NF {print "replace " $0} /^replace [^(]/ {print}' "$gomod"
  } >"$src/go.mod"
  # the manager (the controller and its webhooks) and the agent (the payload logger sidecar)
  mkdir -p "$KSERVE_DIR/partial"
  (cd "$src" && go get "github.com/kserve/kserve/cmd/manager@$KSERVE_VERSION" "github.com/kserve/kserve/cmd/agent@$KSERVE_VERSION" >/dev/null &&
    CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$KSERVE_DIR/partial/" github.com/kserve/kserve/cmd/manager github.com/kserve/kserve/cmd/agent) ||
    die "building KServe's manager and agent failed."
  mod="$(dir_of "$src" "github.com/kserve/kserve@$KSERVE_VERSION")"
  rm -rf "$KSERVE_DIR/config" && cp -r "$mod/config" "$KSERVE_DIR/config" && chmod -R u+w "$KSERVE_DIR/config"
  cp "$mod/LICENSE" "$KSERVE_DIR/LICENSE"
  mv "$KSERVE_DIR/partial/agent" "$KSERVE_DIR/agent"
  mv "$KSERVE_DIR/partial/manager" "$KSERVE_DIR/manager"
  rmdir "$KSERVE_DIR/partial"
  log "built $KSERVE_DIR/manager and agent"
}

simple() {  # NAME MODULE PACKAGE VERSION DIR: a plain `go install` of one command
  local name="$1" module="$2" pkg="$3" version="$4" dir="$5"
  [[ -x "$dir/$name" ]] && return
  log "building $name $version into $dir (once)"
  mkdir -p "$dir"
  GOBIN="$dir/partial" CGO_ENABLED=0 go install -trimpath -ldflags=-s "$pkg@$version" || die "building $name failed."
  mv "$dir/partial/$(basename "$pkg")" "$dir/$name" && rmdir "$dir/partial"
  local src; src="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "$module@$version" 2>/dev/null | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' || true)"
  [[ -n "$src" && -f "$src/LICENSE" ]] && cp "$src/LICENSE" "$dir/LICENSE"
  log "built $dir/$name"
}

coredns() { simple coredns github.com/coredns/coredns github.com/coredns/coredns "$COREDNS_VERSION" "$COREDNS_DIR"; }
traefik() { simple traefik github.com/traefik/traefik/v3 github.com/traefik/traefik/v3/cmd/traefik "$TRAEFIK_VERSION" "$TRAEFIK_DIR"; }

case "${1:-all}" in
  kubernetes) kubernetes ;;
  kserve) kserve ;;
  coredns) coredns ;;
  traefik) traefik ;;
  all) kubernetes; kserve; coredns; traefik ;;
  paths) echo "KUBE_DIR=$KUBE_DIR"; echo "KSERVE_DIR=$KSERVE_DIR"; echo "COREDNS_DIR=$COREDNS_DIR"; echo "TRAEFIK_DIR=$TRAEFIK_DIR" ;;
  *) die "usage: $0 kubernetes|kserve|coredns|traefik|all|paths" ;;
esac
