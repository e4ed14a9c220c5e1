-- The trading core: sub-accounts sharing one exchange account, their risk rules,
-- virtual positions, trade executions and balance logs. Table and column names are
-- the JS system's (js-gateway §10) so its readers keep working; money is numeric; and
-- the constraints the JS schema lacked make bad states impossible.

CREATE TABLE sub_accounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The gateway's user (its own table, not ours: no foreign key).
    user_id          uuid,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    type             text NOT NULL CHECK (type IN ('USER', 'BOT')),
    initial_balance  numeric NOT NULL CHECK (initial_balance >= 0),
    current_balance  numeric NOT NULL CHECK (current_balance >= 0),
    status           text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'FROZEN', 'LIQUIDATED')),
    liquidation_mode text NOT NULL DEFAULT 'ADL_30' CHECK (liquidation_mode IN ('ADL_30', 'INSTANT_CLOSE', 'TAKEOVER')),
    maintenance_rate numeric NOT NULL DEFAULT 0.005 CHECK (maintenance_rate > 0 AND maintenance_rate < 1),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sub_accounts_user_status ON sub_accounts (user_id, status);
CREATE INDEX sub_accounts_status ON sub_accounts (status);
COMMENT ON TABLE sub_accounts IS 'A user''s or bot''s account inside the one shared exchange account: its own balance, positions and rules.';
COMMENT ON COLUMN sub_accounts.current_balance IS 'Changed only by the engine, one balance_logs row per change; never below 0.';

CREATE TABLE risk_rules (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sub_account_id         uuid UNIQUE REFERENCES sub_accounts (id) ON DELETE CASCADE,
    is_global              boolean NOT NULL DEFAULT false,
    max_leverage           numeric NOT NULL DEFAULT 100 CHECK (max_leverage >= 1),
    max_notional_per_trade numeric NOT NULL DEFAULT 200 CHECK (max_notional_per_trade > 0),
    max_total_exposure     numeric NOT NULL DEFAULT 500 CHECK (max_total_exposure > 0),
    max_symbol_exposure    numeric CHECK (max_symbol_exposure > 0),
    max_daily_loss         numeric CHECK (max_daily_loss > 0),
    liquidation_threshold  numeric NOT NULL DEFAULT 0.90 CHECK (liquidation_threshold > 0 AND liquidation_threshold <= 1),
    -- A row is either one account's rules or the global ones.
    CHECK (is_global = (sub_account_id IS NULL))
);
-- At most one global row.
CREATE UNIQUE INDEX risk_rules_one_global ON risk_rules (is_global) WHERE is_global;
COMMENT ON TABLE risk_rules IS 'Per-account risk rules; an account without a row uses the global row, else the defaults.';

CREATE TABLE virtual_positions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sub_account_id      uuid NOT NULL REFERENCES sub_accounts (id) ON DELETE RESTRICT,
    symbol              text NOT NULL CHECK (symbol ~ '^[A-Z0-9_]{2,30}$'),
    side                text NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    entry_price         numeric NOT NULL CHECK (entry_price > 0),
    quantity            numeric NOT NULL CHECK (quantity >= 0),
    notional            numeric NOT NULL CHECK (notional >= 0),
    leverage            numeric NOT NULL CHECK (leverage >= 1),
    margin              numeric NOT NULL CHECK (margin >= 0),
    liquidation_price   numeric NOT NULL DEFAULT 0 CHECK (liquidation_price >= 0),
    status              text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED', 'LIQUIDATED', 'TAKEN_OVER')),
    realized_pnl        numeric,
    babysitter_excluded boolean NOT NULL DEFAULT false,
    taken_over          boolean NOT NULL DEFAULT false,
    taken_over_by       text,
    taken_over_at       timestamptz,
    opened_at           timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    -- Open means not closed, and an open position holds something.
    CHECK ((status = 'OPEN') = (closed_at IS NULL)),
    CHECK (status <> 'OPEN' OR quantity > 0)
);
-- One open position per account and symbol (the JS had this by convention only).
CREATE UNIQUE INDEX virtual_positions_one_open ON virtual_positions (sub_account_id, symbol) WHERE status = 'OPEN';
CREATE INDEX virtual_positions_account_status ON virtual_positions (sub_account_id, status);
CREATE INDEX virtual_positions_symbol_status ON virtual_positions (symbol, status);
COMMENT ON TABLE virtual_positions IS 'Sub-accounts'' positions; the exchange holds only their net per symbol. Symbols are Binance-native (BTCUSDT).';

CREATE TABLE trade_executions (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sub_account_id    uuid NOT NULL REFERENCES sub_accounts (id) ON DELETE RESTRICT,
    position_id       uuid REFERENCES virtual_positions (id) ON DELETE SET NULL,
    exchange_order_id text,
    client_order_id   text,
    -- The venue's trade id of the fill (ORDER_TRADE_UPDATE `t`), when it came from one.
    exchange_trade_id text,
    symbol            text NOT NULL,
    side              text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    type              text NOT NULL,
    price             numeric NOT NULL CHECK (price > 0),
    quantity          numeric NOT NULL CHECK (quantity > 0),
    notional          numeric NOT NULL CHECK (notional >= 0),
    fee               numeric NOT NULL DEFAULT 0 CHECK (fee >= 0),
    realized_pnl      numeric,
    action            text NOT NULL,
    origin_type       text NOT NULL DEFAULT 'MANUAL' CHECK (origin_type IN ('MANUAL', 'BOT', 'API')),
    status            text NOT NULL DEFAULT 'FILLED',
    -- Hex SHA-256 of the JS scheme (js-gateway §10), kept for its readers.
    signature         text NOT NULL CHECK (signature ~ '^[0-9a-f]{64}$'),
    timestamp         timestamptz NOT NULL DEFAULT now()
);
-- A venue fill is booked once per position it touches (a flip books it against the
-- closed position and the opened one).
CREATE UNIQUE INDEX trade_executions_one_booking ON trade_executions (symbol, exchange_trade_id, position_id)
    NULLS NOT DISTINCT WHERE exchange_trade_id IS NOT NULL;
CREATE INDEX trade_executions_account_time ON trade_executions (sub_account_id, timestamp);
CREATE INDEX trade_executions_account_symbol_time ON trade_executions (sub_account_id, symbol, timestamp);
CREATE INDEX trade_executions_order ON trade_executions (exchange_order_id);

CREATE TABLE balance_logs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sub_account_id uuid NOT NULL REFERENCES sub_accounts (id) ON DELETE RESTRICT,
    balance_before numeric NOT NULL CHECK (balance_before >= 0),
    balance_after  numeric NOT NULL CHECK (balance_after >= 0),
    -- The requested delta, as the JS logged it, even when the floor clamped the result.
    change_amount  numeric NOT NULL,
    -- What the zero floor absorbed: balance_after − (balance_before + change_amount).
    absorbed       numeric NOT NULL DEFAULT 0 CHECK (absorbed >= 0),
    reason         text NOT NULL,
    trade_id       text,
    timestamp      timestamptz NOT NULL DEFAULT now(),
    CHECK (balance_after = balance_before + change_amount + absorbed)
);
CREATE INDEX balance_logs_account_time ON balance_logs (sub_account_id, timestamp);
COMMENT ON TABLE balance_logs IS 'Every balance change, one row each; for every account initial_balance + Σ change_amount + Σ absorbed = current_balance.';
