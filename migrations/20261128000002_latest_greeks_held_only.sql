-- latest_greeks lists contracts "currently held": a position closed to 0 keeps its
-- positions_current row (its last Greeks, quantity 0) and must not count as held.
CREATE OR REPLACE VIEW latest_greeks AS
SELECT DISTINCT ON (contract_key)
       contract_key, underlying, broker, account_id, event_time, mark_price,
       underlying_price, implied_vol, delta, gamma, theta, vega, rho, greeks_source
FROM positions_current
WHERE greeks_source IS NOT NULL AND quantity <> 0
ORDER BY contract_key, event_time DESC;
