#!/usr/bin/env bash
# A single-node Kafka 4.x (KRaft: one process is broker and controller) for development and tests.
#
#   scripts/kafka.sh up       fetch the jars if needed, format storage once, start, wait until it answers
#   scripts/kafka.sh down     stop it (its data is kept)
#   scripts/kafka.sh status   exit 0 when it runs
#   scripts/kafka.sh fetch    only copy the jars from Maven Central (cached in the tools cache)
#
# Environment:
#   KAFKA_BOOTSTRAP        host:port of the client listener (default 127.0.0.1:9092)
#   KAFKA_CONTROLLER_PORT  port of the controller listener (default: client port + 1)
#   KAFKA_HOME_DIR         config, pid, log and data of this broker (default $CONSTRUCTOS_DATA_DIR/kafka)
#   KAFKA_LIBS             jar cache (default $CONSTRUCTOS_TOOLS_CACHE/kafka-<version>/libs, ~/.cache/constructos)
#   KAFKA_HEAP_OPTS        JVM heap (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_SASL_PORT        also listen there with SASL_PLAINTEXT/PLAIN (to try client credentials) ...
#   KAFKA_SASL_USERS       ... for these users: "name:password[,name:password]"
#   KAFKA_NODE_LISTENER    also listen (PLAINTEXT) on this host:port, advertised as itself: the
#                          listener the pods of the node (scripts/node.sh) reach the broker on
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
BOOTSTRAP="${BOOTSTRAP%%,*}"
HOST="${BOOTSTRAP%:*}"
PORT="${BOOTSTRAP##*:}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOME_DIR="${KAFKA_HOME_DIR:-${CONSTRUCTOS_DATA_DIR:-$ROOT/data}/kafka}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/scripts/kafka-pom.xml")"
LIBS="${KAFKA_LIBS:-${CONSTRUCTOS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/constructos}/kafka-$KAFKA_VERSION/libs}"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
PID_FILE="$HOME_DIR/broker.pid"
LOG_FILE="$HOME_DIR/broker.log"

die() { echo "kafka: $*" >&2; exit 1; }

need_java() {
  command -v java >/dev/null || die "Java 17 or newer is needed to run the broker and was not found on PATH (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)."
  local major
  major="$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)"
  [[ "${major:-0}" -ge 17 ]] || die "Java 17 or newer is needed to run the broker; found Java ${major:-unknown}."
}

fetch() {
  if compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then return; fi
  command -v mvn >/dev/null || die "Maven is needed once to fetch the broker jars into $LIBS and was not found on PATH (Debian/Ubuntu: apt-get install maven)."
  echo "kafka: fetching the broker jars into $LIBS"
  mkdir -p "$LIBS"
  mvn -q -B -f "$ROOT/scripts/kafka-pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" || die "fetching the broker jars with Maven failed."
}

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

answers() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

kjava() { java $HEAP -XX:+UseG1GC -Djava.awt.headless=true -cp "$LIBS/*" "$@"; }

configure() {
  mkdir -p "$HOME_DIR"
  local listeners="PLAINTEXT://$HOST:$PORT" sasl="" users=""
  if [[ -n "${KAFKA_SASL_PORT:-}" ]]; then
    listeners="$listeners,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT"
    IFS=, read -ra pairs <<<"${KAFKA_SASL_USERS:?KAFKA_SASL_USERS is needed with KAFKA_SASL_PORT}"
    for pair in "${pairs[@]}"; do users="$users user_${pair%%:*}=\"${pair#*:}\""; done
    sasl="sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$users;"
  fi
  [[ -n "${KAFKA_NODE_LISTENER:-}" ]] && listeners="$listeners,NODE://$KAFKA_NODE_LISTENER"
  cat >"$HOME_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=$listeners,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,NODE:PLAINTEXT,CONTROLLER:PLAINTEXT
$sasl
log.dirs=$HOME_DIR/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
  chmod 600 "$HOME_DIR/server.properties"  # may hold the SASL users' passwords
  if [[ ! -f "$HOME_DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"  # may start with "-": hence --cluster-id=
    kjava kafka.tools.StorageTool format --cluster-id="$cluster_id" --config "$HOME_DIR/server.properties" \
      >>"$LOG_FILE" 2>&1 || { tail -20 "$LOG_FILE" >&2; die "formatting the storage in $HOME_DIR/data failed."; }
  fi
}

up() {
  if running; then echo "kafka: already running at $BOOTSTRAP (pid $(cat "$PID_FILE"))"; return; fi
  if answers; then echo "kafka: something already answers at $BOOTSTRAP; using it"; return; fi
  need_java
  fetch
  configure
  local start_line
  start_line=$(($(wc -l <"$LOG_FILE") + 1))
  nohup java $HEAP -XX:+UseG1GC -Djava.awt.headless=true -Dorg.apache.logging.log4j.level=INFO \
    -cp "$LIBS/*" kafka.Kafka "$HOME_DIR/server.properties" >>"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  for ((i = 0; i < TIMEOUT * 4; i++)); do
    # grep reads to the end (no -q): an early exit would kill tail with SIGPIPE, failing the pipe
    if tail -n +"$start_line" "$LOG_FILE" | grep "Kafka Server started" >/dev/null && answers; then
      echo "kafka: broker $(cat "$PID_FILE") answers at $BOOTSTRAP (log: $LOG_FILE)"
      return
    fi
    if ! running; then
      tail -n +"$start_line" "$LOG_FILE" | grep -E "ERROR|Exception" | tail -5 >&2 || true
      die "the broker exited while starting; see $LOG_FILE"
    fi
    sleep 0.25
  done
  down
  die "the broker did not answer at $BOOTSTRAP within ${TIMEOUT}s; see $LOG_FILE"
}

down() {
  if ! running; then echo "kafka: not running (from $HOME_DIR)"; rm -f "$PID_FILE"; return; fi
  local pid
  pid="$(cat "$PID_FILE")"
  kill "$pid"
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -f "$PID_FILE"
  echo "kafka: stopped broker $pid"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) running ;;
  fetch) fetch ;;
  *) die "usage: $0 up|down|status|fetch" ;;
esac
