#!/usr/bin/env bash
# Production-like stores on loopback, for development and tests: PostgreSQL (Debian's packages, a
# cluster in a data folder run by an unprivileged user), an S3 server (versitygw over a folder) and
# an MLflow tracking server on both (backend in PostgreSQL, proxied artifacts in S3).
#
#   scripts/stores.sh up        build/fetch what is missing, start all three, wait until they answer
#   scripts/stores.sh down      stop all three (their data is kept)
#   scripts/stores.sh status    exit 0 when all three answer
#   scripts/stores.sh stop NAME / start NAME   one of postgres|s3|mlflow (the fault tests use this)
#   scripts/stores.sh build     only build the versitygw binary (cached in the tools cache)
#
# `up` writes $STORES_HOME/stores.env (mode 600): the URIs and credentials clients need, as
# shell assignments (`set -a; . stores.env` to use them). Credentials are generated on first `up`.
#
# Environment:
#   STORES_HOME         data, logs, pids and stores.env (default $CONSTRUCTOS_DATA_DIR/stores; as root, the
#                       PostgreSQL cluster moves to /var/tmp when the `postgres` user cannot reach it)
#   STORES_PG_PORT      PostgreSQL port (default 55432)
#   STORES_S3_PORT      S3 port (default 57070)
#   STORES_MLFLOW_PORT  MLflow port (default 55000)
#   STORES_BUCKET       bucket created for artifacts and the landing store (default constructos)
#   VERSITYGW_BIN       versitygw binary (default $CONSTRUCTOS_TOOLS_CACHE/versitygw-<version>/versitygw)
#   PYTHON              the project's Python (default .venv/bin/python): bucket, migrations, MLflow
#   NODE_ADDRESS        also serve the pods of the node (scripts/node.sh) on this host address:
#                       PostgreSQL listens there too and admits NODE_PODS_CIDR (default 10.244.0.0/16)
#                       with a password; the S3 server listens on every address (it takes only one)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSITYGW_VERSION="v1.8.0"
TOOLS="${CONSTRUCTOS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constructos}"
VGW="${VERSITYGW_BIN:-$TOOLS/versitygw-$VERSITYGW_VERSION/versitygw}"
HOME_DIR="${STORES_HOME:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/stores}"
PG_PORT="${STORES_PG_PORT:-55432}"
S3_PORT="${STORES_S3_PORT:-57070}"
MLFLOW_PORT="${STORES_MLFLOW_PORT:-55000}"
BUCKET="${STORES_BUCKET:-constructos}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
ENV_FILE="$HOME_DIR/stores.env"
PG_DATA="$HOME_DIR/postgres"
TIMEOUT="${STORES_START_TIMEOUT:-300}"
NODE_PODS_CIDR="${NODE_PODS_CIDR:-10.244.0.0/16}"

die() { echo "stores: $*" >&2; exit 1; }
log() { echo "stores: $*"; }

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [[ -n "$dir" && -x "$dir/initdb" ]] || return 1
  echo "$dir"
}

need_postgres() {
  pg_bin >/dev/null && return
  log "installing PostgreSQL (Debian package postgresql)"
  if [[ "$(id -u)" == 0 ]]; then apt-get install -y -q postgresql >/dev/null
  elif sudo -n true 2>/dev/null; then sudo apt-get install -y -q postgresql >/dev/null
  fi
  pg_bin >/dev/null || die "PostgreSQL is needed and was not found (Debian/Ubuntu: apt-get install postgresql)."
}

build() {
  [[ -x "$VGW" ]] && return
  command -v go >/dev/null || die "Go is needed once to build versitygw $VERSITYGW_VERSION into $(dirname "$VGW") and was not found on PATH."
  log "building versitygw $VERSITYGW_VERSION (Go module proxy, a few minutes, once) into $(dirname "$VGW")"
  mkdir -p "$(dirname "$VGW")"
  GOBIN="$(dirname "$VGW")" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
    || die "building versitygw failed."
}

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user.
as_pg() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # name port pidfile log
  local deadline=$((SECONDS + TIMEOUT))
  until answers "$2"; do
    if [[ -n "${3:-}" ]] && ! kill -0 "$(cat "$3" 2>/dev/null)" 2>/dev/null; then
      tail -20 "$4" >&2 || true; die "$1 exited while starting (log: $4)"
    fi
    ((SECONDS < deadline)) || { tail -20 "$4" >&2 || true; die "$1 did not answer on 127.0.0.1:$2 within ${TIMEOUT}s (log: $4)"; }
    sleep 0.3
  done
}

