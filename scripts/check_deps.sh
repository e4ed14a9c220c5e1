#!/usr/bin/env bash
# Dependency rules that must not silently break (run by scripts/test.sh):
# - the model crate is pure: no runtime, network, HTTP, WebSocket or database crate,
#   and no other crate of this workspace; the trading crate too, but for `model`;
# - the venue clients (streaming) carry no server-side crate and no bus: the
#   simulators are their own crate, a dev-dependency of the clients' tests, and
#   Redis is the bus crate's;
# - the trading half's arrows point one way: the binary (greekstream) → gateway →
#   engine → bus, database, trading; the engine never depends on the gateway or the
#   binary, the gateway never on the binary, the bus on neither;
# - test support (the `testing` features of database and model) never reaches the
#   service's build;
# - the source layout (scripts/layout_check.py): no file over 800 lines before its
#   tests, no import circles between the files of a crate.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
if cargo tree -p greekstream -e normal,features --prefix none 2>/dev/null | grep -qE '^(database|model) feature "testing"'; then
  echo "check_deps: the service's build enables a testing feature (test support in production)" >&2
  fail=1
fi
# forbid CRATE WHY PATTERN: fails when CRATE's normal dependencies match PATTERN.
forbid() {
  local found
  found=$(cargo tree -p "$1" -e normal --prefix none 2>/dev/null | grep -E "^($3) v" | sort -u || true)
  if [ -n "$found" ]; then
    echo "check_deps: $2, but $1 depends on:" >&2
    echo "$found" >&2
    fail=1
  fi
}
io='tokio|tokio-[a-z-]+|tungstenite|reqwest|hyper|axum|sqlx[a-z-]*|redis|rustls'
forbid model "the model crate must stay pure" "$io|streaming|processor|database|greekstream"
forbid trading "the trading crate must stay pure" "$io|streaming|processor|database|simulators|greekstream"
forbid streaming "the venue clients carry no server-side crate" 'axum|rcgen|simulators|redis'
forbid bus "the bus carries no trading logic" 'engine|gateway|greekstream|database|trading'
forbid engine "the engine never depends on the gateway or the binary" 'gateway|greekstream|axum'
forbid gateway "the gateway never depends on the binary" 'greekstream'
# require CRATE DEP: fails unless DEP is a direct dependency of CRATE.
require() {
  if ! cargo tree -p "$1" -e normal --depth 1 --prefix none 2>/dev/null | grep -qE "^$2 v"; then
    echo "check_deps: $1 must depend on $2 (the service is assembled from it)" >&2
    fail=1
  fi
}
require greekstream engine
require greekstream gateway
require gateway engine
if ! python3 scripts/layout_check.py; then
  fail=1
fi
exit $fail
