//! Orders and their events. An order is inserted as SUBMITTED, with its deterministic
//! client order id, as it is sent (the engine's journal holds it durably before the
//! venue is called, and its readers wait for the row); every later transition is written
//! with the state machine's result and an `order_events` row naming its source.
//! The machine is `trading::order`'s; this module reads and writes rows.

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use trading::order::{Order, OrderState};
use trading::position::OrderSide;

use crate::ledger::{is_uuid, LedgerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKind {
    Market,
    Limit,
}

impl OrderKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderKind::Market => "MARKET",
            OrderKind::Limit => "LIMIT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "MARKET" => Some(OrderKind::Market),
            "LIMIT" => Some(OrderKind::Limit),
            _ => None,
        }
    }
}

/// An order's ids, chosen before anything is written or sent: the row's UUID and
/// the client order id derived from it (`gs` + its 32 hex digits, ours by prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderIds {
    pub id: String,
    pub client_order_id: String,
}

impl OrderIds {
    /// The ids of a version-4 UUID made of these 16 random bytes.
    pub fn from_random(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let id = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        Self {
            client_order_id: trading::order::client_order_id(&id),
            id,
        }
    }
}

/// Who said what changed an order (`order_events.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Engine,
    Rest,
    Stream,
    Reconcile,
    Recovery,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Engine => "ENGINE",
            Source::Rest => "REST",
            Source::Stream => "STREAM",
            Source::Reconcile => "RECONCILE",
            Source::Recovery => "RECOVERY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub sub_account_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub kind: OrderKind,
    pub quantity: Decimal,
    pub price: Option<Decimal>,
    pub leverage: Decimal,
    pub reduce_only: bool,
    pub origin: String,
    pub request_id: Option<String>,
    /// The position this order closes (a close or a limit close).
    pub position_id: Option<String>,
    /// What a close's fills are booked as when not its origin's default (a
    /// babysitter close's reason).
    pub close_reason: Option<String>,
}

impl NewOrder {
    /// What the `orders` table's checks would refuse, asked before the order is sent:
    /// once it is on the wire its row must not fail to be written.
    pub fn check(&self) -> Result<(), &'static str> {
        let symbol_ok = (2..=30).contains(&self.symbol.len())
            && self
                .symbol
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
        if !symbol_ok {
            return Err("the symbol is not a venue symbol");
        }
        if !matches!(
            self.origin.as_str(),
            "MANUAL" | "BOT" | "API" | "LIQUIDATION" | "ADL_TIER2" | "ADL_TIER3"
        ) {
            return Err("origin must be MANUAL, BOT, API or a forced close's");
        }
        if let Some(r) = &self.close_reason {
            if !trading::command::close_reason_ok(r) {
                return Err("a close reason is 1 to 40 letters, digits, _, - or :");
            }
        }
        if self.quantity <= Decimal::ZERO {
            return Err("the quantity must be positive");
        }
        if self.leverage < Decimal::ONE {
            return Err("the leverage must be at least 1");
        }
        match (self.kind, self.price) {
            (_, Some(p)) if p <= Decimal::ZERO => Err("the price must be positive"),
            (OrderKind::Limit, None) => Err("a limit order needs a price"),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: String,
    pub sub_account_id: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub kind: String,
    pub price: Option<Decimal>,
    pub leverage: Decimal,
    pub reduce_only: bool,
    pub origin: String,
    pub sent_at_ms: Option<i64>,
    /// The position this order closes, if it is a close.
    pub position_id: Option<String>,
    /// What its fills are booked as when not its origin's default.
    pub close_reason: Option<String>,
    /// State, quantity, filled, venue id, booked trades, rejection.
    pub order: Order,
}

const COLUMNS: &str =
    "o.id::text, o.sub_account_id::text, o.client_order_id, o.symbol, o.side, o.type, \
     o.quantity, o.price, o.leverage, o.reduce_only, o.origin, o.sent_at_ms, o.state, o.filled, \
     o.venue_order_id, o.reject_code, o.reject_message, \
     ARRAY(SELECT t.exchange_trade_id FROM trade_executions t \
            WHERE t.client_order_id = o.client_order_id AND t.exchange_trade_id IS NOT NULL \
           UNION SELECT e.detail->>'tradeId' FROM order_events e \
            WHERE e.order_id = o.id AND e.event = 'Fill' AND e.detail ? 'tradeId'), \
     o.position_id::text, o.close_reason";

fn corrupt(what: &'static str, value: &str) -> LedgerError {
    LedgerError::Corrupt {
        what,
        value: value.to_owned(),
    }
}

fn row(r: &sqlx::postgres::PgRow) -> Result<OrderRow, LedgerError> {
    let side: String = r.try_get(4)?;
    let state: String = r.try_get(12)?;
    let trades: Vec<String> = r.try_get(17)?;
    Ok(OrderRow {
        id: r.try_get(0)?,
        sub_account_id: r.try_get(1)?,
        client_order_id: r.try_get(2)?,
        symbol: r.try_get(3)?,
        side: match side.as_str() {
            "BUY" => OrderSide::Buy,
            "SELL" => OrderSide::Sell,
            _ => return Err(corrupt("order side", &side)),
        },
        kind: r.try_get(5)?,
        price: r.try_get(7)?,
        leverage: r.try_get(8)?,
        reduce_only: r.try_get(9)?,
        origin: r.try_get(10)?,
        sent_at_ms: r.try_get(11)?,
        position_id: r.try_get(18)?,
        close_reason: r.try_get(19)?,
        order: Order {
            state: OrderState::parse(&state).ok_or_else(|| corrupt("order state", &state))?,
            quantity: r.try_get(6)?,
            filled: r.try_get(13)?,
            venue_id: r.try_get(14)?,
            trades: trades.into_iter().collect::<BTreeSet<_>>(),
            reject_code: r.try_get(15)?,
            reject_message: r.try_get(16)?,
        },
    })
}

pub const fn side_str(side: OrderSide) -> &'static str {
    match side {
        OrderSide::Buy => "BUY",
        OrderSide::Sell => "SELL",
    }
}

