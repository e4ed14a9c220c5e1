//! A venue fill booked against an account: its position, executions, balance and
//! the house's part of a reduce-only excess.

use std::collections::HashMap;

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use trading::balance::{BalanceChange, Reason};
use trading::position::{apply_fill, Change, Fill, OrderSide, Outcome, Position};

use super::balances::{apply_delta, lock_balance};
use super::rows::{corrupt, side, LedgerError};

/// The part `q` of a reduce-only fill past what its position held: the venue did
/// trade it, and no sub-account owns it, so the house does (once per venue trade).
pub(super) async fn to_house(
    tx: &mut PgConnection,
    b: &FillBooking,
    q: Decimal,
) -> Result<(), LedgerError> {
    let signed = match b.fill.side {
        OrderSide::Buy => q,
        OrderSide::Sell => -q,
    };
    sqlx::query(
        "INSERT INTO house_log (symbol, quantity, reason, client_order_id, exchange_trade_id)
         VALUES ($1, $2, 'REDUCE_ONLY_EXCESS', $3, $4)
         ON CONFLICT (client_order_id, exchange_trade_id) DO NOTHING",
    )
    .bind(&b.symbol)
    .bind(signed)
    .bind(&b.client_order_id)
    .bind(&b.exchange_trade_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What the house took on beyond its configured positions, per symbol.
pub async fn house_taken(pool: &PgPool) -> Result<HashMap<String, Decimal>, LedgerError> {
    let rows: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT symbol, sum(quantity) FROM house_log GROUP BY symbol")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// What the house took on in `symbol` (Σ `house_log`).
pub async fn house_taken_in(pool: &PgPool, symbol: &str) -> Result<Decimal, LedgerError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(sum(quantity), 0) FROM house_log WHERE symbol = $1")
            .bind(symbol)
            .fetch_one(pool)
            .await?,
    )
}

/// A venue fill attributed to a sub-account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillBooking {
    pub sub_account_id: String,
    pub symbol: String,
    pub fill: Fill,
    /// Commission in USDT, never negative.
    pub fee: Decimal,
    pub exchange_order_id: Option<String>,
    pub client_order_id: Option<String>,
    /// The venue's trade id; a fill with one is booked at most once.
    pub exchange_trade_id: Option<String>,
    /// `MARKET`, `LIMIT`, …
    pub order_type: String,
    /// `MANUAL`, `BOT` or `API`.
    pub origin: String,
    /// The action of a closing part (`CLOSE`, `LIMIT_CLOSE`, `LIQUIDATE`, …).
    pub close_action: String,
    pub babysitter_excluded: bool,
    /// A close of this very position (a virtual close): booked only while it is
    /// still the open one, so a close racing another close cannot open a new one.
    pub closes: Option<String>,
    /// The fill of a reduce-only order: booked only up to what the position on the
    /// other side still holds, so it never opens one on this side.
    pub reduce_only: bool,
}

/// What booking a fill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booked {
    /// This venue trade was booked before (or the position to close is no longer
    /// the open one); nothing changed.
    Duplicate,
    Applied(Box<Applied>),
    /// A reduce-only fill with no position left to reduce: nothing booked (the venue
    /// filled what no sub-account holds; reconciliation sees it).
    NothingLeft,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// The position closed or reduced by the fill.
    pub closed_position: Option<String>,
    /// The position open after the fill (added to, reduced, or opened by it).
    pub open_position: Option<String>,
    /// `trade_executions` ids: the closing part first, then the opening part.
    pub executions: Vec<String>,
    pub balance_changes: Vec<BalanceChange>,
    pub balance: Decimal,
}

pub(super) struct Execution<'a> {
    position_id: &'a str,
    quantity: Decimal,
    fee: Decimal,
    realized_net: Option<Decimal>,
    action: &'a str,
    /// The JS signature's middle: `{symbol}:{side}:{qty}` for opens, `{tag}:{positionId}` for closes.
    signed: String,
}

pub(super) async fn insert_execution(
    tx: &mut PgConnection,
    b: &FillBooking,
    e: Execution<'_>,
) -> Result<String, LedgerError> {
    let side = match b.fill.side {
        OrderSide::Buy => "BUY",
        OrderSide::Sell => "SELL",
    };
    // The JS scheme: hex SHA-256 of `{subAccountId}:{…}:{ms}:{nonce}`, the nonce being
    // the venue trade id when there is one (so the signature is reproducible), else a
    // random uuid as in the JS.
    Ok(sqlx::query_scalar(
        "INSERT INTO trade_executions (sub_account_id, position_id, exchange_order_id, client_order_id,
                exchange_trade_id, symbol, side, type, price, quantity, notional, fee, realized_pnl,
                action, origin_type, signature)
         VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $9 * $10, $11, $12, $13, $14,
                encode(sha256(convert_to($1 || ':' || $15 || ':'
                    || (extract(epoch FROM now()) * 1000)::bigint || ':'
                    || coalesce($5, gen_random_uuid()::text), 'UTF8')), 'hex'))
         RETURNING id::text",
    )
    .bind(&b.sub_account_id)
    .bind(e.position_id)
    .bind(&b.exchange_order_id)
    .bind(&b.client_order_id)
    .bind(&b.exchange_trade_id)
    .bind(&b.symbol)
    .bind(side)
    .bind(&b.order_type)
    .bind(b.fill.price)
    .bind(e.quantity)
    .bind(e.fee)
    .bind(e.realized_net)
    .bind(e.action)
    .bind(&b.origin)
    .bind(e.signed)
    .fetch_one(&mut *tx)
    .await?)
}

