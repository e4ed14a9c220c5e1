#!/usr/bin/env bash
# Dependency rules that must not silently break (run by scripts/test.sh):
# - the model crate is pure: no runtime, network, HTTP, WebSocket or database crate,
#   and no other crate of this workspace; the trading crate too, but for `model`;
# - the venue clients (streaming) carry no server-side crate and no bus: the
#   simulators are their own crate, a dev-dependency of the clients' tests, and
#   Redis is the binary's (src/bus);
# - test support (the `testing` features of database and model) never reaches the
#   service's build.
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
exit $fail
