-- Which running engine sent an order. The order path already counts its own orders
-- not yet final from memory; its book read skips them here instead of carrying
-- hundreds of them back on every read while orders stream in. Orders of an earlier
-- run, of the `order` command line or replayed from a journal are read as before.
ALTER TABLE orders ADD COLUMN sent_by uuid;
COMMENT ON COLUMN orders.sent_by IS 'The engine instance (random per process) that sent the order; NULL when replayed from a journal or written before this column existed.';
