#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, with KServe's own controller, from Debian packages
# and the Go module proxy only (no registry of images is needed):
#   containerd + runc + bridge CNI (Debian), etcd (Debian), kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubelet, kube-proxy (built once into the tools cache), a pause image and a
#   CoreDNS image built here, and KServe's manager running beside the control plane (its CRDs,
#   webhooks and `inferenceservice-config` from its module, Standard deployment mode), with its
#   agent image (payload logger) built from the same module.
#
#   scripts/node.sh up        build what is missing, start everything, wait for a Ready node, DNS and KServe
#   scripts/node.sh down      stop every process by PID, remove the pods' containers and mounts, and put
#                             back what the node changed on the host (iptables chains, the bridge, sysctls)
#   scripts/node.sh status    exit 0 when the node is Ready
#   scripts/node.sh import IMAGE   copy IMAGE from buildah's store into the node's containerd
#   scripts/node.sh prepare IMAGE  before `make deploy ENV=node`: the image is on the node, the node's
#                             database, bucket and Secret exist on the stores of `make stores-up`
#   scripts/node.sh wait-platform  after it: every Deployment and InferenceService Ready
#   scripts/node.sh address   the host address pods reach this machine's own servers on
#   scripts/node.sh env       KUBECONFIG=... for `eval`
#
# Environment:
#   NODE_DIR          certificates, configs, logs, PIDs, container state (default $CONSTRUCTOS_DATA_DIR/node)
#   NODE_NAME         the Node's name (default constructos-node)
#   NODE_ADDRESS      the host address the API server advertises and pods reach the host on
#                     (default: the source address of the default route)
#   NODE_API_PORT     the API server's port (default 6443)
#   NODE_START_TIMEOUT  seconds to wait for each part (default 180)
#   KUBE_VERSION, KSERVE_VERSION, COREDNS_VERSION: see scripts/node-build.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/node"
# shellcheck disable=SC1091
eval "$(bash "$ROOT/scripts/node-build.sh" paths)"
DIR="${NODE_DIR:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/node}"
NAME="${NODE_NAME:-constructos-node}"
API_PORT="${NODE_API_PORT:-6443}"
TIMEOUT="${NODE_START_TIMEOUT:-180}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.13.1}"
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
POD_CIDR=10.244.0.0/16
POD_SUBNET=10.244.0.0/24
BRIDGE=cni0
SOCK="/run/constructos-node/containerd.sock"
KUBECONFIG_FILE="$DIR/kubeconfig"
PAUSE_IMAGE="localhost/constructos/pause:3.10"
COREDNS_IMAGE="localhost/constructos/coredns:$COREDNS_VERSION"
AGENT_IMAGE="docker.io/kserve/agent:$KSERVE_VERSION"
# the sysctls the kubelet, kube-proxy and the bridge plugin set: read before, put back after
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# stopped in this order (the reverse of the start)
PROCESSES=(kserve-manager kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd)

die() { echo "node: $*" >&2; exit 1; }
log() { echo "node: $*" >&2; }

address() {
  [[ -n "${NODE_ADDRESS:-}" ]] && { echo "$NODE_ADDRESS"; return; }
  ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1
}

