-- greek_snapshots: one row per normalized Greeks event, monthly RANGE partitions on
-- event_time. Monthly partitions are created ahead by greekstream_ensure_partitions()
-- (run at start-up and periodically); a DEFAULT partition takes any row outside the
-- prepared months so no row is ever rejected for its date.

CREATE TABLE greek_snapshots (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    event_time       timestamptz      NOT NULL,
    received_at      timestamptz      NOT NULL,
    persisted_at     timestamptz      NOT NULL DEFAULT clock_timestamp(),
    broker           text             NOT NULL,
    account_id       text             NOT NULL,
    contract_key     text             NOT NULL,
    underlying       text             NOT NULL,
    quantity         numeric          NOT NULL,
    multiplier       numeric          NOT NULL,
    mark_price       double precision,
    underlying_price double precision,
    implied_vol      double precision,
    delta            double precision,
    gamma            double precision,
    theta            double precision,
    vega             double precision,
    rho              double precision,
    position_delta   double precision,
    position_gamma   double precision,
    position_theta   double precision,
    position_vega    double precision,
    position_rho     double precision,
    greeks_source    text CHECK (greeks_source IN ('venue', 'model')),
    source_seq       bigint
) PARTITION BY RANGE (event_time);

CREATE TABLE greek_snapshots_default PARTITION OF greek_snapshots DEFAULT;

CREATE INDEX greek_snapshots_key_idx
    ON greek_snapshots (event_time, broker, account_id, contract_key);

COMMENT ON TABLE greek_snapshots IS
    'One row per normalized Greeks event. Monthly partitions on event_time (greek_snapshots_YYYY_MM) plus greek_snapshots_default for rows outside the prepared months.';
COMMENT ON COLUMN greek_snapshots.event_time IS 'Venue timestamp of the event (UTC). Partition key.';
COMMENT ON COLUMN greek_snapshots.received_at IS 'When the frame reached greekstream (UTC).';
COMMENT ON COLUMN greek_snapshots.persisted_at IS 'Server clock when the row was written, inside its batch transaction (UTC); the commit follows within that transaction.';
COMMENT ON COLUMN greek_snapshots.broker IS 'ibkr | tastytrade | binance | synthetic';
COMMENT ON COLUMN greek_snapshots.contract_key IS 'Canonical contract key, e.g. SPY 20261218 C 590 (see contracts).';
COMMENT ON COLUMN greek_snapshots.quantity IS 'Signed position quantity in contracts (negative = short).';
COMMENT ON COLUMN greek_snapshots.multiplier IS 'Contract multiplier (units of underlying per contract).';
COMMENT ON COLUMN greek_snapshots.mark_price IS 'Mark price of one unit of the contract, in the contract''s quote currency.';
COMMENT ON COLUMN greek_snapshots.underlying_price IS 'Underlying price, quote currency.';
COMMENT ON COLUMN greek_snapshots.implied_vol IS 'Implied volatility as a fraction (0.25 = 25%).';
COMMENT ON COLUMN greek_snapshots.delta IS 'Per unit: change in option price per 1 unit move of the underlying.';
COMMENT ON COLUMN greek_snapshots.gamma IS 'Per unit: change in delta per 1 unit move of the underlying.';
COMMENT ON COLUMN greek_snapshots.theta IS 'Per unit: change in option price per calendar day.';
COMMENT ON COLUMN greek_snapshots.vega IS 'Per unit: change in option price per 1 volatility point (0.01).';
COMMENT ON COLUMN greek_snapshots.rho IS 'Per unit: change in option price per 1 rate point (0.01).';
COMMENT ON COLUMN greek_snapshots.position_delta IS 'quantity x multiplier x delta (underlying units).';
COMMENT ON COLUMN greek_snapshots.position_gamma IS 'quantity x multiplier x gamma.';
COMMENT ON COLUMN greek_snapshots.position_theta IS 'quantity x multiplier x theta (quote currency per day).';
COMMENT ON COLUMN greek_snapshots.position_vega IS 'quantity x multiplier x vega (quote currency per vol point).';
COMMENT ON COLUMN greek_snapshots.position_rho IS 'quantity x multiplier x rho (quote currency per rate point).';
COMMENT ON COLUMN greek_snapshots.greeks_source IS 'venue: sent by the broker; model: computed locally; NULL: no Greeks in this event.';
COMMENT ON COLUMN greek_snapshots.source_seq IS 'Venue or generator sequence number, where the source has one.';

