//! A balance change and its log row, under the account row's lock.

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use trading::balance::{self, BalanceChange, Reason};

use super::rows::{is_uuid, LedgerError};

/// Locks the account row for the rest of the transaction and reads its balance.
pub(super) async fn lock_balance(tx: &mut PgConnection, id: &str) -> Result<Decimal, LedgerError> {
    if !is_uuid(id) {
        return Err(LedgerError::AccountNotFound(id.to_owned()));
    }
    sqlx::query_scalar::<_, Decimal>(
        // NO KEY: bookings and balance changes of the account serialize here, while
        // rows that only reference it (a new order's foreign-key check takes FOR KEY
        // SHARE) are not held up.
        "SELECT current_balance FROM sub_accounts WHERE id = $1::uuid FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| LedgerError::AccountNotFound(id.to_owned()))
}

/// Applies one delta inside the caller's transaction (the account row already
/// locked by [`lock_balance`]) and writes its `balance_logs` row.
pub(super) async fn apply_delta(
    tx: &mut PgConnection,
    id: &str,
    before: Decimal,
    delta: Decimal,
    reason: Reason,
    trade_id: Option<&str>,
) -> Result<BalanceChange, LedgerError> {
    let c = balance::apply(before, delta, reason);
    // One round trip: the balance and its log row (a fill books up to two of these).
    sqlx::query(
        "WITH u AS (UPDATE sub_accounts SET current_balance = $3, updated_at = now()
                     WHERE id = $1::uuid RETURNING id)
         INSERT INTO balance_logs (sub_account_id, balance_before, balance_after, change_amount, absorbed, reason, trade_id)
         SELECT u.id, $2, $3, $4, $5, $6, $7 FROM u",
    )
    .bind(id)
    .bind(c.before)
    .bind(c.after)
    .bind(c.change)
    .bind(c.absorbed)
    .bind(c.reason.as_str())
    .bind(trade_id)
    .execute(&mut *tx)
    .await?;
    Ok(c)
}

/// Changes an account's balance by `delta`, floored at zero, with its log row, in one
/// transaction.
pub async fn change_balance(
    pool: &PgPool,
    id: &str,
    delta: Decimal,
    reason: Reason,
    trade_id: Option<&str>,
) -> Result<BalanceChange, LedgerError> {
    let mut tx = pool.begin().await?;
    let before = lock_balance(&mut tx, id).await?;
    let c = apply_delta(&mut tx, id, before, delta, reason, trade_id).await?;
    tx.commit().await?;
    Ok(c)
}

/// What a takeover did to one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub symbol: String,
    pub side: trading::position::Side,
    pub quantity: Decimal,
    pub realized: Decimal,
    pub balance: Decimal,
}

/// Moves one of `account`'s open positions into the house at `mark` (js-gateway §9.3,
/// takeover): the position is `TAKEN_OVER` (`taken_over*` set), its PnL at the mark
/// settles into the balance (`ADMIN_TAKEOVER`), the house's position in the symbol
/// grows by it (`house_log`), and no venue order or trade is written — the exchange
/// already holds it, now as the house's. `None` when the position is not open (taken
/// over or closed already): a second takeover changes nothing.
pub async fn take_over(
    pool: &PgPool,
    account: &str,
    position_id: &str,
    mark: Decimal,
    by: &str,
) -> Result<Option<TakenOver>, LedgerError> {
    if !is_uuid(position_id) {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    let before = lock_balance(&mut tx, account).await?;
    let row: Option<(String, String, Decimal, Decimal)> = sqlx::query_as(
        "UPDATE virtual_positions
            SET status = 'TAKEN_OVER', closed_at = now(), taken_over = true,
                taken_over_by = $3, taken_over_at = now(),
                realized_pnl = coalesce(realized_pnl, 0)
                             + (CASE side WHEN 'LONG' THEN 1 ELSE -1 END) * ($4 - entry_price) * quantity
          WHERE id = $1::uuid AND sub_account_id = $2::uuid AND status = 'OPEN'
      RETURNING symbol, side, quantity, entry_price",
    )
    .bind(position_id)
    .bind(account)
    .bind(by)
    .bind(mark)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((symbol, side, quantity, entry)) = row else {
        return Ok(None);
    };
    let side = super::rows::side(&side)?;
    let signed = quantity * side.sign();
    let realized = (mark - entry) * signed;
    sqlx::query(
        "INSERT INTO house_log (symbol, quantity, reason, client_order_id, exchange_trade_id)
         VALUES ($1, $2, 'TAKEOVER', $3, NULL)",
    )
    .bind(&symbol)
    .bind(signed)
    .bind(format!("takeover:{position_id}"))
    .execute(&mut *tx)
    .await?;
    let c = apply_delta(&mut tx, account, before, realized, Reason::Takeover, None).await?;
    tx.commit().await?;
    Ok(Some(TakenOver {
        symbol,
        side,
        quantity,
        realized,
        balance: c.after,
    }))
}
