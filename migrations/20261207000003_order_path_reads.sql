-- What the order path reads before every order and on every fill, made independent
-- of how much history an account has.

-- An account's orders not yet final (its pending exposure), without scanning every
-- order it ever placed.
CREATE INDEX orders_account_open ON orders (sub_account_id)
    WHERE state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED');

-- An order's trades (its trade set, read with the order on every event).
CREATE INDEX trade_executions_client_order ON trade_executions (client_order_id)
    WHERE client_order_id IS NOT NULL;

-- What each account realized per UTC day (trading PnL, fees, forced and virtual
-- closes): the daily-loss check reads one row instead of summing the day's
-- balance_logs, which grow with every fill. Kept by a trigger, so every writer of
-- balance_logs keeps it without knowing of it.
CREATE TABLE realized_daily (
    sub_account_id uuid NOT NULL REFERENCES sub_accounts (id) ON DELETE CASCADE,
    day            date NOT NULL,
    amount         numeric NOT NULL,
    PRIMARY KEY (sub_account_id, day)
);
COMMENT ON TABLE realized_daily IS 'Σ balance_logs.change_amount of the trading reasons per account and UTC day (kept by a trigger on balance_logs).';

CREATE FUNCTION realized_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO realized_daily (sub_account_id, day, amount)
    VALUES (NEW.sub_account_id, (NEW.timestamp AT TIME ZONE 'UTC')::date, NEW.change_amount)
    ON CONFLICT (sub_account_id, day)
        DO UPDATE SET amount = realized_daily.amount + EXCLUDED.amount;
    RETURN NULL;
END
$$;

CREATE TRIGGER balance_logs_realized_daily
    AFTER INSERT ON balance_logs FOR EACH ROW
    WHEN (NEW.reason IN ('TRADE_PNL', 'FEE', 'LIQUIDATION', 'ADL', 'DESYNC_CLOSE', 'RECONCILE'))
    EXECUTE FUNCTION realized_daily_add();

INSERT INTO realized_daily (sub_account_id, day, amount)
SELECT sub_account_id, (timestamp AT TIME ZONE 'UTC')::date, sum(change_amount)
  FROM balance_logs
 WHERE reason IN ('TRADE_PNL', 'FEE', 'LIQUIDATION', 'ADL', 'DESYNC_CLOSE', 'RECONCILE')
 GROUP BY 1, 2;
