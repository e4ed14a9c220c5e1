-- Every sub-account's portfolio on the hour (seed 001, "Portfolio service"): what the
-- account held and was worth, written on the hour for every account and back-filled
-- from the ledger after downtime. One row per (account, hour): writing an hour twice
-- changes nothing. Monthly partitions, like greek_snapshots.
CREATE TABLE portfolio_snapshots (
    sub_account_id uuid NOT NULL REFERENCES sub_accounts (id) ON DELETE CASCADE,
    hour           timestamptz NOT NULL
        CHECK (hour = date_trunc('hour', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'),
    balance        numeric NOT NULL,
    equity         numeric NOT NULL,
    unrealized_pnl numeric NOT NULL,
    -- Realized since the account began, and since 00:00 UTC of the hour's day: trading
    -- PnL, fees, forced and virtual closes (what the daily-loss check counts).
    realized_pnl   numeric NOT NULL,
    realized_today numeric NOT NULL,
    -- Σ entry notional, and maintenance / equity (999 without equity).
    exposure       numeric NOT NULL,
    margin_ratio   numeric NOT NULL,
    -- [{id, symbol, side, quantity, entryPrice, mark, unrealizedPnl}]
    positions      jsonb NOT NULL,
    -- LIVE: valued at the engine's marks on the hour; LAST_FILL: back-filled from the
    -- ledger, valued at each symbol's last fill before the hour.
    marks          text NOT NULL CHECK (marks IN ('LIVE', 'LAST_FILL')),
    written_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sub_account_id, hour)
) PARTITION BY RANGE (hour);
CREATE TABLE portfolio_snapshots_default PARTITION OF portfolio_snapshots DEFAULT;
CREATE INDEX portfolio_snapshots_hour ON portfolio_snapshots (hour);
COMMENT ON TABLE portfolio_snapshots IS 'Each sub-account on the hour (UTC): balance, equity, PnL, exposure, margin ratio, positions; idempotent per (account, hour). Read with pnl_history().';

-- The monthly partition of `parent` (ranged on `col`) starting at month_start, made if
-- missing; rows of that month already in the default partition move into it.
CREATE FUNCTION greekstream_ensure_month_partition(parent text, col text, month_start date)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    m0 date := make_date(extract(year FROM month_start)::int, extract(month FROM month_start)::int, 1);
    lo timestamptz := m0::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (m0 + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part text := format('%s_%s', parent, to_char(m0, 'YYYY_MM'));
    dflt text := format('%s_default', parent);
    pending boolean;
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent);
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %L AND %I < %L)',
                   dflt, col, lo, col, hi) INTO pending;
    IF pending THEN
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *)
                        INSERT INTO %I SELECT * FROM moved', dflt, col, lo, col, hi, part);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       part, parent, lo, hi);
    END IF;
    RETURN true;
END $$;

-- The partition maintenance (database::partitions) now keeps both monthly tables.
CREATE OR REPLACE FUNCTION greekstream_ensure_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    m date;
BEGIN
    FOR i IN -months_back..months_ahead LOOP
        m := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        IF greekstream_ensure_partition(m) THEN
            created := created + 1;
        END IF;
        PERFORM greekstream_ensure_month_partition('portfolio_snapshots', 'hour', m);
    END LOOP;
    RETURN created;
END $$;

SELECT greekstream_ensure_month_partition('portfolio_snapshots', 'hour',
    (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date)
  FROM generate_series(-1, 3) i;

-- An account's hourly history for analysts: the snapshots in [from, to), each with its
-- drawdown (equity less the highest equity so far in the window).
CREATE FUNCTION pnl_history(account uuid, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (hour timestamptz, balance numeric, equity numeric, unrealized_pnl numeric,
               realized_pnl numeric, realized_today numeric, exposure numeric,
               margin_ratio numeric, drawdown numeric, marks text)
LANGUAGE sql STABLE AS $$
    SELECT s.hour, s.balance, s.equity, s.unrealized_pnl, s.realized_pnl, s.realized_today,
           s.exposure, s.margin_ratio,
           s.equity - max(s.equity) OVER (ORDER BY s.hour ROWS UNBOUNDED PRECEDING),
           s.marks
      FROM portfolio_snapshots s
     WHERE s.sub_account_id = $1 AND s.hour >= $2 AND s.hour < $3
     ORDER BY s.hour
$$;
COMMENT ON FUNCTION pnl_history(uuid, timestamptz, timestamptz) IS 'One sub-account''s hourly portfolio in [from, to) with its drawdown; see portfolio_snapshots.';
