#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft mode) on loopback, for tests and CI.
#
# Usage: deploy/kafka/broker.sh fetch|start|stop|status
#
#   fetch   resolve the Kafka jars from Maven Central into deploy/kafka/lib (needs mvn)
#   start   format the storage (first time) and start the broker; returns when it is ready
#   stop    stop the broker (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT seconds)
#   status  exit 0 and print the bootstrap address if the broker is running
#
# Environment:
#   KAFKA_PORT          client port on 127.0.0.1 (default 19092; the controller uses PORT+1)
#   KAFKA_STATE_DIR     storage, config, pid and log (default deploy/kafka/target/broker)
#   KAFKA_HEAP_OPTS     JVM heap (default "-Xms128m -Xmx512m": a test broker needs little)
#   KAFKA_START_TIMEOUT seconds to wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT  seconds to wait after SIGTERM (default 30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/lib"
PORT="${KAFKA_PORT:-19092}"
CONTROLLER_PORT="$((PORT + 1))"
STATE="${KAFKA_STATE_DIR:-$HERE/target/broker}"
HEAP="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
PIDFILE="$STATE/broker.pid"
LOG="$STATE/broker.log"
CONFIG="$STATE/server.properties"

die() { echo "broker.sh: $*" >&2; exit 1; }

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  # A pid file left by a machine that was restarted may name an unrelated process.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

fetch() {
  if compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null; then
    echo "jars present in $LIB"
    return
  fi
  command -v mvn >/dev/null || die "mvn not found (install Maven, e.g. apt-get install maven)"
  mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIB"
  compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || die "mvn ran but $LIB has no kafka jar"
  echo "fetched $(ls "$LIB" | wc -l) jars into $LIB"
}

write_config() {
  mkdir -p "$STATE/data"
  cat >"$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$STATE/data
num.partitions=1
# Single node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumers one after another; do not hold the first rebalance back 3 s.
group.initial.rebalance.delay.ms=0
# faust creates its changelog and repartition topics; the engine creates its own topics.
auto.create.topics.enable=true
delete.topic.enable=true
PROPS
  cat >"$STATE/log4j2.properties" <<'PROPS'
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
PROPS
}

java_opts() {
  echo "$HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true" \
    "-Dlog4j2.configurationFile=$STATE/log4j2.properties"
}

start() {
  if pid="$(running_pid)"; then
    echo "already running (pid $pid) on 127.0.0.1:$PORT"
    return
  fi
  compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || fetch
  command -v java >/dev/null || die "java not found (Java 17 is required)"
  write_config
  # shellcheck disable=SC2046
  if [[ ! -f "$STATE/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java -cp "$LIB/*" kafka.tools.StorageTool random-uuid | tail -1)"
    java $(java_opts) -cp "$LIB/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$CONFIG" >"$STATE/format.log" 2>&1 \
      || die "storage format failed, see $STATE/format.log"
  fi
  # shellcheck disable=SC2046
  nohup java $(java_opts) -cp "$LIB/*" kafka.Kafka "$CONFIG" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  local waited=0
  until grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open; do
    if ! running_pid >/dev/null; then
      tail -30 "$LOG" >&2
      die "broker exited during start-up, log: $LOG"
    fi
    if ((waited >= START_TIMEOUT * 5)); then
      tail -30 "$LOG" >&2
      die "broker not ready after ${START_TIMEOUT}s, log: $LOG"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  echo "started (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "not running"
    rm -f "$PIDFILE"
    return
  fi
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT * 5)); then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  rm -f "$PIDFILE"
  echo "stopped"
}

status() {
  local pid
  if pid="$(running_pid)" && port_open; then
    echo "running (pid $pid) bootstrap=127.0.0.1:$PORT"
    return 0
  fi
  echo "not running"
  return 1
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 fetch|start|stop|status" ;;
esac