kubectl() { "$KUBE_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
ctr() { command ctr --address "$SOCK" --namespace k8s.io "$@"; }
running() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start() {  # NAME COMMAND...: in the background, its own session, logs in DIR/NAME.log
  local name="$1"; shift
  setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

wait_for() {  # WHAT COMMAND...: until COMMAND succeeds, or fail with the logs of dead processes
  local what="$1" deadline=$((SECONDS + TIMEOUT)); shift
  until "$@" >/dev/null 2>&1; do
    for proc in "${PROCESSES[@]}"; do
      if [[ -f "$DIR/$proc.pid" ]] && ! running "$proc"; then
        tail -15 "$DIR/$proc.log" >&2 || true
        die "$proc exited while waiting for $what (log: $DIR/$proc.log)"
      fi
    done
    ((SECONDS < deadline)) || die "$what not within ${TIMEOUT}s"
    sleep 1
  done
}

# --- prerequisites ------------------------------------------------------------------------

prerequisites() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v buildah >/dev/null || missing+=(buildah)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "needs root, and these Debian packages: ${missing[*]}"
    log "installing ${missing[*]} (Debian packages)"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
      || die "could not install ${missing[*]}"
  fi
  [[ $(id -u) == 0 ]] || die "a node needs root (containerd, kubelet, iptables, mounts)"
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
}

# --- images built here (no registry): pause, CoreDNS, KServe's agent ---------------------------

BUILDAH=(buildah --storage-driver vfs)

oci_archive() {  # NAME IMAGE ROOTFS_DIR ENTRYPOINT_JSON [USER]: a one-layer image from a folder
  local archive="$1" image="$2" rootfs="$3" entrypoint="$4" user="${5:-65532:65532}" ctr_id
  [[ -s "$archive" ]] && return
  ctr_id="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy "$ctr_id" "$rootfs" / >/dev/null
  "${BUILDAH[@]}" config --entrypoint "$entrypoint" --user "$user" "$ctr_id"
  "${BUILDAH[@]}" commit --rm --quiet --format oci "$ctr_id" "$image" >/dev/null
  "${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive.partial:$image"
  mv "$archive.partial" "$archive"
}

pause_image() {  # the sandbox image: a static binary that sleeps until signalled
  local dir="$CACHE_IMAGES/pause-$(sha256sum "$HERE/pause.c" | cut -c1-8)"
  [[ -s "$dir/pause.tar" ]] || {
    mkdir -p "$dir/rootfs"
    gcc -Os -static -o "$dir/rootfs/pause" "$HERE/pause.c" || die "building the pause binary failed"
    strip "$dir/rootfs/pause"
    oci_archive "$dir/pause.tar" "$PAUSE_IMAGE" "$dir/rootfs" '["/pause"]'
  }
  echo "$dir/pause.tar"
}

static_image() {  # BINARY IMAGE ENTRYPOINT_JSON: a Go binary + the CA bundle on an empty root
  local binary="$1" image="$2" entrypoint="$3" key dir
  key="$(printf '%s' "$image" | sha256sum | cut -c1-8)"
  dir="$CACHE_IMAGES/$(basename "$binary")-$key"
  [[ -s "$dir/image.tar" ]] || {
    rm -rf "$dir/rootfs" && mkdir -p "$dir/rootfs/etc/ssl/certs" "$dir/rootfs/tmp"
    cp "$binary" "$dir/rootfs/$(basename "$binary")"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/rootfs/etc/ssl/certs/"
    chmod 1777 "$dir/rootfs/tmp"
    oci_archive "$dir/image.tar" "$image" "$dir/rootfs" "$entrypoint"
  }
  echo "$dir/image.tar"
}

import_archive() { ctr images import --no-unpack=false "$1" >/dev/null || die "importing $1 into containerd failed"; }

# IMAGE from buildah's store (what `make image` built) into the node's containerd.
import_image() {
  local image="${1:?usage: node.sh import IMAGE}" tmp
  "${BUILDAH[@]}" inspect --type image "$image" >/dev/null 2>&1 \
    || die "image $image is not in buildah's store: build it first (make image IMAGE=$image)"
  tmp="$(mktemp -d)"
  # uncompressed: containerd unpacks it at once (gzip would cost more than the copy)
  "${BUILDAH[@]}" push --quiet --disable-compression "$image" "oci-archive:$tmp/image.tar:$image" || { rm -rf "$tmp"; die "exporting $image failed"; }
  ctr images import "$tmp/image.tar" >/dev/null || { rm -rf "$tmp"; die "importing $image into containerd failed"; }
  rm -rf "$tmp"
  log "imported $image into the node's containerd"
}

# --- certificates and kubeconfigs -----------------------------------------------------------

pki() {
  local pki="$DIR/pki" addr="$1"
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=constructos-node-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # NAME SUBJECT [SANS]: a certificate signed by the node's CA
  cert() {
    local name="$1" subject="$2" sans="${3:-}" ext="$pki/$1.ext"
    openssl req -new -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=clientAuth,serverAuth"; [[ -n "$sans" ]] && echo "subjectAltName=$sans"; } >"$ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 30 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$ext"
  }
  cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:$addr,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert admin "/O=system:masters/CN=admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NAME" "IP:$addr,IP:127.0.0.1,DNS:$NAME"
  cert kube-proxy "/CN=system:kube-proxy"
  cert kserve "/CN=kserve-controller-manager"
  cert kserve-webhook "/CN=kserve-webhook-server-service.kserve.svc" \
    "DNS:kserve-webhook-server-service.kserve.svc,DNS:kserve-webhook-server-service.kserve.svc.cluster.local"
  chmod 600 "$pki"/*.key
}

kubeconfig_for() {  # USER FILE [SERVER]
  local user="$1" file="$2" server="${3:-https://127.0.0.1:$API_PORT}" pki="$DIR/pki"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: constructos-node
    cluster:
      server: $server
      certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
  - name: $user
    user:
      client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
      client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
  - name: constructos-node
    context: {cluster: constructos-node, user: $user}
current-context: constructos-node
EOF
  chmod 600 "$file"
}

# --- host state: recorded on the way up, put back on the way down ----------------------------

record_host() {
  local s
  : >"$DIR/sysctls.before"
  for s in "${SYSCTLS[@]}"; do
    [[ -e "/proc/sys/${s//.//}" ]] && echo "$s=$(cat "/proc/sys/${s//.//}")" >>"$DIR/sysctls.before"
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && echo yes >"$DIR/bridge.before" || echo no >"$DIR/bridge.before"
}

# Delete the chains and rules that name KUBE-* or CNI-* (kubelet, kube-proxy, the CNI plugins),
# table by table, and keep every other rule.
clean_iptables() {
  local save restore table
  for family in ip ip6; do
    save="${family/ip/iptables}-save"; restore="${family/ip/iptables}-restore"
    [[ $family == ip6 ]] && { save=ip6tables-save; restore=ip6tables-restore; }
    command -v "$save" >/dev/null || continue
    for table in filter nat mangle; do
      "$save" -t "$table" 2>/dev/null | grep -E 'KUBE-|CNI-' >/dev/null || continue
      "$save" -t "$table" | grep -vE '^:(KUBE|CNI)-|-A (KUBE|CNI)-|-j (KUBE|CNI)-|--comment "?(kubernetes|CNI|name: )' \
        | "$restore" -T "$table" 2>/dev/null || log "could not clean the $family $table table"
    done
  done
}

restore_host() {
  local line
  clean_iptables
  if [[ "$(cat "$DIR/bridge.before" 2>/dev/null || echo no)" == no ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link set "$BRIDGE" down 2>/dev/null || true
    ip link delete "$BRIDGE" 2>/dev/null || true
  fi
  if [[ -f "$DIR/sysctls.before" ]]; then
    while IFS= read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || log "could not put back $line"; done <"$DIR/sysctls.before"
  fi
}

# --- the parts ------------------------------------------------------------------------------

containerd_config() {
  local pause="$1"
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d"
  containerd config default | python3 -c '
import re, sys
text, pause, root, state, sock, confdir = sys.stdin.read(), *sys.argv[1:]
subs = {
    r"^root = .*$": f"root = \"{root}\"",
    r"^state = .*$": f"state = \"{state}\"",
    r"^  address = \"/run/containerd/containerd.sock\"": f"  address = \"{sock}\"",
    # the VM withholds CAP_SYS_RESOURCE: the -998 OOM score CRI asks for every sandbox is refused
    r"restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
    r"sandbox_image = .*$": f"sandbox_image = \"{pause}\"",
    r"bin_dir = \"/opt/cni/bin\"": "bin_dir = \"/usr/lib/cni\"",
    r"conf_dir = \"/etc/cni/net.d\"": f"conf_dir = \"{confdir}\"",
}
for pattern, repl in subs.items():
    text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, pattern
print(text)' "$PAUSE_IMAGE" "$DIR/containerd/root" "/run/constructos-node/state" "$SOCK" "$DIR/cni/net.d" \
    >"$DIR/containerd/config.toml"
  sed -e "s#@BRIDGE@#$BRIDGE#; s#@SUBNET@#$POD_SUBNET#" "$HERE/cni.conflist" >"$DIR/cni/net.d/10-constructos.conflist"
}

control_plane() {
  local addr="$1" pki="$DIR/pki"
  start etcd etcd --name "$NAME" --data-dir "$DIR/etcd" \
    --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster "$NAME=http://127.0.0.1:12380"
  start kube-apiserver "$KUBE_DIR/kube-apiserver" --etcd-servers http://127.0.0.1:12379 \
    --bind-address 0.0.0.0 --advertise-address "$addr" --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true --profiling=false
  kubeconfig_for admin "$KUBECONFIG_FILE"
  wait_for "the API server" kubectl get --raw /readyz
  kubeconfig_for controller-manager "$DIR/controller-manager.kubeconfig"
  kubeconfig_for scheduler "$DIR/scheduler.kubeconfig"
  start kube-controller-manager "$KUBE_DIR/kube-controller-manager" --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --profiling=false
  start kube-scheduler "$KUBE_DIR/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --profiling=false
}

worker() {
  local addr="$1" pki="$DIR/pki"
  kubeconfig_for kubelet "$DIR/kubelet.kubeconfig"
  kubeconfig_for kube-proxy "$DIR/kube-proxy.kubeconfig"
  sed -e "s#@PKI@#$pki#g; s#@DNS_IP@#$DNS_IP#; s#@POD_SUBNET@#$POD_SUBNET#; s#@SOCK@#$SOCK#" \
    "$HERE/kubelet.yaml" >"$DIR/kubelet.yaml"
  sed -e "s#@KUBECONFIG@#$DIR/kube-proxy.kubeconfig#; s#@POD_CIDR@#$POD_CIDR#" "$HERE/kube-proxy.yaml" >"$DIR/kube-proxy.yaml"
  start kubelet "$KUBE_DIR/kubelet" --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --root-dir "$DIR/kubelet" --hostname-override "$NAME" --node-ip "$addr" --v=1
  start kube-proxy "$KUBE_DIR/kube-proxy" --config "$DIR/kube-proxy.yaml" --hostname-override "$NAME"
  wait_for "a Ready node" kubectl wait --for=condition=Ready "node/$NAME" --timeout=2s
}

dns() {  # CoreDNS; host.constructos.internal is this machine (where the broker and the stores run)
  sed -e "s#@DNS_IP@#$DNS_IP#g; s#@IMAGE@#$COREDNS_IMAGE#g; s#@HOST_ADDRESS@#$1#g" "$HERE/coredns.yaml" \
    | kubectl apply --server-side -f - >/dev/null
}

kserve() {
  local addr="$1" pki="$DIR/pki"
  "$PYTHON" "$HERE/kserve_install.py" --config "$KSERVE_DIR/config" --ca "$pki/ca.crt" --host "$addr" \
    --agent-image "$AGENT_IMAGE" | kubectl apply --server-side --force-conflicts -f - >/dev/null \
    || die "installing KServe's CRDs, RBAC, webhooks and configuration failed"
  wait_for "KServe's CRDs" kubectl wait --for=condition=Established --timeout=2s crd/inferenceservices.serving.kserve.io
  kubeconfig_for kserve "$DIR/kserve.kubeconfig"
  mkdir -p "$DIR/kserve/k8s-webhook-server/serving-certs"
  cp "$pki/kserve-webhook.crt" "$DIR/kserve/k8s-webhook-server/serving-certs/tls.crt"
  cp "$pki/kserve-webhook.key" "$DIR/kserve/k8s-webhook-server/serving-certs/tls.key"
  # Out of the cluster, beside the control plane: TMPDIR holds the webhook certificates; the
  # webhook Service has an Endpoints object pointing at this address (kserve_install.py).
  start kserve-manager env KUBECONFIG="$DIR/kserve.kubeconfig" POD_NAMESPACE=kserve TMPDIR="$DIR/kserve" \
    "$KSERVE_DIR/manager" --metrics-addr 127.0.0.1:18080 --health-probe-addr 127.0.0.1:18081 --webhook-port 9443
  wait_for "KServe's manager" curl -sf --max-time 2 http://127.0.0.1:18081/readyz
  wait_for "KServe's webhook" curl -sk --max-time 2 -o /dev/null "https://$addr:9443/"
}

# A default StorageClass with hostPath volumes made here (a development cluster's local storage):
# the platform's PersistentVolumeClaims bind to them; deleted with the node.
storage() {
  local i docs=""
  for ((i = 1; i <= 6; i++)); do
    mkdir -p "$DIR/volumes/pv-$i" && chmod 0777 "$DIR/volumes/pv-$i"
    docs+="---
apiVersion: v1
kind: PersistentVolume
metadata: {name: node-local-$i}
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: node-local
  hostPath: {path: $DIR/volumes/pv-$i, type: Directory}
"
  done
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: node-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
$docs
EOF
}

up() {
  if status; then log "already up (kubeconfig: $KUBECONFIG_FILE)"; return; fi
  prerequisites
  local began=$SECONDS addr
  addr="$(address)"
  [[ -n "$addr" ]] || die "no host address found (set NODE_ADDRESS)"
  bash "$ROOT/scripts/node-build.sh" kubernetes
  bash "$ROOT/scripts/node-build.sh" kserve
  bash "$ROOT/scripts/node-build.sh" coredns
  down >/dev/null 2>&1 || true
  mkdir -p "$DIR" "$CACHE_IMAGES" /run/constructos-node
  record_host
  local pause coredns agent
  pause="$(pause_image)"
  coredns="$(static_image "$COREDNS_DIR/coredns" "$COREDNS_IMAGE" '["/coredns"]')"
  agent="$(static_image "$KSERVE_DIR/agent" "$AGENT_IMAGE" '["/agent"]')"
  pki "$addr"
  containerd_config "$PAUSE_IMAGE"
  start containerd containerd --config "$DIR/containerd/config.toml"
  wait_for "containerd" command ctr --address "$SOCK" version
  for archive in "$pause" "$coredns" "$agent"; do import_archive "$archive"; done
  control_plane "$addr"
  worker "$addr"
  storage
  # the other operators' CRDs the platform's manifests use (PodMonitors, ServiceMonitors, KafkaTopics)
  kubectl apply --server-side -f "$ROOT/manifests/crds" >/dev/null
  dns "$addr"
  kserve "$addr"
  wait_for "cluster DNS" kubectl -n kube-system rollout status deployment/coredns --timeout=2s
  echo "$addr" >"$DIR/address"
  log "ready in $((SECONDS - began))s: node $NAME ($addr), Kubernetes $(cat "$KUBE_DIR/VERSION" 2>/dev/null || basename "$KUBE_DIR"), KServe $KSERVE_VERSION; kubeconfig: $KUBECONFIG_FILE"
}

stop_process() {
  local proc="$1" pid
  running "$proc" || { rm -f "$DIR/$proc.pid"; return 0; }
  pid="$(cat "$DIR/$proc.pid")"
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  rm -f "$DIR/$proc.pid"
  log "stopped $proc ($pid)"
}

down() {
  [[ -d "$DIR" ]] || { log "not up"; return 0; }
  local proc
  for proc in kserve-manager kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_process "$proc"
  done
  # The pods outlive the kubelet (each has a containerd shim): stop them, then containerd.
  if running containerd; then
    local ids
    ids="$(ctr tasks list -q 2>/dev/null || true)"
    for id in $ids; do ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $ids; do ctr tasks delete -f "$id" >/dev/null 2>&1 || true; done
    stop_process containerd
  fi
  pkill -9 -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  # Network namespaces of the pods, then the mounts the kubelet and containerd made under DIR.
  for ns in /run/netns/cni-*; do [[ -e "$ns" ]] && ip netns delete "$(basename "$ns")" 2>/dev/null; done
  grep -oE " ($DIR|/run/constructos-node)[^ ]*" /proc/mounts | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  restore_host
  rm -rf "$DIR" /run/constructos-node /var/lib/cni/networks/constructos 2>/dev/null || true
  log "down: processes stopped, iptables chains, bridge and sysctls put back"
}

# --- the platform on the node (make deploy ENV=node) ----------------------------------------

NAMESPACE=constructos-ml
NODE_DATABASE=mlflow_node
NODE_BUCKET=constructos-ml

# Before `kubectl apply -k manifests/overlays/node`: the image is in containerd, and the stores
# the overlay expects exist: a database and a bucket of the node's own on the servers of
# `make stores-up`, and the Secret `mlflow-stores` that names them.
prepare() {
  local image="${1:?usage: node.sh prepare IMAGE}" env_file="${CONSTRUCTOS_STORES_ENV:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/stores/stores.env}"
  status || die "the node is not up: make node-up"
  ctr images ls -q 2>/dev/null | grep -Fx "$image" >/dev/null \
    || die "image $image is not in the node's containerd (no registry is reachable from the node): make node-image IMAGE=$image"
  [[ -f "$env_file" ]] || die "the stores are not up ($env_file is missing): make stores-up"
  # shellcheck disable=SC1090
  set -a && . "$env_file" && set +a
  local pg_port="${CONSTRUCTOS_STORES_POSTGRES##*:}"; pg_port="${pg_port%%/*}"
  PGPASSWORD="$CONSTRUCTOS_STORES_PG_PASSWORD" psql -h 127.0.0.1 -p "$pg_port" -U constructos -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname='$NODE_DATABASE'" | grep 1 >/dev/null \
    || PGPASSWORD="$CONSTRUCTOS_STORES_PG_PASSWORD" psql -h 127.0.0.1 -p "$pg_port" -U constructos -d postgres -qc \
      "CREATE DATABASE $NODE_DATABASE" >/dev/null || die "could not create the database $NODE_DATABASE"
  "$PYTHON" - "$CONSTRUCTOS_S3_ENDPOINT_URL" "$NODE_BUCKET" <<'EOF' || die "could not create the bucket $NODE_BUCKET"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=sys.argv[2])
EOF
  kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
  kubectl -n "$NAMESPACE" create secret generic mlflow-stores --dry-run=client -o yaml \
    --from-literal=MLFLOW_BACKEND_STORE_URI="postgresql://constructos:$CONSTRUCTOS_STORES_PG_PASSWORD@postgres.$NAMESPACE.svc.cluster.local:$pg_port/$NODE_DATABASE" \
    --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    | kubectl apply --server-side -f - >/dev/null
  log "image $image is on the node; database $NODE_DATABASE, bucket $NODE_BUCKET and Secret mlflow-stores are ready"
}

# After the apply: every Deployment of the platform rolled out (Ready), every InferenceService Ready.
wait_platform() {
  local deadline=$((SECONDS + ${NODE_DEPLOY_TIMEOUT:-600})) d
  for d in mlflow monitoring trigger; do
    kubectl -n "$NAMESPACE" rollout status "deployment/$d" --timeout="$((deadline - SECONDS))s" >&2 \
      || { kubectl -n "$NAMESPACE" get pods -o wide >&2; die "deployment $d is not ready"; }
  done
  # A predictor is Ready once its model version is registered in the node's MLflow: on a new
  # registry, publish each model's events (make publish MODEL=<m> ROWS=<retrain.min_new_rows>) and
  # the trigger's training registers it.
  if kubectl -n "$NAMESPACE" wait --for=condition=Ready inferenceservice --all --timeout="${NODE_ISVC_TIMEOUT:-60}s" >/dev/null 2>&1; then
    log "the platform is Ready on the node"
  else
    kubectl -n "$NAMESPACE" get inferenceservice >&2
    log "the platform runs; the InferenceServices not Ready wait for their model (see a predictor's log:"
    log "  kubectl -n $NAMESPACE logs deploy/<model>-predictor); a new registry needs events: make publish MODEL=<model>"
  fi
}

status() { [[ -f "$KUBECONFIG_FILE" ]] && kubectl wait --for=condition=Ready "node/$NAME" --timeout=2s >/dev/null 2>&1; }

CACHE_IMAGES="$(dirname "$KUBE_DIR")/node-images"
PYTHON="${PYTHON:-$( [[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}"

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  import) import_image "${2:-}" ;;
  prepare) prepare "${2:-}" ;;
  wait-platform) wait_platform ;;
  address) address ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  *) die "usage: $0 up|down|status|import IMAGE|address|env" ;;
esac
