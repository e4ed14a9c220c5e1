#!/usr/bin/env bash
# Loads 10 million greek_snapshots rows (50 accounts, 200 contracts, spread over the
# last 60 days) into a scratch database and times one account's one-day history.
# Usage: scripts/views_bench.sh [rows]   (needs a built target/debug/greekstream)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
DB=greekstream_views_bench
PSQL="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt"
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" GS_PARTITION_MONTHS_BACK=3 \
  target/debug/greekstream migrate >/dev/null
$PSQL -d $DB -c "SELECT greekstream_ensure_partitions(3, 1)" >/dev/null
start=$(date +%s)
$PSQL -d $DB <<SQL
INSERT INTO greek_snapshots (event_time, received_at, broker, account_id, contract_key, underlying,
    quantity, multiplier, underlying_price, implied_vol, delta, gamma, theta, vega, rho,
    position_delta, position_gamma, position_theta, position_vega, position_rho, greeks_source)
SELECT t, t, 'ibkr', 'ACC' || (i % 50), 'SYM' || (i % 200 / 50) || ' 20261218 C ' || (i % 200),
       'SYM' || (i % 200 / 50), (i % 7) - 3, 100, 500, 0.2, 0.5, 0.01, -0.1, 0.2, 0.05,
       50 * ((i % 7) - 3), 1, -10, 20, 5, 'venue'
FROM (SELECT i, now() - (i::double precision / $ROWS) * interval '60 days' AS t
      FROM generate_series(1, $ROWS) AS i) s;
ANALYZE greek_snapshots;
SQL
echo "loaded $ROWS rows in $(( $(date +%s) - start )) s"
day_from=$($PSQL -d $DB -c "SELECT date_trunc('day', now() - interval '20 days')")
day_to=$($PSQL -d $DB -c "SELECT date_trunc('day', now() - interval '19 days')")
$PSQL -d $DB -c "SELECT count(*) || ' rows for ACC7 that day' FROM greek_snapshots WHERE account_id = 'ACC7' AND event_time >= '$day_from' AND event_time < '$day_to'"
for run in 1 2 3; do
  $PSQL -d $DB -c "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM greeks_history('ACC7', '$day_from', '$day_to')" | tail -2
done
echo "--- plan (last run)"
$PSQL -d $DB -c "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM greeks_history('ACC7', '$day_from', '$day_to')"