pub(super) async fn write_position(
    tx: &mut PgConnection,
    id: &str,
    p: &Position,
    realized: Decimal,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE virtual_positions
            SET side = $2, quantity = $3, entry_price = $4, notional = $4 * $3, leverage = $5,
                margin = $4 * $3 / $5, realized_pnl = coalesce(realized_pnl, 0) + $6
          WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(p.side.as_str())
    .bind(p.quantity)
    .bind(p.entry_price)
    .bind(p.leverage)
    .bind(realized)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_position(
    tx: &mut PgConnection,
    b: &FillBooking,
    p: &Position,
) -> Result<String, LedgerError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO virtual_positions (sub_account_id, symbol, side, entry_price, quantity, notional,
                leverage, margin, babysitter_excluded)
         VALUES ($1::uuid, $2, $3, $4, $5, $4 * $5, $6, $4 * $5 / $6, $7)
         RETURNING id::text",
    )
    .bind(&b.sub_account_id)
    .bind(&b.symbol)
    .bind(p.side.as_str())
    .bind(p.entry_price)
    .bind(p.quantity)
    .bind(p.leverage)
    .bind(b.babysitter_excluded)
    .fetch_one(&mut *tx)
    .await?)
}

/// Books one fill: the position opened, added to, reduced, closed or flipped; one
/// `trade_executions` row per position it touched; realized PnL and the fee as logged
/// balance deltas — all in one transaction, with the account row locked. A fill with
/// an `exchange_trade_id` already booked for this account is a [`Booked::Duplicate`].
/// Fills are booked whatever the account's status: the venue executed them.
pub async fn book_fill(pool: &PgPool, b: &FillBooking) -> Result<Booked, LedgerError> {
    let mut tx = pool.begin().await?;
    let booked = book_fill_in(&mut tx, b).await?;
    tx.commit().await?;
    Ok(booked)
}