-- The contract dimension: one row per contract key seen.
CREATE TABLE contracts (
    contract_key  text PRIMARY KEY,
    underlying    text NOT NULL,
    asset_class   text NOT NULL,
    expiry        date,
    strike        numeric,
    option_right  char(1) CHECK (option_right IN ('C', 'P')),
    multiplier    numeric NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE contracts IS 'Every contract greekstream has seen, keyed by the canonical contract_key.';

-- The current position per (broker, account, contract), with its latest Greeks.
CREATE TABLE positions_current (
    broker           text NOT NULL,
    account_id       text NOT NULL,
    contract_key     text NOT NULL,
    underlying       text NOT NULL,
    quantity         numeric NOT NULL,
    multiplier       numeric NOT NULL,
    mark_price       double precision,
    underlying_price double precision,
    implied_vol      double precision,
    delta            double precision,
    gamma            double precision,
    theta            double precision,
    vega             double precision,
    rho              double precision,
    position_delta   double precision,
    position_gamma   double precision,
    position_theta   double precision,
    position_vega    double precision,
    position_rho     double precision,
    greeks_source    text,
    event_time       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (broker, account_id, contract_key)
);
COMMENT ON TABLE positions_current IS
    'Latest snapshot per (broker, account, contract); refreshed by the writer at most once per GS_POSITIONS_INTERVAL_MS. Same units as greek_snapshots.';

-- Ledger of committed batches: written in the same transaction as the batch's rows,
-- so a batch retried after an ambiguous failure (e.g. the connection died during
-- COMMIT) is recognised and never written twice.
CREATE TABLE ingest_batches (
    writer_id    bigint NOT NULL,
    batch_seq    bigint NOT NULL,
    row_count    integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (writer_id, batch_seq)
);
COMMENT ON TABLE ingest_batches IS 'Idempotency ledger for the batch writer; pruned after a few days.';

-- Creates the monthly partition starting at month_start (a first-of-month date) if
-- it does not exist. Rows of that month already sitting in the default partition are
-- moved into it, so a late-created month loses nothing.
CREATE FUNCTION greekstream_ensure_partition(month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    m0 date := make_date(extract(year FROM month_start)::int, extract(month FROM month_start)::int, 1);
    -- Bounds are UTC instants whatever the session's TimeZone.
    lo timestamptz := m0::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (m0 + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part text := format('greek_snapshots_%s', to_char(m0, 'YYYY_MM'));
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Serialise with concurrent callers and with the default partition's writers.
    LOCK TABLE greek_snapshots IN SHARE ROW EXCLUSIVE MODE;
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM greek_snapshots_default
               WHERE event_time >= lo AND event_time < hi) THEN
        EXECUTE format('CREATE TABLE %I (LIKE greek_snapshots INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM greek_snapshots_default
                                       WHERE event_time >= %L AND event_time < %L RETURNING *)
                        INSERT INTO %I SELECT * FROM moved', lo, hi, part);
        EXECUTE format('ALTER TABLE greek_snapshots ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF greek_snapshots FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    END IF;
    RETURN true;
END $$;

-- Ensures the months from months_back before the current one to months_ahead after
-- it; returns how many partitions were created.
CREATE FUNCTION greekstream_ensure_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
BEGIN
    FOR i IN -months_back..months_ahead LOOP
        IF greekstream_ensure_partition(
               (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;
