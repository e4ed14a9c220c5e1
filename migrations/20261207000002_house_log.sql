-- What the house (the part of the shared exchange account no sub-account owns) took
-- on beyond its configured positions: a reduce-only fill past what its position held
-- (a close racing another fill of the same account) is the house's, not the
-- sub-account's. Reconciliation and closes compare the venue less (configured house +
-- Σ this) with the book.
CREATE TABLE house_log (
    id                bigserial PRIMARY KEY,
    symbol            text NOT NULL CHECK (symbol ~ '^[A-Z0-9_]{2,30}$'),
    -- Signed: + long, − short.
    quantity          numeric NOT NULL CHECK (quantity <> 0),
    reason            text NOT NULL,
    client_order_id   text,
    exchange_trade_id text,
    at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_order_id, exchange_trade_id)
);
COMMENT ON TABLE house_log IS 'Positions the house took on beyond GS_HOUSE_POSITIONS (reduce-only excess), one row per venue trade.';
