#!/usr/bin/env bash
# A local Prometheus (Debian's package) scraping the locally running services.
#
#   scripts/prometheus.sh up CONFIG   start it with the scrape configuration CONFIG, wait until ready
#   scripts/prometheus.sh down        stop it (its data is kept)
#   scripts/prometheus.sh status      exit 0 when it runs
#
# `make prometheus-up` writes CONFIG from the manifests' ServiceMonitors/PodMonitors
# (python -m pipelines.manifests.scrape).
#
# Environment:
#   PROMETHEUS_PORT       HTTP port of its API and UI, on 127.0.0.1 (default 9090)
#   PROMETHEUS_HOME_DIR   config, pid, log and TSDB (default $CONSTRUCTOS_DATA_DIR/prometheus)
#   PROMETHEUS_RETENTION  how long samples are kept (default 2d)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PROMETHEUS_PORT:-9090}"
HOME_DIR="${PROMETHEUS_HOME_DIR:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/prometheus}"
PID_FILE="$HOME_DIR/prometheus.pid"
LOG_FILE="$HOME_DIR/prometheus.log"
URL="http://127.0.0.1:$PORT"

die() { echo "prometheus: $*" >&2; exit 1; }

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

binary() {
  command -v prometheus >/dev/null && return
  echo "prometheus: installing Debian's prometheus package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null \
    || die "could not install it: run 'apt-get install prometheus' as root"
}

up() {
  local config="${1:?usage: prometheus.sh up CONFIG}"
  [[ -s "$config" ]] || die "no scrape configuration at $config"
  binary
  mkdir -p "$HOME_DIR/data"
  [[ "$(readlink -f "$config")" == "$(readlink -f "$HOME_DIR/prometheus.yml")" ]] || cp "$config" "$HOME_DIR/prometheus.yml"
  if running; then
    curl -fsS -X POST "$URL/-/reload" >/dev/null && { echo "prometheus: reloaded at $URL"; return; }
    die "running (pid $(cat "$PID_FILE")) but not answering at $URL"
  fi
  promtool check config "$HOME_DIR/prometheus.yml" >"$LOG_FILE" 2>&1 || die "invalid configuration:$(echo; cat "$LOG_FILE")"
  nohup prometheus --config.file="$HOME_DIR/prometheus.yml" --storage.tsdb.path="$HOME_DIR/data" \
    --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-2d}" --web.listen-address="127.0.0.1:$PORT" \
    --web.enable-lifecycle >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 60); do
    curl -fsS "$URL/-/ready" >/dev/null 2>&1 && { echo "prometheus: ready at $URL (log: $LOG_FILE)"; return; }
    running || die "exited at start:$(echo; tail -20 "$LOG_FILE")"
    sleep 0.5
  done
  die "not ready after 30 s:$(echo; tail -20 "$LOG_FILE")"
}

down() {
  running || { echo "prometheus: not running"; rm -f "$PID_FILE"; return; }
  local pid
  pid="$(cat "$PID_FILE")"
  kill "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$PID_FILE"
  echo "prometheus: stopped"
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down ;;
  status) running ;;
  *) die "usage: prometheus.sh up CONFIG | down | status" ;;
esac
