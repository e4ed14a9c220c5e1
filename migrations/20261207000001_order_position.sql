-- A close (market or limit) belongs to the position it closes: at most one market
-- close of a position is in flight, and a position that closes takes its resting
-- reduce-only orders with it.
ALTER TABLE orders ADD COLUMN position_id uuid REFERENCES virtual_positions (id) ON DELETE RESTRICT;
CREATE INDEX orders_position ON orders (position_id, created_at) WHERE position_id IS NOT NULL;
COMMENT ON COLUMN orders.position_id IS 'The position this order closes (close, limit_close), if any.';
