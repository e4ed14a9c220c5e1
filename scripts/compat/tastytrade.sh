#!/usr/bin/env bash
# Checks that the popular third-party Python SDK `tastytrade` (PyPI, 13.2.3) works
# unchanged against our Tastytrade simulator. Needs a built `greekstream` binary.
# If the package registry is unreachable (probed) the check is skipped, loudly;
# any other install failure fails it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${GREEKSTREAM_BIN:-target/debug/greekstream}
# Its own virtualenv: the SDK's dependencies must not meet ibind's.
VENV=target/compat-tastytrade
# shellcheck source=scripts/compat/venv.sh
source scripts/compat/venv.sh
compat_venv "$VENV" 'import tastytrade' 'tastytrade==13.2.3'
out=$(mktemp)
"$BIN" sim tastytrade --listen 127.0.0.1:0 >"$out" 2>/dev/null &
sim=$!
trap 'kill $sim 2>/dev/null || true; rm -f "$out"' EXIT
api="" streamer=""
for _ in $(seq 100); do
  api=$(sed -n 's/.*"api_url":"\([^"]*\)".*/\1/p' "$out")
  streamer=$(sed -n 's/.*"streamer_url":"\([^"]*\)".*/\1/p' "$out")
  [ -n "$api" ] && break
  sleep 0.1
done
[ -n "$api" ] || { echo "simulator did not start" >&2; exit 1; }
timeout 120 "$VENV/bin/python" scripts/compat/tastytrade_check.py "$api" "$streamer"
