#!/usr/bin/env bash
# Sets up what is missing, then runs every check: formatting, clippy, and the whole
# test suite (unit, property and integration tests against real PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo fmt --all -- --check
bash scripts/check_deps.sh
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast
# Third-party clients (from PyPI) against our simulators: ibind for IBKR, the
# `tastytrade` SDK for Tastytrade.
cargo build --quiet --bin greekstream
bash scripts/compat/ibind.sh
bash scripts/compat/tastytrade.sh
bash scripts/compat/binance.sh
# The JS gateway's own Redis client (ioredis, from npm) through the command bus.
bash scripts/compat/gateway.sh
# Sweep any test database left by a killed run (tests drop their own on success or panic).
psql "${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}" -tAc \
  "SELECT 'DROP DATABASE IF EXISTS ' || quote_ident(datname) || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'gs_test_%'" \
  | psql "${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}" -q >/dev/null || true
