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
impure=$(cargo tree -p model -e normal --prefix none 2>/dev/null \
  | grep -E '^(tokio|tokio-[a-z-]+|tungstenite|reqwest|hyper|axum|sqlx[a-z-]*|redis|rustls|streaming|processor|database|greekstream) v' \
  | sort -u || true)
if [ -n "$impure" ]; then
  echo "check_deps: the model crate must stay pure, but depends on:" >&2
  echo "$impure" >&2
  fail=1
fi
impure=$(cargo tree -p trading -e normal --prefix none 2>/dev/null \
  | grep -E '^(tokio|tokio-[a-z-]+|tungstenite|reqwest|hyper|axum|sqlx[a-z-]*|redis|rustls|streaming|processor|database|simulators|greekstream) v' \
  | sort -u || true)
if [ -n "$impure" ]; then
  echo "check_deps: the trading crate must stay pure, but depends on:" >&2
  echo "$impure" >&2
  fail=1
fi
server=$(cargo tree -p streaming -e normal --prefix none 2>/dev/null \
  | grep -E '^(axum|rcgen|simulators|redis) v' | sort -u || true)
if [ -n "$server" ]; then
  echo "check_deps: the venue clients depend on server-side crates:" >&2
  echo "$server" >&2
  fail=1
fi
exit $fail
