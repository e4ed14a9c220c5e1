#!/usr/bin/env bash
# Checks that three third-party Python clients, binance-futures-connector 4.2.0,
# python-binance 1.0.37 and ccxt 4.5.90 (PyPI), work unchanged against our Binance
# simulator. Needs a built `greekstream` binary.
# If the package registry is unreachable (probed) the check is skipped, loudly;
# any other install failure fails it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${GREEKSTREAM_BIN:-target/debug/greekstream}
VENV=target/compat-binance
# shellcheck source=scripts/compat/venv.sh
source scripts/compat/venv.sh
compat_venv "$VENV" 'import binance.um_futures, binance.client, ccxt' 'binance-futures-connector==4.2.0' 'python-binance==1.0.37' 'ccxt==4.5.90'
out=$(mktemp)
"$BIN" sim binance --listen 127.0.0.1:0 --api-key compat-key --secret compat-secret >"$out" 2>/dev/null &
sim=$!
trap 'kill $sim 2>/dev/null || true; rm -f "$out"' EXIT
rest="" ws=""
for _ in $(seq 100); do
  rest=$(sed -n 's/.*"rest_url":"\([^"]*\)".*/\1/p' "$out")
  ws=$(sed -n 's/.*"ws_url":"\([^"]*\)".*/\1/p' "$out")
  [ -n "$rest" ] && break
  sleep 0.1
done
[ -n "$rest" ] || { echo "simulator did not start" >&2; exit 1; }
timeout 120 "$VENV/bin/python" scripts/compat/binance_check.py "$rest" "$ws" compat-key compat-secret
timeout 120 "$VENV/bin/python" scripts/compat/python_binance_check.py "$rest" compat-key compat-secret "$ws"
timeout 120 "$VENV/bin/python" scripts/compat/ccxt_check.py "$rest" compat-key compat-secret
