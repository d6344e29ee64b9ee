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

# A throwaway module that requires MODULE@VERSION and carries its go.mod's replace and exclude lines
# (a module with replace directives cannot be built with a plain `go install pkg@version`); builds PKGS into DIR.
replaced_build() {
  local module="$1" version="$2" dir="$3"; shift 3
  local src="$dir/src" gomod pkg
  mkdir -p "$src" "$dir/partial"
  [[ -f "$src/go.mod" ]] || echo "module build" >"$src/go.mod"
  gomod="$(gomod_of "$src" "$module@$version")"
  [[ -f "$gomod" ]] || die "could not download $module@$version from the Go module proxy."
  {
    echo "module build"
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo "require $module $version"
    awk '/^replace \($/ {inblock=1; next} inblock && /^\)/ {inblock=0; next}
         inblock && NF && !/=> \.\.?\// {print "replace " $0} /^replace [^(]/ && !/=> \.\.?\// {print}
         /^exclude [^(]/ {print}' "$gomod"
  } >"$src/go.mod"
  (cd "$src" && go get "${@/%/@$version}" >/dev/null &&
    CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$dir/partial/" "$@") || die "building $* failed."
  for pkg in "$@"; do mv "$dir/partial/$(basename "$pkg")" "$dir/$(basename "$pkg")"; done
  rmdir "$dir/partial"
  mod="$(dir_of "$src" "$module@$version")"
  [[ -f "$mod/LICENSE" ]] && cp "$mod/LICENSE" "$dir/LICENSE" && chmod u+w "$dir/LICENSE"
}

kserve() {
  [[ -x "$KSERVE_DIR/manager" && -x "$KSERVE_DIR/agent" && -d "$KSERVE_DIR/config" ]] && return
  log "building KServe $KSERVE_VERSION's manager and agent into $KSERVE_DIR (cold: ~8 min, once)"
  # the manager (the controller and its webhooks) and the agent (the payload logger sidecar)
  replaced_build github.com/kserve/kserve "$KSERVE_VERSION" "$KSERVE_DIR" \
    github.com/kserve/kserve/cmd/manager github.com/kserve/kserve/cmd/agent
  local mod; mod="$(dir_of "$KSERVE_DIR/src" "github.com/kserve/kserve@$KSERVE_VERSION")"
  rm -rf "$KSERVE_DIR/config" && cp -r "$mod/config" "$KSERVE_DIR/config" && chmod -R u+w "$KSERVE_DIR/config"
  log "built $KSERVE_DIR/manager and agent"
}

simple() {  # NAME MODULE PACKAGE VERSION DIR: a plain `go install` of one command
  local name="$1" module="$2" pkg="$3" version="$4" dir="$5" src
  [[ -x "$dir/$name" ]] && return
  log "building $name $version into $dir (once)"
  mkdir -p "$dir"
  GOBIN="$dir/partial" CGO_ENABLED=0 go install -trimpath -ldflags=-s "$pkg@$version" || die "building $name failed."
  mv "$dir/partial/$(basename "$pkg")" "$dir/$name" && rmdir "$dir/partial"
  src="$(dir_of "$dir" "$module@$version" 2>/dev/null || true)"
  if [[ -n "$src" && -f "$src/LICENSE" ]]; then cp "$src/LICENSE" "$dir/LICENSE" && chmod u+w "$dir/LICENSE"; fi
  log "built $dir/$name"
}

coredns() { simple coredns github.com/coredns/coredns github.com/coredns/coredns "$COREDNS_VERSION" "$COREDNS_DIR"; }
traefik() {
  [[ -x "$TRAEFIK_DIR/traefik" ]] && return
  log "building traefik $TRAEFIK_VERSION into $TRAEFIK_DIR (once)"
  replaced_build github.com/traefik/traefik/v3 "$TRAEFIK_VERSION" "$TRAEFIK_DIR" github.com/traefik/traefik/v3/cmd/traefik
}

case "${1:-all}" in
  kubernetes) kubernetes ;;
  kserve) kserve ;;
  coredns) coredns ;;
  traefik) traefik ;;
  all) kubernetes; kserve; coredns; traefik ;;
  paths) echo "KUBE_DIR=$KUBE_DIR"; echo "KSERVE_DIR=$KSERVE_DIR"; echo "COREDNS_DIR=$COREDNS_DIR"; echo "TRAEFIK_DIR=$TRAEFIK_DIR" ;;
  *) die "usage: $0 kubernetes|kserve|coredns|traefik|all|paths" ;;
esac