impl OrderRow {
    /// What its fills are booked as when they close a position: its own reason, else
    /// its origin's (`CLOSE`, `LIQUIDATE`, `ADL_TIER2`…).
    pub fn close_action(&self) -> &str {
        self.close_reason
            .as_deref()
            .unwrap_or_else(|| trading::liquidation::close_action(&self.origin))
    }

    /// The row [`insert_submitted`] writes, as it stands before the venue replies.
    pub fn submitted(ids: &OrderIds, o: &NewOrder, sent_at_ms: i64) -> Self {
        let mut order = Order::new(o.quantity);
        order.state = OrderState::Submitted;
        Self {
            id: ids.id.clone(),
            sub_account_id: o.sub_account_id.clone(),
            client_order_id: ids.client_order_id.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            kind: o.kind.as_str().to_owned(),
            price: o.price,
            leverage: o.leverage,
            reduce_only: o.reduce_only,
            origin: o.origin.clone(),
            sent_at_ms: Some(sent_at_ms),
            position_id: o.position_id.clone(),
            close_reason: o.close_reason.clone(),
            order,
        }
    }
}

/// Writes the order as SUBMITTED, sent at `sent_at_ms`, with its `Sent` event, in one
/// statement, and returns its row. Idempotent: an order whose row is already there
/// (a retried write, a journal replayed twice) is returned as it stands.
pub async fn insert_submitted(
    pool: &PgPool,
    ids: &OrderIds,
    o: &NewOrder,
    sent_at_ms: i64,
    sent_by: Option<&str>,
) -> Result<OrderRow, LedgerError> {
    if !is_uuid(&o.sub_account_id) {
        return Err(LedgerError::AccountNotFound(o.sub_account_id.clone()));
    }
    let r = sqlx::query(&format!(
        "WITH ins AS (
                INSERT INTO orders (id, sub_account_id, client_order_id, symbol, side, type, quantity,
                                    price, leverage, reduce_only, state, origin, request_id, sent_at_ms,
                                    position_id, sent_by, close_reason)
                VALUES ($12::uuid, $1::uuid, $13, $2, $3, $4, $5, $6, $7, $8, 'SUBMITTED', $9, $10, $11,
                        $14::uuid, $15::uuid, $16)
                ON CONFLICT (client_order_id) DO NOTHING
                RETURNING *),
              e AS (INSERT INTO order_events (order_id, event, source, state)
                    SELECT id, 'Sent', 'ENGINE', 'SUBMITTED' FROM ins)
         SELECT {COLUMNS} FROM ins o
         UNION ALL
         SELECT {COLUMNS} FROM orders o
          WHERE o.client_order_id = $13 AND NOT EXISTS (SELECT 1 FROM ins)"
    ))
    .bind(&o.sub_account_id)
    .bind(&o.symbol)
    .bind(side_str(o.side))
    .bind(o.kind.as_str())
    .bind(o.quantity)
    .bind(o.price)
    .bind(o.leverage)
    .bind(o.reduce_only)
    .bind(&o.origin)
    .bind(&o.request_id)
    .bind(sent_at_ms)
    .bind(&ids.id)
    .bind(&ids.client_order_id)
    .bind(&o.position_id)
    .bind(sent_by)
    .bind(&o.close_reason)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            LedgerError::AccountNotFound(o.sub_account_id.clone())
        }
        _ => e.into(),
    })?;
    row(&r)
}

