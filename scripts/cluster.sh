#!/usr/bin/env bash
# A real Kubernetes API server for the cluster tests: kube-apiserver (built from the Go module proxy,
# cached by version) over etcd, with a self-signed serving certificate, token authentication, RBAC
# authorization, and the KServe, Strimzi and Prometheus Operator CRDs installed.
# It has no controllers and no kubelet: it proves API semantics, schemas, RBAC and patches, not pods.
#
#   scripts/cluster.sh up       build kube-apiserver if needed, start etcd + kube-apiserver, install the CRDs
#   scripts/cluster.sh down     stop both and delete their files (the next `up` starts empty)
#   scripts/cluster.sh status   exit 0 when the API server answers
#   scripts/cluster.sh build    only build the Kubernetes binaries into the tools cache (scripts/node-build.sh)
#
# Environment:
#   KUBE_VERSION        Kubernetes release of kube-apiserver (default v1.31.4)
#   KUBE_APISERVER      the binary (default $CONSTRUCTOS_TOOLS_CACHE/kubernetes-<version>/kube-apiserver)
#   ETCD                the etcd binary (default: etcd on PATH; Debian/Ubuntu: apt-get install etcd-server)
#   CLUSTER_DIR         certificates, tokens, data, logs and the kubeconfig (default $CONSTRUCTOS_DATA_DIR/cluster)
#   CLUSTER_PORT        the API server's port (default: a free port)
#   CLUSTER_START_TIMEOUT  seconds to wait for the API server (default 120)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUBE_VERSION="${KUBE_VERSION:-v1.31.4}"
CACHE="${CONSTRUCTOS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constructos}"
BIN_DIR="$CACHE/kubernetes-$KUBE_VERSION"
KUBE_APISERVER="${KUBE_APISERVER:-$BIN_DIR/kube-apiserver}"
DIR="${CLUSTER_DIR:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/cluster}"
TIMEOUT="${CLUSTER_START_TIMEOUT:-120}"
KUBECONFIG_FILE="$DIR/kubeconfig"
CRDS="$ROOT/manifests/crds"

