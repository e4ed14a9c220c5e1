#!/usr/bin/env bash
# Makes a fresh Debian machine ready for greekstream: installs PostgreSQL and Redis
# if they are missing, starts them if they are not running, and creates the
# `greekstream` database. Idempotent; safe to run every time.
# Set GS_SKIP_SERVICES=1 to manage PostgreSQL and Redis yourself.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

ADMIN_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
DB_NAME="${GS_DB_NAME:-greekstream}"

if [ "${GS_SKIP_SERVICES:-0}" != "1" ]; then
  missing=()
  command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql postgresql-client)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    ver="$(ls /etc/postgresql | sort -V | tail -n 1)"
    log "starting PostgreSQL $ver"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null \
      || $SUDO pg_ctlcluster "$ver" main start
    for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
    pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL did not come up"; exit 1; }
  fi
  # A fresh install only lets `postgres` in over the local socket (peer auth): give it
  # the password the default URLs use, so TCP logins work too.
  if ! psql "$ADMIN_URL" -tAc 'SELECT 1' >/dev/null 2>&1; then
    log "setting a password for the postgres role (TCP login failed)"
    $SUDO -u postgres psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null 2>&1 \
      || su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD 'postgres'\"" >/dev/null
  fi

  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/greekstream.log
    for _ in $(seq 1 40); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
  fi
fi

if ! psql "$ADMIN_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  log "creating database $DB_NAME"
  psql "$ADMIN_URL" -qc "CREATE DATABASE \"$DB_NAME\""
fi
log "ready: PostgreSQL $(psql "$ADMIN_URL" -tAc 'SHOW server_version'), Redis $(redis-cli -h 127.0.0.1 ping 2>/dev/null || echo 'not checked')"