/// The order with this client id, locked for the caller's transaction.
///
/// Locked first, read after: a statement that waits for a row lock keeps the
/// snapshot it started with, so reading the order's booked trades in the locking
/// statement could miss a trade the lock's previous holder just booked (and count
/// its fill twice). The second statement sees everything committed before the lock.
pub async fn lock_by_client_id(
    tx: &mut PgConnection,
    client_order_id: &str,
) -> Result<Option<OrderRow>, LedgerError> {
    let locked: Option<String> = sqlx::query_scalar(
        "SELECT id::text FROM orders WHERE client_order_id = $1 FOR NO KEY UPDATE",
    )
    .bind(client_order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = locked else {
        return Ok(None);
    };
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o WHERE o.id = $1::uuid"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    row(&r).map(Some)
}

pub async fn by_client_id(
    pool: &PgPool,
    client_order_id: &str,
) -> Result<Option<OrderRow>, LedgerError> {
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o WHERE o.client_order_id = $1"
    ))
    .bind(client_order_id)
    .fetch_optional(pool)
    .await?;
    r.as_ref().map(row).transpose()
}

/// Orders not in a final state, oldest first.
pub async fn open_orders(pool: &PgPool) -> Result<Vec<OrderRow>, LedgerError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o
          WHERE o.state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')
          ORDER BY o.created_at"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

/// Every market order not in a final state in `symbol`, any account's.
pub async fn open_markets_on(pool: &PgPool, symbol: &str) -> Result<Vec<OrderRow>, LedgerError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o
          WHERE o.state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')
            AND o.symbol = $1 AND o.type = 'MARKET'
          ORDER BY o.created_at"
    ))
    .bind(symbol)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

/// One sub-account's orders not in a final state, in `symbol` or all.
pub async fn open_orders_of(
    pool: &PgPool,
    account: &str,
    symbol: Option<&str>,
) -> Result<Vec<OrderRow>, LedgerError> {
    if !is_uuid(account) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o
          WHERE o.sub_account_id = $1::uuid AND ($2::text IS NULL OR o.symbol = $2)
            AND o.state IN ('SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')
          ORDER BY o.created_at"
    ))
    .bind(account)
    .bind(symbol)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

/// The newest market close of `position` that is in flight or filled: a second
/// close of the position is answered from it rather than sent again.
pub async fn close_of_position(
    pool: &PgPool,
    position: &str,
) -> Result<Option<OrderRow>, LedgerError> {
    if !is_uuid(position) {
        return Ok(None);
    }
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o
          WHERE o.position_id = $1::uuid AND o.type = 'MARKET'
            AND o.state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED', 'FILLED')
          ORDER BY o.created_at DESC LIMIT 1"
    ))
    .bind(position)
    .fetch_optional(pool)
    .await?;
    r.as_ref().map(row).transpose()
}

/// The orders closing `position` that are still open on the venue (resting limit
/// closes): they go when the position does.
pub async fn open_orders_of_position(
    pool: &PgPool,
    position: &str,
) -> Result<Vec<OrderRow>, LedgerError> {
    if !is_uuid(position) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o
          WHERE o.position_id = $1::uuid AND o.state IN ('SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')
          ORDER BY o.created_at"
    ))
    .bind(position)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

/// The order `id` if it belongs to `account`.
pub async fn of_account(
    pool: &PgPool,
    account: &str,
    id: &str,
) -> Result<Option<OrderRow>, LedgerError> {
    if !is_uuid(account) || !is_uuid(id) {
        return Ok(None);
    }
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o WHERE o.id = $1::uuid AND o.sub_account_id = $2::uuid"
    ))
    .bind(id)
    .bind(account)
    .fetch_optional(pool)
    .await?;
    r.as_ref().map(row).transpose()
}

