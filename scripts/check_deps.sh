#!/usr/bin/env bash
# Dependency rules that must not silently break (run by scripts/test.sh):
# - test support (database's `testing` feature) never reaches the service's build.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
if cargo tree -p greekstream -e normal,features --prefix none 2>/dev/null | grep -q 'database feature "testing"'; then
  echo "check_deps: the service's build enables database/testing (test support in production)" >&2
  fail=1
fi
exit $fail
