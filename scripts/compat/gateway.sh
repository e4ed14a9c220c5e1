#!/usr/bin/env bash
# Runs the Node gateway example (examples/gateway, ioredis from npm) against the
# service: its own database, its own Redis prefix, the built-in Binance simulator.
# `--bench` runs the round-trip benchmark instead. Needs a built `greekstream`.
# If the npm registry is unreachable (probed) the check is skipped, loudly; any
# other install failure fails it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${GREEKSTREAM_BIN:-target/debug/greekstream}
PG=${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
dir=examples/gateway
if [ ! -d "$dir/node_modules/ioredis" ]; then
  if ! (cd "$dir" && npm install --no-audit --no-fund --loglevel=error); then
    if ! timeout 20 npm ping >/dev/null 2>&1; then
      echo "WARNING: the npm registry is unreachable; the Node gateway example SKIPPED" >&2
      exit 0
    fi
    echo "npm install failed with the registry reachable" >&2
    exit 1
  fi
fi
db="gs_test_node_$$"
prefix="gs-node-$$:"
base=${PG%/*}
psql "$PG" -qc "CREATE DATABASE $db" >/dev/null
log=$(mktemp)
cleanup() {
  kill "$svc" 2>/dev/null || true
  wait "$svc" 2>/dev/null || true
  psql "$PG" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  redis-cli --scan --pattern "${prefix}*" | xargs -r redis-cli del >/dev/null || true
  rm -f "$log"
}
DATABASE_URL="$base/$db" GS_SYNTHETIC=false GS_IBKR=false GS_TASTYTRADE=false \
  METRICS_ADDR=127.0.0.1:0 CONTROL_ADDR=127.0.0.1:0 GS_REDIS_PREFIX="$prefix" RUST_LOG=warn \
  "$BIN" >"$log" 2>&1 &
svc=$!
trap cleanup EXIT
if [ "${1:-}" = "--bench" ]; then
  shift
  PREFIX="$prefix" timeout 600 node "$dir/bench.js" "$@"
else
  if ! PREFIX="$prefix" timeout 120 node "$dir/example.js"; then
    echo "--- service log ---" >&2
    tail -50 "$log" >&2
    exit 1
  fi
fi