die() { echo "cluster: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

build() {  # kube-apiserver and kubectl come from the one Kubernetes build of the node (scripts/node-build.sh)
  [[ -x "$KUBE_APISERVER" ]] || bash "$ROOT/scripts/node-build.sh" kubernetes
}


need() { command -v "$1" >/dev/null || die "$1 is needed and was not found on PATH ($2)."; }

kubectl_bin() {  # kubectl on PATH, else the one built with kube-apiserver
  if command -v kubectl >/dev/null; then command -v kubectl; return; fi
  build >&2
  echo "$BIN_DIR/kubectl"
}

running() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

ready() {  # the API server answers /readyz with the admin token
  [[ -f "$DIR/admin.token" && -f "$DIR/port" ]] || return 1
  curl -sf --max-time 5 --cacert "$DIR/tls.crt" -H "Authorization: Bearer $(cat "$DIR/admin.token")" \
    "https://127.0.0.1:$(cat "$DIR/port")/readyz" >/dev/null
}

credentials() {  # serving certificate (SAN 127.0.0.1), service-account keys, static tokens
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kube-apiserver" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$DIR/tls.key" -out "$DIR/tls.crt" 2>/dev/null
  openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
  head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$DIR/admin.token"
  # token,user,uid,"groups": the admin (system:masters) only; tests impersonate everyone else.
  echo "$(cat "$DIR/admin.token"),admin,admin,\"system:masters\"" >"$DIR/tokens.csv"
  chmod 600 "$DIR"/*.key "$DIR/admin.token" "$DIR/tokens.csv"
}

kubeconfig() {
  local port="$1"
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: constructos-test
    cluster:
      server: https://127.0.0.1:$port
      certificate-authority-data: $(base64 -w0 <"$DIR/tls.crt")
users:
  - name: admin
    user:
      token: $(cat "$DIR/admin.token")
contexts:
  - name: constructos-test
    context: {cluster: constructos-test, user: admin}
current-context: constructos-test
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

kserve_crd() {  # the InferenceService CRD around the schema the manifest checker validates with
  python3 - "$ROOT/manifests/schemas/inferenceservice-v1beta1.json" <<'EOF'
import json, sys

schema = json.load(open(sys.argv[1]))
names = {"kind": "InferenceService", "listKind": "InferenceServiceList", "plural": "inferenceservices",
         "singular": "inferenceservice", "shortNames": ["isvc"]}
version = {"name": "v1beta1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
           "subresources": {"status": {}}}
print(json.dumps({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                  "metadata": {"name": "inferenceservices.serving.kserve.io"},
                  "spec": {"group": "serving.kserve.io", "names": names, "scope": "Namespaced",
                           "versions": [version]}}))
EOF
}

install_crds() {
  local kubectl
  kubectl="$(kubectl_bin)"
  kserve_crd | "$kubectl" --kubeconfig "$KUBECONFIG_FILE" apply --server-side -f - >/dev/null
  "$kubectl" --kubeconfig "$KUBECONFIG_FILE" apply --server-side -f "$CRDS" >/dev/null
  local jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Established")].status}{"\n"}{end}' established
  for ((i = 0; i < 120; i++)); do  # `kubectl wait` fails on a CRD that has no conditions yet
    established="$("$kubectl" --kubeconfig "$KUBECONFIG_FILE" get crd -o jsonpath="$jsonpath" 2>/dev/null || true)"
    if [[ -n "$established" && "$established" != *False* && "$(grep -c True <<<"$established")" == "$(wc -l <<<"$established")" ]]; then
      return
    fi
    sleep 0.5
  done
  die "the CRDs were not established within 60s"
}

up() {
  if ready; then echo "cluster: already up at https://127.0.0.1:$(cat "$DIR/port") (kubeconfig: $KUBECONFIG_FILE)"; return; fi
  down >/dev/null
  local etcd="${ETCD:-$(command -v etcd || true)}"
  [[ -x "$etcd" ]] || die "etcd was not found on PATH (Debian/Ubuntu: apt-get install etcd-server, or set ETCD)."
  need openssl "Debian/Ubuntu: apt-get install openssl"
  need curl "Debian/Ubuntu: apt-get install curl"
  build
  mkdir -p "$DIR"
  credentials
  local port="${CLUSTER_PORT:-$(free_port)}" etcd_port etcd_peer
  etcd_port="$(free_port)"
  etcd_peer="$(free_port)"
  nohup "$etcd" --name constructos --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "constructos=http://127.0.0.1:$etcd_peer" >"$DIR/etcd.log" 2>&1 </dev/null &
  echo $! >"$DIR/etcd.pid"
  nohup "$KUBE_APISERVER" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$DIR/tls.crt" --tls-private-key-file "$DIR/tls.key" \
    --token-auth-file "$DIR/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$DIR/sa.pub" \
    --service-account-signing-key-file "$DIR/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --enable-priority-and-fairness=false --profiling=false >"$DIR/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$DIR/kube-apiserver.pid"
  echo "$port" >"$DIR/port"
  kubeconfig "$port"
  for ((i = 0; i < TIMEOUT * 2; i++)); do
    if ready; then break; fi
    for proc in etcd kube-apiserver; do
      running "$proc" || { tail -5 "$DIR/$proc.log" >&2; down >/dev/null; die "$proc exited while starting; see the lines above"; }
    done
    sleep 0.5
  done
  ready || { down >/dev/null; die "the API server did not become ready within ${TIMEOUT}s"; }
  install_crds || { down >/dev/null; die "installing the CRDs failed"; }
  echo "cluster: kube-apiserver $KUBE_VERSION ready at https://127.0.0.1:$port (kubeconfig: $KUBECONFIG_FILE)"
}

down() {
  local pid
  for proc in kube-apiserver etcd; do
    if running "$proc"; then
      pid="$(cat "$DIR/$proc.pid")"
      kill "$pid"
      for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
      echo "cluster: stopped $proc $pid"
    fi
  done
  rm -rf "$DIR/etcd"
  rm -f "$DIR"/{tls.crt,tls.key,sa.key,sa.pub,admin.token,tokens.csv,port,kubeconfig} "$DIR"/*.pid "$DIR"/*.log
  rmdir "$DIR" 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) ready ;;
  build) build ;;
  *) die "usage: $0 up|down|status|build" ;;
esac