credentials() {
  mkdir -p "$HOME_DIR"
  chmod 755 "$HOME_DIR"
  if [[ ! -f "$HOME_DIR/credentials" ]]; then
    (umask 077; {
      echo "PG_PASSWORD=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
      echo "S3_ACCESS=constructos$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n')"
      echo "S3_SECRET=$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
    } >"$HOME_DIR/credentials")
  fi
  # shellcheck disable=SC1091
  . "$HOME_DIR/credentials"
}

write_env() {
  (umask 077; cat >"$ENV_FILE" <<EOF
# written by scripts/stores.sh up; \`set -a; . $ENV_FILE; set +a\` to use the stores
MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
CONSTRUCTOS_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
AWS_ACCESS_KEY_ID=$S3_ACCESS
AWS_SECRET_ACCESS_KEY=$S3_SECRET
AWS_DEFAULT_REGION=us-east-1
CONSTRUCTOS_STORES_BUCKET=$BUCKET
CONSTRUCTOS_STORES_POSTGRES=postgresql://constructos@127.0.0.1:$PG_PORT/mlflow
CONSTRUCTOS_STORES_PG_PASSWORD=$PG_PASSWORD
CONSTRUCTOS_STORES_HOME=$HOME_DIR
EOF
  )
}

# --- PostgreSQL ----------------------------------------------------------------------------
# As root the cluster belongs to the `postgres` user; if that user cannot reach STORES_HOME (a
# home folder, say), the cluster lives in a folder of its own under /var/tmp named after it.
locate_cluster() {
  if [[ "$(id -u)" == 0 ]] && getent passwd postgres >/dev/null; then
    mkdir -p "$HOME_DIR"
    runuser -u postgres -- test -x "$HOME_DIR" 2>/dev/null \
      || PG_DATA="/var/tmp/constructos-postgres-$(printf %s "$HOME_DIR" | md5sum | cut -c1-12)"
  fi
}

start_postgres() {
  need_postgres
  locate_cluster
  local bin; bin="$(pg_bin)"
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "creating a PostgreSQL cluster in $PG_DATA"
    mkdir -p "$PG_DATA"
    printf '%s\n' "$PG_PASSWORD" >"$PG_DATA.pwinit"
    if [[ "$(id -u)" == 0 ]]; then chown postgres: "$PG_DATA" "$PG_DATA.pwinit"; fi
    chmod 700 "$PG_DATA"; chmod 600 "$PG_DATA.pwinit"
    as_pg "$bin/initdb" -D "$PG_DATA" -U constructos --pwfile="$PG_DATA.pwinit" \
      --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$HOME_DIR/postgres-init.log" 2>&1 \
      || { rm -f "$PG_DATA.pwinit"; cat "$HOME_DIR/postgres-init.log" >&2; die "initdb failed (is $PG_DATA reachable by the cluster's user?)"; }
    rm -f "$PG_DATA.pwinit"
  fi
  as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1 && return
  # the pods of the node (scripts/node.sh) connect from their own network, with a password
  if [[ -n "${NODE_ADDRESS:-}" ]] && ! grep -q "$NODE_PODS_CIDR" "$PG_DATA/pg_hba.conf"; then
    echo "host all all $NODE_PODS_CIDR scram-sha-256" | as_pg tee -a "$PG_DATA/pg_hba.conf" >/dev/null
  fi
  touch "$PG_DATA.log"
  if [[ "$(id -u)" == 0 ]]; then chown postgres: "$PG_DATA.log"; fi
  as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA.log" -w -t "$TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1${NODE_ADDRESS:+,$NODE_ADDRESS} -p $PG_PORT -k $PG_DATA" start >/dev/null \
    || { tail -20 "$PG_DATA.log" >&2; die "PostgreSQL did not start (log: $PG_DATA.log)"; }
  PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U constructos -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep 1 >/dev/null \
    || PGPASSWORD="$PG_PASSWORD" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U constructos mlflow
}

stop_postgres() {
  local bin; bin="$(pg_bin)" || return 0
  locate_cluster
  [[ -f "$PG_DATA/PG_VERSION" ]] || return 0
  as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
}

# --- S3 (versitygw over a folder) ----------------------------------------------------------
start_s3() {
  local pid="$HOME_DIR/s3.pid" S3_LISTEN=127.0.0.1
  [[ -n "${NODE_ADDRESS:-}" ]] && S3_LISTEN=0.0.0.0  # the node's pods too (one address only)
  if kill -0 "$(cat "$pid" 2>/dev/null)" 2>/dev/null; then return; fi
  build
  mkdir -p "$HOME_DIR/s3/data" "$HOME_DIR/s3/meta"
  # credentials through the environment, never on the command line; metadata (ETags, ...) in a
  # sidecar folder, so the data folder needs no extended attributes
  setsid env ROOT_ACCESS_KEY_ID="$S3_ACCESS" ROOT_SECRET_ACCESS_KEY="$S3_SECRET" \
    "$VGW" --port "$S3_LISTEN:$S3_PORT" --health /health --quiet \
    posix --sidecar "$HOME_DIR/s3/meta" "$HOME_DIR/s3/data" </dev/null >"$HOME_DIR/s3.log" 2>&1 &
  echo $! >"$pid"
  wait_port "S3 server" "$S3_PORT" "$pid" "$HOME_DIR/s3.log"
  AWS_ACCESS_KEY_ID="$S3_ACCESS" AWS_SECRET_ACCESS_KEY="$S3_SECRET" AWS_DEFAULT_REGION=us-east-1 \
    "$PYTHON" - "http://127.0.0.1:$S3_PORT" "$BUCKET" <<'EOF' || die "could not create the bucket"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=sys.argv[2])
EOF
}

