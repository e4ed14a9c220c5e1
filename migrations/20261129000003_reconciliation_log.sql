-- What reconciliation found and did, one row per action: operators read it to see
-- why an order changed state, an orphan was cancelled, or a symbol was blocked.
CREATE TABLE reconciliation_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    kind    text NOT NULL CHECK (kind IN ('ORDER_UPDATED', 'ORDER_NOT_FOUND', 'ORPHAN_CANCELLED', 'FOREIGN_ORDER',
                                          'POSITION_DESYNC', 'POSITION_IN_SYNC', 'VIRTUAL_CLOSE')),
    symbol  text,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX reconciliation_log_at ON reconciliation_log (at);