/// Writes what the machine made of `event` on order `id`, and the event row.
pub async fn record(
    tx: &mut PgConnection,
    id: &str,
    order: &Order,
    event: &str,
    source: Source,
    detail: Value,
) -> Result<(), LedgerError> {
    sqlx::query(
        "WITH u AS (
            UPDATE orders SET state = $2, filled = $3, venue_order_id = $4, reject_code = $5,
                              reject_message = $6, updated_at = now()
             WHERE id = $1::uuid RETURNING id)
         INSERT INTO order_events (order_id, event, source, state, detail)
         SELECT id, $7, $8, $2, $9 FROM u",
    )
    .bind(id)
    .bind(order.state.as_str())
    .bind(order.filled)
    .bind(&order.venue_id)
    .bind(&order.reject_code)
    .bind(&order.reject_message)
    .bind(event)
    .bind(source.as_str())
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The orders that became final (cancelled, expired, rejected) in the last `hours`
/// and that the venue knows by id: the venue may have filled more of them than the
/// book holds (a fill whose event was lost around the cancel).
pub async fn final_orders_since(pool: &PgPool, hours: i64) -> Result<Vec<OrderRow>, LedgerError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders o
          WHERE o.state IN ('CANCELED', 'EXPIRED', 'REJECTED') AND o.venue_order_id IS NOT NULL
            AND o.updated_at > now() - make_interval(hours => $1::int)
          ORDER BY o.symbol, o.created_at"
    ))
    .bind(hours as i32)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

/// Market orders on `symbol` not final yet (but the close `except` of this
/// position): the venue took them, the book has not booked them.
pub async fn unbooked_markets(
    pool: &PgPool,
    symbol: &str,
    except: &str,
) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM orders
          WHERE symbol = $1 AND type = 'MARKET'
            AND state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')
            AND position_id IS DISTINCT FROM $2::uuid",
    )
    .bind(symbol)
    .bind(except)
    .fetch_one(pool)
    .await?)
}

/// The symbols where orders of ours are still working.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Working {
    /// A market order not yet final: its fill is on its way.
    pub markets: BTreeSet<String>,
    /// A limit order resting: it may fill at any moment.
    pub resting: BTreeSet<String>,
}

pub async fn working_symbols(pool: &PgPool) -> Result<Working, LedgerError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT symbol, type FROM orders
          WHERE state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')",
    )
    .fetch_all(pool)
    .await?;
    let mut w = Working::default();
    for (symbol, kind) in rows {
        match kind.as_str() {
            "MARKET" => w.markets.insert(symbol),
            _ => w.resting.insert(symbol),
        };
    }
    Ok(w)
}

/// One reconciliation action, for operators.
pub async fn log_reconciliation(
    pool: &PgPool,
    kind: &str,
    symbol: Option<&str>,
    detail: Value,
) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO reconciliation_log (kind, symbol, detail) VALUES ($1, $2, $3)")
        .bind(kind)
        .bind(symbol)
        .bind(detail)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> NewOrder {
        NewOrder {
            sub_account_id: "5f0c3c8e-1d2b-4c1a-9a51-0d6f3a7b2c11".into(),
            symbol: "BTCUSDT_261225".into(),
            side: OrderSide::Buy,
            kind: OrderKind::Limit,
            quantity: "0.002".parse().unwrap(),
            price: Some("60000".parse().unwrap()),
            leverage: Decimal::ONE,
            reduce_only: false,
            origin: "API".into(),
            request_id: None,
            position_id: None,
            close_reason: None,
        }
    }

    #[test]
    fn ids_are_a_version_4_uuid_and_its_client_id() {
        let ids = OrderIds::from_random([0xff; 16]);
        assert_eq!(ids.id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(ids.client_order_id, "gsffffffffffff4fffbfffffffffffffff");
        assert!(ids
            .client_order_id
            .starts_with(trading::order::CLIENT_ID_PREFIX));
        assert_eq!(ids.client_order_id.len(), 34, "the venue takes at most 36");
        let zero = OrderIds::from_random([0; 16]);
        assert_eq!(zero.id, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn what_the_table_refuses_is_refused_before_the_send() {
        assert_eq!(order().check(), Ok(()));
        type Spoil = fn(&mut NewOrder);
        let cases: [(&str, Spoil); 7] = [
            ("lower case", |o| o.symbol = "btcusdt".into()),
            ("too short", |o| o.symbol = "B".into()),
            ("origin", |o| o.origin = "GATEWAY".into()),
            ("quantity", |o| o.quantity = Decimal::ZERO),
            ("leverage", |o| o.leverage = "0.5".parse().unwrap()),
            ("price", |o| o.price = Some(Decimal::ZERO)),
            ("limit without price", |o| o.price = None),
        ];
        for (what, spoil) in cases {
            let mut o = order();
            spoil(&mut o);
            assert!(o.check().is_err(), "{what}");
        }
        let mut market = order();
        market.kind = OrderKind::Market;
        market.price = None;
        assert_eq!(market.check(), Ok(()));
    }
}
