-- The position side is part of a position's identity: Binance in hedge mode holds a
-- LONG and a SHORT leg of the same contract at once, two positions that must never
-- overwrite each other. Every other venue (and Binance in one-way mode) holds one
-- net position per contract: 'net'.

ALTER TABLE greek_snapshots
    ADD COLUMN position_side text NOT NULL DEFAULT 'net'
        CHECK (position_side IN ('net', 'long', 'short'));
COMMENT ON COLUMN greek_snapshots.position_side IS
    'net (one position per contract) | long | short (the two legs of Binance hedge mode).';

ALTER TABLE positions_current
    ADD COLUMN position_side text NOT NULL DEFAULT 'net'
        CHECK (position_side IN ('net', 'long', 'short'));
ALTER TABLE positions_current DROP CONSTRAINT positions_current_pkey;
ALTER TABLE positions_current
    ADD PRIMARY KEY (broker, account_id, contract_key, position_side);
COMMENT ON COLUMN positions_current.position_side IS
    'net (one position per contract) | long | short (the two legs of Binance hedge mode).';
