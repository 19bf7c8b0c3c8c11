#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft mode) on loopback, for tests and CI.
#
# Usage: deploy/kafka/broker.sh fetch|start|stop|status
#
#   fetch   resolve the Kafka jars from Maven Central into deploy/kafka/lib (needs mvn)
#   start   format the storage (first time) and start the broker; returns when it answers on
#           its port, or fails with the log's tail after stopping what it started
#   stop    stop the broker of this state dir (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT
#           seconds); brokers of other state dirs are left alone
#   status  exit 0 and print the bootstrap address if the broker is running
#
# Several brokers may run on one machine (two test suites each start one): each has its own
# KAFKA_STATE_DIR and KAFKA_PORT, and this script only ever signals the process it recorded in
# its state dir, checked to be the broker of that dir's config.
#
# Environment:
#   KAFKA_PORT          client port (default 19092; the controller uses PORT+1 on 127.0.0.1)
#   KAFKA_HOST          address the client port listens on and advertises (default 127.0.0.1)
#   KAFKA_STATE_DIR     storage, config, pid and log (default deploy/kafka/target/broker)
#   KAFKA_HEAP_OPTS     JVM heap (default "-Xms128m -Xmx512m": a test broker needs little)
#   KAFKA_START_TIMEOUT seconds to wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT  seconds to wait after SIGTERM (default 30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/lib"
PORT="${KAFKA_PORT:-19092}"
HOST="${KAFKA_HOST:-127.0.0.1}"
CONTROLLER_PORT="$((PORT + 1))"
# Absolute, as the broker's command line names its config by this path: stop and status find
# the broker of this dir by it, from whatever folder they are run.
STATE="$(realpath -m "${KAFKA_STATE_DIR:-$HERE/target/broker}")"
HEAP="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
PIDFILE="$STATE/broker.pid"
LOG="$STATE/broker.log"
CONFIG="$STATE/server.properties"

die() { echo "broker.sh: $*" >&2; exit 1; }

# Whether process $1 exists and has not ended (one that ended but is not yet reaped by its
# parent, a zombie, still answers kill -0).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ "$state" != Z* ]]
}

# Whether process $1 is the broker of this state dir: a pid file left by a machine that was
# restarted may name an unrelated process, or the broker of another suite.
is_our_broker() {
  alive "$1" || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$CONFIG"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  is_our_broker "$pid" || return 1
  echo "$pid"
}

# Signal $2 to what start launched as $1: its whole process group when it leads one (it does:
# start runs it under setsid), else the process alone.
signal_broker() {
  local pgid
  pgid="$(ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ')" || pgid=""
  if [[ "$pgid" == "$1" ]]; then
    kill "-$2" -- "-$1" 2>/dev/null || true
  else
    kill "-$2" "$1" 2>/dev/null || true
  fi
}

# Stop process $1 (SIGTERM, SIGKILL after STOP_TIMEOUT seconds) and wait until it is gone.
terminate() {
  local pid="$1" waited=0
  signal_broker "$pid" TERM
  while alive "$pid"; do
    if ((waited >= STOP_TIMEOUT * 5)); then
      signal_broker "$pid" KILL
      while alive "$pid"; do sleep 0.2; done
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  # Reap it if it is our child (start's failure path), so it leaves no zombie behind.
  wait "$pid" 2>/dev/null || true
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

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
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
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
    echo "already running (pid $pid) on $HOST:$PORT"
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
  # setsid: the broker leads a process group of its own, so that stopping it reaches every
  # process it may start, and only those. The background child is not a group leader, so
  # setsid execs java in place and $! is the JVM's pid.
  # shellcheck disable=SC2046
  setsid java $(java_opts) -cp "$LIB/*" kafka.Kafka "$CONFIG" </dev/null >"$LOG" 2>&1 &
  local pid=$!
  echo "$pid" >"$PIDFILE"
  # Whatever ends this start early (a failure below, or a signal) stops what it launched.
  trap 'abandon '"$pid" EXIT
  trap 'exit 1' INT TERM HUP
  local waited=0
  # Ready means the broker says so and its port answers. Until then the process is checked by
  # its pid alone: for a moment it is still this shell's child, not yet the JVM.
  until grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open; do
    if ! alive "$pid"; then
      tail -30 "$LOG" >&2
      die "broker exited during start-up, log: $LOG"
    fi
    if ((waited >= START_TIMEOUT * 5)); then
      tail -30 "$LOG" >&2
      die "broker not ready after ${START_TIMEOUT}s (stopped it), log: $LOG"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  is_our_broker "$pid" || die "process $pid answers on $HOST:$PORT but is not this broker"
  trap - EXIT INT TERM HUP
  echo "started (pid $pid) on $HOST:$PORT"
}

# The EXIT trap of a start that did not finish: stop the broker it launched.
abandon() {
  local code=$?
  terminate "$1"
  rm -f "$PIDFILE"
  exit "$code"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "not running"
    rm -f "$PIDFILE"
    return
  fi
  terminate "$pid"
  rm -f "$PIDFILE"
  echo "stopped"
}

status() {
  local pid
  if pid="$(running_pid)" && port_open; then
    echo "running (pid $pid) bootstrap=$HOST:$PORT"
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
