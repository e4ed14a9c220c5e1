-- A close asked for with its own reason (the babysitter's `BABYSITTER_TP`…) carries it
-- on its order, so its fills are booked as that action (trade_executions.action) and
-- published as that reason — also when they arrive after a restart or a journal replay.
ALTER TABLE orders ADD COLUMN close_reason text
    CHECK (close_reason ~ '^[A-Za-z0-9_:-]{1,40}$');
COMMENT ON COLUMN orders.close_reason IS 'What the close''s fills are booked as (trade_executions.action) when not the origin''s default; NULL for every order but a babysitter close.';
