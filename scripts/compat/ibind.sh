#!/usr/bin/env bash
# Checks that a popular third-party Client Portal client, ibind (PyPI), works
# unchanged against our IBKR gateway simulator. Needs a built `greekstream` binary.
# If ibind cannot be installed (no route to PyPI) the check is skipped, loudly.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${GREEKSTREAM_BIN:-target/debug/greekstream}
VENV=target/compat-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import ibind' 2>/dev/null; then
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install -q 'ibind==0.2.2'; then
    echo "WARNING: could not install ibind from PyPI; third-party client check SKIPPED" >&2
    exit 0
  fi
fi
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
