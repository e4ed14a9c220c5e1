#!/usr/bin/env bash
# Checks that a popular third-party Client Portal client, ibind (PyPI), works
# unchanged against our IBKR gateway simulator. Needs a built `greekstream` binary.
# If the package registry is unreachable (probed) the check is skipped, loudly;
# any other install failure fails it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${GREEKSTREAM_BIN:-target/debug/greekstream}
VENV=target/compat-venv
# shellcheck source=scripts/compat/venv.sh
source scripts/compat/venv.sh
compat_venv "$VENV" 'import ibind' 'ibind==0.2.2'
out=$(mktemp)
"$BIN" sim ibkr --listen 127.0.0.1:0 --heartbeat 1 >"$out" 2>/dev/null &
sim=$!
trap 'kill $sim 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
  url=$(sed -n 's/.*"gateway_url":"\([^"]*\)".*/\1/p' "$out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "simulator did not start" >&2; exit 1; }
timeout 120 "$VENV/bin/python" scripts/compat/ibind_check.py "$url"