stop_pid() {  # pidfile: the server leads its own process group (setsid): stop the whole group
  local pid; pid="$(cat "$1" 2>/dev/null)" || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# --- MLflow (PostgreSQL backend, proxied artifacts in S3) -----------------------------------
mlflow_settings() {  # the server's settings, as environment (the password never on a command line)
  MLFLOW_ENV=(MLFLOW_BACKEND_STORE_URI="postgresql://constructos@127.0.0.1:$PG_PORT/mlflow" PGPASSWORD="$PG_PASSWORD"
    MLFLOW_ARTIFACTS_DESTINATION="s3://$BUCKET/mlflow" MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
    AWS_ACCESS_KEY_ID="$S3_ACCESS" AWS_SECRET_ACCESS_KEY="$S3_SECRET" AWS_DEFAULT_REGION=us-east-1
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)  # no background job workers: nothing here uses them
}

start_mlflow() {
  local pid="$HOME_DIR/mlflow.pid" mlflow
  if kill -0 "$(cat "$pid" 2>/dev/null)" 2>/dev/null; then return; fi
  mlflow="$(dirname "$PYTHON")/mlflow"
  [[ -x "$mlflow" ]] || die "MLflow is not installed at $mlflow (make install)"
  # the project runs the schema migrations (a server refuses an outdated schema)
  mlflow_settings
  env "${MLFLOW_ENV[@]}" "$mlflow" db upgrade "postgresql://constructos@127.0.0.1:$PG_PORT/mlflow" >"$HOME_DIR/mlflow-migrate.log" 2>&1 \
    || { tail -20 "$HOME_DIR/mlflow-migrate.log" >&2; die "MLflow migrations failed"; }
  setsid env "${MLFLOW_ENV[@]}" "$mlflow" server --serve-artifacts --host 127.0.0.1 --port "$MLFLOW_PORT" \
    --workers 1 --allowed-hosts "127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT" </dev/null >"$HOME_DIR/mlflow.log" 2>&1 &
  echo $! >"$pid"
  wait_port "MLflow" "$MLFLOW_PORT" "$pid" "$HOME_DIR/mlflow.log"
}

start() {
  case "$1" in
    postgres) start_postgres ;;
    s3) start_s3 ;;
    mlflow) start_mlflow ;;
    *) die "unknown store '$1' (postgres|s3|mlflow)" ;;
  esac
}

stop() {
  case "$1" in
    postgres) stop_postgres ;;
    s3) stop_pid "$HOME_DIR/s3.pid" ;;
    mlflow) stop_pid "$HOME_DIR/mlflow.pid" ;;
    *) die "unknown store '$1' (postgres|s3|mlflow)" ;;
  esac
}

case "${1:-}" in
  up)
    credentials
    start_postgres; start_s3; start_mlflow; write_env
    log "PostgreSQL 127.0.0.1:$PG_PORT, S3 http://127.0.0.1:$S3_PORT (bucket $BUCKET), MLflow http://127.0.0.1:$MLFLOW_PORT"
    log "clients: set -a; . $ENV_FILE; set +a" ;;
  down) stop mlflow; stop s3; stop postgres ;;
  status) answers "$PG_PORT" && answers "$S3_PORT" && answers "$MLFLOW_PORT" ;;
  start) credentials; start "${2:?start what: postgres|s3|mlflow}" ;;
  stop) stop "${2:?stop what: postgres|s3|mlflow}" ;;
  build) build ;;
  *) echo "usage: $0 up|down|status|start NAME|stop NAME|build" >&2; exit 2 ;;
esac