/// [`book_fill`] inside the caller's transaction (which it must commit), so an order's
/// transition and its fill's booking land together.
pub async fn book_fill_in(tx: &mut PgConnection, b: &FillBooking) -> Result<Booked, LedgerError> {
    if b.fee < Decimal::ZERO {
        return Err(corrupt("fee", &b.fee.to_string()));
    }
    let mut balance = lock_balance(&mut *tx, &b.sub_account_id).await?;
    if let Some(t) = &b.exchange_trade_id {
        let seen: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM trade_executions
                             WHERE sub_account_id = $1::uuid AND symbol = $2 AND exchange_trade_id = $3)",
        )
        .bind(&b.sub_account_id)
        .bind(&b.symbol)
        .bind(t)
        .fetch_one(&mut *tx)
        .await?;
        if seen {
            return Ok(Booked::Duplicate);
        }
    }
    let current = sqlx::query(
        "SELECT id::text, side, quantity, entry_price, leverage FROM virtual_positions
          WHERE sub_account_id = $1::uuid AND symbol = $2 AND status = 'OPEN' FOR NO KEY UPDATE",
    )
    .bind(&b.sub_account_id)
    .bind(&b.symbol)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| -> Result<(String, Position), LedgerError> {
        Ok((
            r.try_get(0)?,
            Position {
                side: side(r.try_get(1)?)?,
                quantity: r.try_get(2)?,
                entry_price: r.try_get(3)?,
                leverage: r.try_get(4)?,
            },
        ))
    })
    .transpose()?;
    if let Some(target) = &b.closes {
        let still_open = current.as_ref().is_some_and(|(id, p)| {
            id == target && p.side != b.fill.side.opens() && p.quantity == b.fill.quantity
        });
        if !still_open {
            return Ok(Booked::Duplicate);
        }
    }
    let clamped;
    let b = match (b.reduce_only, &current) {
        (false, _) => b,
        (true, Some((_, p))) if p.side != b.fill.side.opens() => {
            if p.quantity >= b.fill.quantity {
                b
            } else {
                to_house(&mut *tx, b, b.fill.quantity - p.quantity).await?;
                clamped = FillBooking {
                    fill: Fill {
                        quantity: p.quantity,
                        ..b.fill
                    },
                    fee: b.fee * p.quantity / b.fill.quantity,
                    ..b.clone()
                };
                &clamped
            }
        }
        (true, _) => {
            to_house(&mut *tx, b, b.fill.quantity).await?;
            return Ok(Booked::NothingLeft);
        }
    };
    let outcome = apply_fill(current.as_ref().map(|(_, p)| p), &b.fill)?;
    let fee_closing = if outcome.closed.is_zero() {
        Decimal::ZERO
    } else {
        b.fee * outcome.closed / b.fill.quantity
    };
    let opened = b.fill.quantity - outcome.closed;
    let open_signed = |q: Decimal| {
        format!(
            "{}:{}:{}",
            b.symbol,
            b.fill.side.opens().as_str(),
            q.normalize()
        )
    };
    let mut executions = Vec::new();
    let (mut closed_position, mut open_position) = (None, None);
    match (&outcome.change, &current, &outcome.after) {
        (Change::Opened, None, Some(after)) => {
            let id = insert_position(&mut *tx, b, after).await?;
            executions.push(
                insert_execution(
                    &mut *tx,
                    b,
                    Execution {
                        position_id: &id,
                        quantity: b.fill.quantity,
                        fee: b.fee,
                        realized_net: None,
                        action: "OPEN",
                        signed: open_signed(b.fill.quantity),
                    },
                )
                .await?,
            );
            open_position = Some(id);
        }
        (Change::Added, Some((id, _)), Some(after)) => {
            write_position(&mut *tx, id, after, Decimal::ZERO).await?;
            executions.push(
                insert_execution(
                    &mut *tx,
                    b,
                    Execution {
                        position_id: id,
                        quantity: b.fill.quantity,
                        fee: b.fee,
                        realized_net: None,
                        action: "ADD",
                        signed: open_signed(b.fill.quantity),
                    },
                )
                .await?,
            );
            open_position = Some(id.clone());
        }
        (Change::Reduced | Change::Closed | Change::Flipped, Some((id, _)), after) => {
            let flipped = outcome.change == Change::Flipped;
            match (&outcome.change, after) {
                (Change::Reduced, Some(rest)) => {
                    write_position(&mut *tx, id, rest, outcome.realized).await?;
                    open_position = Some(id.clone());
                }
                _ => {
                    sqlx::query(
                        "UPDATE virtual_positions
                            SET status = 'CLOSED', closed_at = now(),
                                realized_pnl = coalesce(realized_pnl, 0) + $2
                          WHERE id = $1::uuid",
                    )
                    .bind(id)
                    .bind(outcome.realized)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let action = if flipped {
                "FLIP_CLOSE"
            } else {
                b.close_action.as_str()
            };
            executions.push(
                insert_execution(
                    &mut *tx,
                    b,
                    Execution {
                        position_id: id,
                        quantity: outcome.closed,
                        fee: fee_closing,
                        realized_net: Some(outcome.realized - fee_closing),
                        action,
                        signed: format!("{action}:{id}"),
                    },
                )
                .await?,
            );
            closed_position = Some(id.clone());
            if let (true, Some(fresh)) = (flipped, after) {
                let new_id = insert_position(&mut *tx, b, fresh).await?;
                executions.push(
                    insert_execution(
                        &mut *tx,
                        b,
                        Execution {
                            position_id: &new_id,
                            quantity: opened,
                            fee: b.fee - fee_closing,
                            realized_net: None,
                            action: "OPEN",
                            signed: open_signed(opened),
                        },
                    )
                    .await?,
                );
                open_position = Some(new_id);
            }
        }
        (change, current, after) => {
            return Err(corrupt(
                "fill outcome",
                &format!(
                    "{change:?} with a position {} and after {}",
                    current.is_some(),
                    after.is_some()
                ),
            ))
        }
    }
    let trade = executions.first().map(String::as_str);
    let mut balance_changes = Vec::new();
    if !outcome.realized.is_zero() {
        let c = apply_delta(
            &mut *tx,
            &b.sub_account_id,
            balance,
            outcome.realized,
            trading::liquidation::realized_reason(&b.close_action),
            trade,
        )
        .await?;
        balance = c.after;
        balance_changes.push(c);
    }
    if !b.fee.is_zero() {
        let c = apply_delta(
            &mut *tx,
            &b.sub_account_id,
            balance,
            -b.fee,
            Reason::Fee,
            trade,
        )
        .await?;
        balance = c.after;
        balance_changes.push(c);
    }
    Ok(Booked::Applied(Box::new(Applied {
        outcome,
        closed_position,
        open_position,
        executions,
        balance_changes,
        balance,
    })))
}

/// The house's position in `symbol` changed by `signed` outside any sub-account's
/// booking (the venue closed part of it; a takeover) — once per (`key`, `trade`).
/// Whether it was new.
pub async fn house_changed(
    pool: &PgPool,
    symbol: &str,
    signed: Decimal,
    reason: &str,
    key: &str,
    trade: &str,
) -> Result<bool, LedgerError> {
    if signed.is_zero() {
        return Ok(false);
    }
    let r = sqlx::query(
        "INSERT INTO house_log (symbol, quantity, reason, client_order_id, exchange_trade_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (client_order_id, exchange_trade_id) DO NOTHING",
    )
    .bind(symbol)
    .bind(signed)
    .bind(reason)
    .bind(key)
    .bind(trade)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
