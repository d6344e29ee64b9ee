#!/usr/bin/env bash
# A RabbitMQ broker for the example ERP's Celery workers (Debian's rabbitmq-server), run as a
# normal process with its data, logs and Erlang cookie in a data folder, on its own ports.
#
#   scripts/rabbitmq.sh up       install the Debian package when missing, start, wait until it answers
#   scripts/rabbitmq.sh down     stop it (its data is kept)
#   scripts/rabbitmq.sh status   exit 0 when it answers
#
# Environment:
#   RABBITMQ_HOME_DIR   data, logs, pid (default $CONSTRUCTOS_DATA_DIR/rabbitmq)
#   RABBITMQ_PORT       AMQP port on 127.0.0.1 (default 55672); the broker URL is amqp://guest:guest@127.0.0.1:PORT//
#   RABBITMQ_DIST_PORT  Erlang distribution port (default AMQP port + 1)
#   RABBITMQ_EPMD_PORT  the Erlang port mapper this broker starts and uses (default AMQP port + 2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${RABBITMQ_HOME_DIR:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/rabbitmq}"
PORT="${RABBITMQ_PORT:-55672}"
DIST_PORT="${RABBITMQ_DIST_PORT:-$((PORT + 1))}"
EPMD_PORT="${RABBITMQ_EPMD_PORT:-$((PORT + 2))}"
TIMEOUT="${RABBITMQ_START_TIMEOUT:-120}"
BIN=/usr/lib/rabbitmq/bin
PID_FILE="$HOME_DIR/rabbitmq.pid"
LOG_FILE="$HOME_DIR/rabbitmq.log"

die() { echo "rabbitmq: $*" >&2; exit 1; }

need_rabbitmq() {
  [[ -x "$BIN/rabbitmq-server" ]] && return
  echo "rabbitmq: installing RabbitMQ (Debian package rabbitmq-server)"
  local sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo -n"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends rabbitmq-server >/dev/null
  [[ -x "$BIN/rabbitmq-server" ]] || die "RabbitMQ is needed and was not found (Debian/Ubuntu: apt-get install rabbitmq-server)."
}

# Everything RabbitMQ and its CLI read: this folder, these ports, a node name of our own.
export HOME="$HOME_DIR" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_NODENAME="constructos-erp-$PORT@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$PORT" RABBITMQ_DIST_PORT="$DIST_PORT"
export RABBITMQ_MNESIA_BASE="$HOME_DIR/mnesia" RABBITMQ_LOG_BASE="$HOME_DIR/log" RABBITMQ_PID_FILE="$PID_FILE"
export RABBITMQ_CONFIG_FILE="$HOME_DIR/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$HOME_DIR/enabled_plugins"
export RABBITMQ_ADVANCED_CONFIG_FILE="$HOME_DIR/advanced.config" RABBITMQ_CONF_ENV_FILE="$HOME_DIR/rabbitmq-env.conf"
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

configure() {
  mkdir -p "$HOME_DIR/mnesia" "$HOME_DIR/log"
  chmod 700 "$HOME_DIR"
  # guest may connect from loopback only (RabbitMQ's default): the broker listens there alone
  cat >"$HOME_DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$PORT
loopback_users.guest = true
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 200MB
CONF
  echo "[]." >"$HOME_DIR/enabled_plugins"
  echo "[]." >"$HOME_DIR/advanced.config"
  : >"$HOME_DIR/rabbitmq-env.conf"
}

up() {
  if running && answers; then echo "rabbitmq: already running at 127.0.0.1:$PORT (pid $(cat "$PID_FILE"))"; return; fi
  answers && die "something else answers at 127.0.0.1:$PORT"
  need_rabbitmq
  configure
  nohup "$BIN/rabbitmq-server" >>"$LOG_FILE" 2>&1 </dev/null &
  local launcher=$!
  for ((i = 0; i < TIMEOUT * 4; i++)); do
    if answers && "$BIN/rabbitmqctl" -q await_startup --timeout 5 >/dev/null 2>&1; then
      echo "rabbitmq: broker $(cat "$PID_FILE") answers at amqp://127.0.0.1:$PORT (log: $LOG_FILE)"
      return
    fi
    kill -0 "$launcher" 2>/dev/null || { tail -20 "$LOG_FILE" >&2; die "the broker exited while starting; see $LOG_FILE"; }
    sleep 0.25
  done
  down
  die "the broker did not answer at 127.0.0.1:$PORT within ${TIMEOUT}s; see $LOG_FILE"
}

down() {
  if running; then
    local pid; pid="$(cat "$PID_FILE")"
    "$BIN/rabbitmqctl" -q stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    echo "rabbitmq: stopped broker $pid"
  else
    echo "rabbitmq: not running (from $HOME_DIR)"
  fi
  rm -f "$PID_FILE"
  # the port mapper this broker started on its own port (no other node uses it)
  if command -v epmd >/dev/null || [[ -x /usr/lib/erlang/bin/epmd ]]; then
    "$(command -v epmd || echo /usr/lib/erlang/bin/epmd)" -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) answers ;;
  *) die "usage: $0 up|down|status" ;;
esac
