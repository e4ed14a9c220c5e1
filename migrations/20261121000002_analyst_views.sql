-- Analysts' views over the Greeks store, and retention.
-- Units as in greek_snapshots: delta/gamma per unit of the underlying, theta per
-- calendar day, vega per vol point, rho per rate point; position_* = quantity x
-- multiplier x per-unit value; dollar_delta = position_delta x underlying_price.

-- One account over a time range (the everyday question) without reading the other
-- accounts' rows: with partition pruning, an index range scan of one month.
CREATE INDEX greek_snapshots_account_time_idx ON greek_snapshots (account_id, event_time);

CREATE VIEW latest_greeks AS
SELECT DISTINCT ON (contract_key)
       contract_key, underlying, broker, account_id, event_time, mark_price,
       underlying_price, implied_vol, delta, gamma, theta, vega, rho, greeks_source
FROM positions_current
WHERE greeks_source IS NOT NULL
ORDER BY contract_key, event_time DESC;
COMMENT ON VIEW latest_greeks IS
    'The most recent per-unit Greeks of every contract currently held, whichever broker sent them last (greeks_source says venue or model).';

CREATE VIEW portfolio_greeks AS
SELECT CASE
           WHEN GROUPING(account_id) = 0 THEN 'account'
           WHEN GROUPING(underlying) = 0 THEN 'underlying'
           WHEN GROUPING(broker) = 0 THEN 'broker'
           ELSE 'total'
       END AS group_kind,
       broker, account_id, underlying,
       count(*)                                           AS positions,
       count(*) FILTER (WHERE greeks_source IS NULL)      AS without_greeks,
       sum(position_delta)                                AS delta,
       sum(position_gamma)                                AS gamma,
       sum(position_theta)                                AS theta,
       sum(position_vega)                                 AS vega,
       sum(position_rho)                                  AS rho,
       sum(position_delta * underlying_price)             AS dollar_delta,
       count(*) FILTER (WHERE position_delta IS NULL)     AS missing_delta,
       count(*) FILTER (WHERE position_gamma IS NULL)     AS missing_gamma,
       count(*) FILTER (WHERE position_theta IS NULL)     AS missing_theta,
       count(*) FILTER (WHERE position_vega IS NULL)      AS missing_vega,
       count(*) FILTER (WHERE position_rho IS NULL)       AS missing_rho,
       count(*) FILTER (WHERE position_delta IS NULL OR underlying_price IS NULL)
                                                          AS missing_dollar_delta,
       max(event_time)                                    AS as_of
FROM positions_current
WHERE quantity <> 0
GROUP BY GROUPING SETS ((broker, account_id), (underlying), (broker), ());
COMMENT ON VIEW portfolio_greeks IS
    'Current net Greeks by account (broker, account_id), by underlying, by broker and in total (group_kind). Sums skip unknown values; missing_* count the positions that lack each one, so a partial sum is never mistaken for a complete one.';

-- A function, not a view, so the time range reaches the partition key: with
-- constant arguments the planner inlines it and prunes partitions at plan time.
CREATE FUNCTION greeks_history(
    p_account text,
    p_from timestamptz,
    p_to timestamptz,
    p_bucket interval DEFAULT interval '1 minute'
) RETURNS TABLE (
    bucket timestamptz,
    broker text,
    contract_key text,
    underlying text,
    samples bigint,
    quantity numeric,
    underlying_price double precision,
    implied_vol double precision,
    position_delta double precision,
    position_gamma double precision,
    position_theta double precision,
    position_vega double precision,
    position_rho double precision
)
LANGUAGE sql STABLE AS $$
    SELECT date_bin(p_bucket, g.event_time, timestamptz '2000-01-01 00:00:00+00') AS bucket,
           g.broker, g.contract_key, min(g.underlying),
           count(*),
           (array_agg(g.quantity ORDER BY g.event_time DESC))[1],
           (array_agg(g.underlying_price ORDER BY g.event_time DESC))[1],
           avg(g.implied_vol),
           (array_agg(g.position_delta ORDER BY g.event_time DESC))[1],
           (array_agg(g.position_gamma ORDER BY g.event_time DESC))[1],
           (array_agg(g.position_theta ORDER BY g.event_time DESC))[1],
           (array_agg(g.position_vega ORDER BY g.event_time DESC))[1],
           (array_agg(g.position_rho ORDER BY g.event_time DESC))[1]
    FROM greek_snapshots g
    WHERE g.account_id = p_account AND g.event_time >= p_from AND g.event_time < p_to
    GROUP BY 1, 2, 3
$$;
COMMENT ON FUNCTION greeks_history(text, timestamptz, timestamptz, interval) IS
    'One account''s Greeks per contract per time bucket (default 1 minute): samples, the last quantity and position Greeks in the bucket, mean IV.';

-- Retention: drops whole monthly partitions that end before the first day of the
-- month keep_months back (keep_months = 3 in May keeps February, March, April and
-- May), and deletes rows that old from the default partition. Returns the dropped
-- partitions' names.
CREATE FUNCTION greekstream_drop_old_partitions(keep_months integer)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC')
                           - make_interval(months => keep_months)) AT TIME ZONE 'UTC';
    part record;
    hi timestamptz;
BEGIN
    IF keep_months IS NULL OR keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, got %', keep_months;
    END IF;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'greek_snapshots' AND c.relname ~ '^greek_snapshots_[0-9]{4}_[0-9]{2}$'
        ORDER BY c.relname
    LOOP
        hi := (to_date(substr(part.relname, 17), 'YYYY_MM') + interval '1 month')::timestamp
              AT TIME ZONE 'UTC';
        IF hi <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
    DELETE FROM greek_snapshots_default WHERE event_time < cutoff;
END
$$;
