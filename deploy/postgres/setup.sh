#!/usr/bin/env bash
# Install (Debian's package), start and prepare a local PostgreSQL for the tests.
# Idempotent: safe to run again. Prints the DSN the tests use.
set -euo pipefail

DB_USER=${FHIRBOTS_PG_USER:-fhirbots}
DB_PASS=${FHIRBOTS_PG_PASSWORD:-fhirbots}
DB_NAME=${FHIRBOTS_PG_DB:-fhirbots_test}

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
if [ "$status" != "online" ]; then
  pg_ctlcluster "$version" "$cluster" start
fi

for _ in $(seq 1 30); do
  if runuser -u postgres -- pg_isready -q -h 127.0.0.1 -p "$port"; then break; fi
  sleep 1
done

as_postgres() { runuser -u postgres -- "$@"; }

if [ -z "$(as_postgres psql -tA -p "$port" postgres -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
  as_postgres psql -q -p "$port" postgres -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASS' CREATEDB" >/dev/null
fi
if [ -z "$(as_postgres psql -tA -p "$port" postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
  as_postgres createdb -p "$port" -O "$DB_USER" "$DB_NAME"
fi

echo "postgresql://$DB_USER:$DB_PASS@127.0.0.1:$port/$DB_NAME"
