#!/usr/bin/env bash
# Sets up what is missing, then runs the service (release build). Extra arguments
# go to greekstream, e.g. `scripts/run.sh migrate` or `scripts/run.sh bench ingest --rate max`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --quiet -- "$@"
