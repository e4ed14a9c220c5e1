-- Orders and their events: every order is written before it is sent, every
-- transition is an order_events row saying who said so (the engine, the REST reply,
-- the user stream, a reconciliation, recovery).

CREATE TABLE orders (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sub_account_id  uuid NOT NULL REFERENCES sub_accounts (id) ON DELETE RESTRICT,
    -- `gs` + the id's 32 hex digits: deterministic, ours by prefix.
    client_order_id text NOT NULL UNIQUE CHECK (client_order_id ~ '^[.A-Za-z:/0-9_-]{1,36}$'),
    venue_order_id  text,
    symbol          text NOT NULL CHECK (symbol ~ '^[A-Z0-9_]{2,30}$'),
    side            text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    type            text NOT NULL CHECK (type IN ('MARKET', 'LIMIT')),
    quantity        numeric NOT NULL CHECK (quantity > 0),
    price           numeric CHECK (price > 0),
    leverage        numeric NOT NULL CHECK (leverage >= 1),
    reduce_only     boolean NOT NULL DEFAULT false,
    state           text NOT NULL CHECK (state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED',
                                                   'FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')),
    filled          numeric NOT NULL DEFAULT 0 CHECK (filled >= 0),
    reject_code     text,
    reject_message  text,
    origin          text NOT NULL DEFAULT 'MANUAL' CHECK (origin IN ('MANUAL', 'BOT', 'API')),
    -- The gateway's request that placed it.
    request_id      text,
    -- When the request went on the wire (Unix ms, the venue's clock as we know it).
    sent_at_ms      bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (type <> 'LIMIT' OR price IS NOT NULL),
    CHECK ((state = 'REJECTED') = (reject_code IS NOT NULL))
);
CREATE INDEX orders_open ON orders (state, created_at)
    WHERE state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED');
CREATE INDEX orders_account_time ON orders (sub_account_id, created_at);
CREATE INDEX orders_venue_id ON orders (venue_order_id);
COMMENT ON TABLE orders IS 'Every order the engine placed; written (SUBMITTED) before the venue call.';

CREATE TABLE order_events (
    id         bigserial PRIMARY KEY,
    order_id   uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    event      text NOT NULL,
    source     text NOT NULL CHECK (source IN ('ENGINE', 'REST', 'STREAM', 'RECONCILE', 'RECOVERY')),
    state      text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order ON order_events (order_id, id);
