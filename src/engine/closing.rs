//! Cancels and closes, each scoped to the requesting sub-account: its own orders
//! (never everything on the symbol of the shared exchange account, js-gateway §0 #32)
//! and its own positions, each closed once (§0 #31), on the venue or — when the
//! exchange does not hold what the book says — virtually (`trading::close::plan`).

use std::sync::atomic::Ordering::Relaxed;

use database::ledger::{self, FillBooking, LedgerError};
use database::orders::{self, OrderKind, OrderRow, Source};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use streaming::binance::rest::RestError;
use trading::close::{plan, ClosePlan};
use trading::order::{OrderEvent, OrderState};
use trading::position::{Fill, OrderSide, Side};

use super::execution::{Executor, PlaceError, PlaceOrder};

pub const DESYNC_CLOSES: &str = "greekstream_desync_closes_total";

#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("Order not found")]
    OrderNotFound,
    #[error("Order is {0}")]
    OrderNotOpen(&'static str),
    #[error("Position not found")]
    PositionNotFound,
    #[error("{0}")]
    Place(#[from] PlaceError),
    #[error("{0}")]
    Storage(#[from] LedgerError),
    #[error("venue: {0}")]
    Venue(#[from] RestError),
    /// A limit close the exchange's position does not back (no position, or the
    /// other side): not sent.
    #[error("Position desynced with exchange — no matching exchange position, order not sent")]
    Desync {
        exchange_side: Option<&'static str>,
        virtual_side: &'static str,
    },
}

impl CloseError {
    pub fn code(&self) -> &'static str {
        match self {
            CloseError::OrderNotFound => "ORDER_NOT_FOUND",
            CloseError::OrderNotOpen(_) => "ORDER_NOT_OPEN",
            CloseError::PositionNotFound => "POSITION_NOT_FOUND",
            CloseError::Place(e) => e.code(),
            CloseError::Storage(e) => e.code(),
            CloseError::Venue(_) => "EXCHANGE_ERROR",
            CloseError::Desync { .. } => "POSITION_DESYNC",
        }
    }
}

/// How a position was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A market order was sent: its row as the venue left it.
    Order(Box<OrderRow>),
    /// Closed in the book only, at the mark: the exchange did not hold it.
    Virtual { price: Decimal },
}

impl Executor {
    /// The venue's net position in `symbol` (both legs in hedge mode).
    pub(super) async fn exchange_net(&self, symbol: &str) -> Result<Decimal, RestError> {
        let (rows, _) = self.inner.rest.position_risk().await?;
        Ok(rows
            .iter()
            .filter(|r| r.symbol == symbol)
            .map(|r| r.amount)
            .sum())
    }

    /// Cancels one of `account`'s open orders.
    pub async fn cancel(&self, account: &str, order_id: &str) -> Result<OrderRow, CloseError> {
        let o = orders::of_account(&self.inner.pool, account, order_id)
            .await?
            .ok_or(CloseError::OrderNotFound)?;
        if o.order.state.is_final() {
            return Err(CloseError::OrderNotOpen(o.order.state.as_str()));
        }
        self.cancel_row(o).await
    }

    async fn cancel_row(&self, o: OrderRow) -> Result<OrderRow, CloseError> {
        let i = &self.inner;
        let q = [
            ("symbol", o.symbol.clone()),
            ("origClientOrderId", o.client_order_id.clone()),
        ];
        match i.rest.signed(Method::DELETE, "/fapi/v1/order", &q).await {
            Ok(_) => {
                let after = self
                    .apply_event(&o.client_order_id, OrderEvent::Canceled, Source::Rest)
                    .await?;
                Ok(after.unwrap_or(o))
            }
            // -2011 "Unknown order sent.": filled or gone meanwhile. Whatever it is,
            // the venue's record says: read it rather than guess.
            Err(e) => {
                if let Ok(body) = i.rest.signed(Method::GET, "/fapi/v1/order", &q).await {
                    if let Ok(v) = serde_json::from_str::<Value>(&body) {
                        self.adopt_reply(&o.client_order_id, &o.symbol, &v).await?;
                    }
                }
                let now = orders::by_client_id(&i.pool, &o.client_order_id)
                    .await?
                    .unwrap_or(o);
                if now.order.state == OrderState::Canceled || now.order.state.is_final() {
                    Ok(now)
                } else {
                    Err(CloseError::Venue(e))
                }
            }
        }
    }

    /// Cancels every open order of `account` (in `symbol`, or all); the others on
    /// the shared exchange account are not touched.
    pub async fn cancel_all(
        &self,
        account: &str,
        symbol: Option<&str>,
    ) -> Result<Vec<OrderRow>, CloseError> {
        let mut done = Vec::new();
        for o in orders::open_orders_of(&self.inner.pool, account, symbol).await? {
            done.push(self.cancel_row(o).await?);
        }
        Ok(done)
    }

    /// Closes one of `account`'s positions: by a market order when the exchange holds
    /// it, virtually at the mark when it does not.
    pub async fn close(&self, account: &str, position_id: &str) -> Result<Closed, CloseError> {
        let i = &self.inner;
        let p = ledger::open_position_of(&i.pool, account, position_id)
            .await?
            .ok_or(CloseError::PositionNotFound)?;
        let signed = p.position.signed();
        let exchange = self.exchange_net(&p.symbol).await?;
        let book = ledger::book_net(&i.pool, &p.symbol).await?;
        let side = match p.position.side {
            Side::Long => OrderSide::Sell,
            Side::Short => OrderSide::Buy,
        };
        match plan(exchange, book, signed) {
            ClosePlan::Venue { reduce_only } => {
                let row = self
                    .place_with(
                        PlaceOrder {
                            sub_account_id: account.to_owned(),
                            symbol: p.symbol.clone(),
                            side,
                            kind: OrderKind::Market,
                            quantity: p.position.quantity,
                            price: None,
                            leverage: p.position.leverage,
                            reduce_only: true,
                            origin: "MANUAL".into(),
                            request_id: None,
                        },
                        Some(reduce_only),
                    )
                    .await?;
                Ok(Closed::Order(Box::new(row)))
            }
            ClosePlan::VirtualOnly => {
                let price = i
                    .prices
                    .mark(&p.symbol)
                    .await
                    .map_err(PlaceError::Price)?
                    .price;
                metrics::counter!(DESYNC_CLOSES).increment(1);
                tracing::warn!(account, position = position_id, symbol = %p.symbol, %exchange, %book,
                    "the exchange does not hold this position: closed virtually");
                self.close_virtually(&p, price, "DESYNC_CLOSE").await?;
                Ok(Closed::Virtual { price })
            }
        }
    }

    /// Places a reduce-only limit order at `price` for all of one of `account`'s
    /// positions — only when the exchange holds a position on the same side (seed
    /// 003 §1a); otherwise nothing is sent.
    pub async fn limit_close(
        &self,
        account: &str,
        position_id: &str,
        price: Decimal,
    ) -> Result<OrderRow, CloseError> {
        let i = &self.inner;
        let p = ledger::open_position_of(&i.pool, account, position_id)
            .await?
            .ok_or(CloseError::PositionNotFound)?;
        let exchange = self.exchange_net(&p.symbol).await?;
        let virtual_side = p.position.side.as_str();
        let exchange_side = match exchange {
            e if e.is_zero() => None,
            e if e.is_sign_positive() => Some("LONG"),
            _ => Some("SHORT"),
        };
        if exchange_side != Some(virtual_side) {
            tracing::warn!(account, position = position_id, symbol = %p.symbol, %exchange,
                "limit close not sent: the exchange does not hold this position's side");
            return Err(CloseError::Desync {
                exchange_side,
                virtual_side,
            });
        }
        let side = match p.position.side {
            Side::Long => OrderSide::Sell,
            Side::Short => OrderSide::Buy,
        };
        let covers = exchange.abs() >= p.position.quantity;
        Ok(self
            .place_with(
                PlaceOrder {
                    sub_account_id: account.to_owned(),
                    symbol: p.symbol.clone(),
                    side,
                    kind: OrderKind::Limit,
                    quantity: p.position.quantity,
                    price: Some(price),
                    leverage: p.position.leverage,
                    reduce_only: true,
                    origin: "MANUAL".into(),
                    request_id: None,
                },
                Some(covers),
            )
            .await?)
    }

    /// Closes `p` in the book only, at `price`, as `reason` (`DESYNC_CLOSE`,
    /// `RECONCILE`): no order reaches the venue.
    pub(super) async fn close_virtually(
        &self,
        p: &ledger::PositionRow,
        price: Decimal,
        reason: &str,
    ) -> Result<(), LedgerError> {
        let i = &self.inner;
        let side = match p.position.side {
            Side::Long => OrderSide::Sell,
            Side::Short => OrderSide::Buy,
        };
        let booked = ledger::book_fill(
            &i.pool,
            &FillBooking {
                sub_account_id: p.sub_account_id.clone(),
                symbol: p.symbol.clone(),
                fill: Fill {
                    side,
                    quantity: p.position.quantity,
                    price,
                    leverage: p.position.leverage,
                },
                fee: Decimal::ZERO,
                exchange_order_id: None,
                client_order_id: None,
                exchange_trade_id: None,
                order_type: "VIRTUAL".into(),
                origin: "MANUAL".into(),
                close_action: reason.to_owned(),
                babysitter_excluded: p.babysitter_excluded,
                closes: Some(p.id.clone()),
            },
        )
        .await?;
        if let ledger::Booked::Applied(a) = booked {
            i.outbox.event(
                "position_closed",
                json!({"subAccountId": p.sub_account_id, "positionId": p.id, "symbol": p.symbol,
                       "side": p.position.side.as_str(), "realizedPnl": super::risk_loop::num(a.outcome.realized),
                       "newBalance": super::risk_loop::num(a.balance), "reason": reason}),
                chrono::Utc::now().timestamp_millis(),
            );
            i.stats.desync_closes.fetch_add(1, Relaxed);
        }
        self.book_changed(&p.sub_account_id).await;
        Ok(())
    }

    /// Closes every open position of `account`.
    pub async fn close_all(&self, account: &str) -> Result<Vec<Closed>, CloseError> {
        let mut done = Vec::new();
        for p in ledger::open_positions(&self.inner.pool, Some(account)).await? {
            done.push(self.close(account, &p.id).await?);
        }
        Ok(done)
    }
}
