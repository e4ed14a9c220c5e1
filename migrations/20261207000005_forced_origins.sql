-- The risk engine's forced closes carry their own origin, so their fills are booked as
-- what they are (trade_executions.action LIQUIDATE / ADL_TIER2 / ADL_TIER3, balance
-- reasons LIQUIDATION / ADL) — also when a journal replays them after a crash.
ALTER TABLE orders DROP CONSTRAINT orders_origin_check;
ALTER TABLE orders ADD CONSTRAINT orders_origin_check
    CHECK (origin IN ('MANUAL', 'BOT', 'API', 'LIQUIDATION', 'ADL_TIER2', 'ADL_TIER3'));
ALTER TABLE trade_executions DROP CONSTRAINT trade_executions_origin_type_check;
ALTER TABLE trade_executions ADD CONSTRAINT trade_executions_origin_type_check
    CHECK (origin_type IN ('MANUAL', 'BOT', 'API', 'LIQUIDATION', 'ADL_TIER2', 'ADL_TIER3'));
