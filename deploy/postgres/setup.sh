#!/usr/bin/env bash
# Install (Debian's package), start and prepare a local PostgreSQL for the tests.
# Idempotent: safe to run again. Prints the DSN the tests use.
#
# Readiness is decided by connecting, never by `pg_lsclusters`' status column: on a machine
# restored from a snapshot, the cluster's postmaster.pid may name a process id that now belongs
# to something else (this very script's command line contains "postgres", which is enough to
# make pg_lsclusters report the cluster online).
set -euo pipefail

DB_USER=${FHIRBOTS_PG_USER:-fhirbots}
DB_PASS=${FHIRBOTS_PG_PASSWORD:-fhirbots}
DB_NAME=${FHIRBOTS_PG_DB:-fhirbots_test}
START_TIMEOUT=${FHIRBOTS_PG_START_TIMEOUT:-60}

# The postgres user may not be allowed into the caller's folder (a private temporary checkout).
cd /

die() { echo "postgres/setup.sh: $*" >&2; exit 1; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

read -r version cluster port _ owner datadir logfile < <(pg_lsclusters -h | head -n 1)
socketdir=/var/run/postgresql

ready() { runuser -u postgres -- pg_isready -q -h 127.0.0.1 -p "$port"; }

# True when the pid file names a live postgres server process (not a reused process id).
names_live_server() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(head -n 1 "$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "postgres" ]
}

if ! ready; then
  if ! names_live_server "$datadir/postmaster.pid"; then
    # Left over from a server that no longer runs: postgres would refuse to start beside them.
    rm -f "$datadir/postmaster.pid" "$socketdir/.s.PGSQL.$port" "$socketdir/.s.PGSQL.$port.lock" \
      "$socketdir/$version-$cluster.pid"
    mkdir -p "$socketdir" && chown "$owner:$owner" "$socketdir"
    pg_ctlcluster "$version" "$cluster" start
  fi
  for _ in $(seq 1 "$START_TIMEOUT"); do
    if ready; then break; fi
    sleep 1
  done
  if ! ready; then
    tail -n 30 "$logfile" >&2 || true
    die "PostgreSQL $version/$cluster is not accepting connections on 127.0.0.1:$port after ${START_TIMEOUT}s"
  fi
fi

as_postgres() { runuser -u postgres -- "$@"; }

if [ -z "$(as_postgres psql -tA -p "$port" postgres -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
  as_postgres psql -q -p "$port" postgres -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASS' CREATEDB" >/dev/null
fi
if [ -z "$(as_postgres psql -tA -p "$port" postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
  as_postgres createdb -p "$port" -O "$DB_USER" "$DB_NAME"
fi

echo "postgresql://$DB_USER:$DB_PASS@127.0.0.1:$port/$DB_NAME"
