//! Open virtual positions, and what the book nets to per symbol.

use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use trading::position::Position;

use super::rows::{is_uuid, side, LedgerError, PositionRow};

/// Open positions, of one account or of all.
pub async fn open_positions(
    pool: &PgPool,
    account: Option<&str>,
) -> Result<Vec<PositionRow>, LedgerError> {
    if account.is_some_and(|a| !is_uuid(a)) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT id::text, sub_account_id::text, symbol, side, quantity, entry_price, leverage,
                babysitter_excluded, opened_at
           FROM virtual_positions
          WHERE status = 'OPEN' AND ($1::uuid IS NULL OR sub_account_id = $1::uuid)
          ORDER BY opened_at, id",
    )
    .bind(account)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PositionRow {
                id: r.try_get(0)?,
                sub_account_id: r.try_get(1)?,
                symbol: r.try_get(2)?,
                position: Position {
                    side: side(r.try_get(3)?)?,
                    quantity: r.try_get(4)?,
                    entry_price: r.try_get(5)?,
                    leverage: r.try_get(6)?,
                },
                babysitter_excluded: r.try_get(7)?,
                opened_at: r.try_get(8)?,
            })
        })
        .collect()
}

/// One open position, if it belongs to `account`.
pub async fn open_position_of(
    pool: &PgPool,
    account: &str,
    position_id: &str,
) -> Result<Option<PositionRow>, LedgerError> {
    if !is_uuid(position_id) {
        return Ok(None);
    }
    Ok(open_positions(pool, Some(account))
        .await?
        .into_iter()
        .find(|p| p.id == position_id))
}

/// Σ of every sub-account's open position in `symbol`, signed (long positive): what
/// the exchange's net position should be.
pub async fn book_net(pool: &PgPool, symbol: &str) -> Result<Decimal, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(CASE side WHEN 'LONG' THEN quantity ELSE -quantity END), 0)
           FROM virtual_positions WHERE symbol = $1 AND status = 'OPEN'",
    )
    .bind(symbol)
    .fetch_one(pool)
    .await?)
}

/// The symbols with open positions, and each one's open positions.
pub async fn open_symbols(pool: &PgPool) -> Result<Vec<String>, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT symbol FROM virtual_positions WHERE status = 'OPEN' ORDER BY symbol",
    )
    .fetch_all(pool)
    .await?)
}

/// The price of the latest venue fill in `symbol`, if any.
pub async fn last_fill_price(pool: &PgPool, symbol: &str) -> Result<Option<Decimal>, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT price FROM trade_executions
          WHERE symbol = $1 AND exchange_trade_id IS NOT NULL
          ORDER BY timestamp DESC LIMIT 1",
    )
    .bind(symbol)
    .fetch_optional(pool)
    .await?)
}
