//! Cancels and closes, each scoped to the requesting sub-account: its own orders
//! (never everything on the symbol of the shared exchange account, js-gateway §0 #32)
//! and its own positions, each closed once (§0 #31), on the venue or — when the
//! exchange does not hold what the book says — virtually (`trading::close::plan`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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

/// How long a close waits for its fill before answering with the order as it stands.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Who closes a position, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseAs {
    /// `None`: all of it.
    pub quantity: Option<Decimal>,
    /// The order's origin (`MANUAL`, `LIQUIDATION`, `ADL_TIER2`…): its fills are
    /// booked by it (`trading::liquidation::close_action`).
    pub origin: &'static str,
    /// What a close is booked as when the exchange does not hold the position.
    pub virtual_reason: &'static str,
    /// The close's own reason, whichever way it closes (a babysitter's
    /// `BABYSITTER_TP`): its fills' action and its events' reason.
    pub reason: Option<String>,
    /// The price of a close in the book when no mark is known at all.
    pub fallback_price: Option<Decimal>,
}

impl CloseAs {
    pub const MANUAL: CloseAs = CloseAs {
        quantity: None,
        origin: "MANUAL",
        virtual_reason: "DESYNC_CLOSE",
        reason: None,
        fallback_price: None,
    };
}

/// A position's close turn ([`Executor::position_guard`]). The last holder takes the
/// position's entry away as it lets go — not as it takes it: a close arriving while
/// the turn is held must find the same lock and wait.
pub(super) struct PositionGuard {
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
    inner: Arc<super::execution::Inner>,
    position_id: String,
}

impl Drop for PositionGuard {
    fn drop(&mut self) {
        let mut all = self.inner.closing.lock().expect("closing lock");
        // References: the map's and this guard's; any more are closes waiting.
        if all
            .get(&self.position_id)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            all.remove(&self.position_id);
        }
        // Let go while the map is locked: a close taking the entry meanwhile either
        // found it here (and waits for this release) or finds it gone.
        self.held.take();
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
            Ok(body) => {
                // The cancel's reply is the order as the venue left it: what it filled
                // before the cancel (its trades read when that is ahead of the book) is
                // booked before the order becomes CANCELED, so a fill whose stream
                // event was lost is not lost with it.
                match serde_json::from_str::<Value>(&body) {
                    Ok(v) if v["orderId"].is_u64() => {
                        self.adopt(&o.client_order_id, &o.symbol, &v, Source::Rest)
                            .await?;
                        self.apply_event(&o.client_order_id, OrderEvent::Canceled, Source::Rest)
                            .await?;
                    }
                    _ => {
                        self.apply_event(&o.client_order_id, OrderEvent::Canceled, Source::Rest)
                            .await?;
                    }
                }
                let now = orders::by_client_id(&i.pool, &o.client_order_id).await?;
                Ok(now.unwrap_or(o))
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

    /// The venue's net position in `symbol` and the house's part of it.
    pub(super) async fn venue_and_house(
        &self,
        symbol: &str,
    ) -> Result<(Decimal, Decimal), CloseError> {
        // Independent reads, made at once: a close waits for the slower, not the sum.
        let (venue, house) = tokio::join!(self.exchange_net(symbol), self.house_of(symbol));
        Ok((venue?, house?))
    }

    /// The house's position in `symbol`: the configured one and what it took on since
    /// (reduce-only excess, `house_log`).
    pub(super) async fn house_of(&self, symbol: &str) -> Result<Decimal, LedgerError> {
        let configured = self
            .inner
            .config
            .house
            .get(symbol)
            .copied()
            .unwrap_or_default();
        Ok(configured + ledger::house_taken_in(&self.inner.pool, symbol).await?)
    }

    /// One close of a position at a time in this engine (the account's lane already
    /// serializes its commands; this also covers the engine's own closes and the
    /// babysitter's). Held until the guard drops.
    pub(super) async fn position_guard(&self, position_id: &str) -> PositionGuard {
        let lock = self
            .inner
            .closing
            .lock()
            .expect("closing lock")
            .entry(position_id.to_owned())
            .or_default()
            .clone();
        PositionGuard {
            held: Some(lock.lock_owned().await),
            inner: self.inner.clone(),
            position_id: position_id.to_owned(),
        }
    }

    /// Closes one of `account`'s positions ([`Executor::close_sent`]) and waits up to
    /// [`CLOSE_WAIT`] for the close's fill.
    pub async fn close(&self, account: &str, position_id: &str) -> Result<Closed, CloseError> {
        let sent = self.close_sent(account, position_id).await?;
        self.close_settled(sent).await
    }

    /// A close as it stands after up to [`CLOSE_WAIT`] for its order's fill.
    pub async fn close_settled(&self, c: Closed) -> Result<Closed, CloseError> {
        match c {
            Closed::Order(o) if !o.order.state.is_final() => Ok(Closed::Order(Box::new(
                self.settle(&o.client_order_id, CLOSE_WAIT)
                    .await?
                    .unwrap_or(*o),
            ))),
            c => Ok(c),
        }
    }

    /// Closes one of `account`'s positions: by a market order when the exchange holds
    /// it, virtually at the mark when it does not; returns once the order's reply is
    /// stored (its fill may be on its way). A position has at most one market close:
    /// a second close while the first is in flight — or once it has filled — is
    /// answered from the first, never sent again.
    pub async fn close_sent(&self, account: &str, position_id: &str) -> Result<Closed, CloseError> {
        self.close_sent_as(account, position_id, &CloseAs::MANUAL)
            .await
    }

    /// [`Executor::close_sent`] for a part of the position or with another origin (a
    /// liquidation's forced closes): one close of a position at a time, whoever asks.
    pub async fn close_sent_as(
        &self,
        account: &str,
        position_id: &str,
        how: &CloseAs,
    ) -> Result<Closed, CloseError> {
        let i = &self.inner;
        let _one = self.position_guard(position_id).await;
        if let Some(p) = ledger::open_position_of(&i.pool, account, position_id).await? {
            self.settle_moving(account, &p.symbol, position_id).await?;
        }
        let (open, first) = tokio::join!(
            ledger::open_position_of(&i.pool, account, position_id),
            orders::close_of_position(&i.pool, position_id)
        );
        let open = open?;
        if let Some(first) = first? {
            let settled = first.order.state.is_final();
            if first.sub_account_id == account && (!settled || open.is_none()) {
                return Ok(Closed::Order(Box::new(first)));
            }
        }
        let p = open.ok_or(CloseError::PositionNotFound)?;
        // The close is checked against the book as just read, not one a fill behind
        // (the position it closes is the one read above).
        self.book_changed(account).await;
        let signed = p.position.signed();
        // No order of any account moves the venue's net from the reads to the send.
        let alone = self.gate(&p.symbol).write_owned().await;
        let (venue, house, book) = self.still_snapshot(account, &p.symbol, position_id).await?;
        match plan(venue, house, book, signed) {
            ClosePlan::Venue { reduce_only } => {
                let mut order = self.closing_order(&p, OrderKind::Market, None);
                order.origin = how.origin.into();
                order.close_reason = how.reason.clone();
                if let Some(q) = how.quantity {
                    order.quantity = q.min(p.position.quantity);
                }
                let row = self.place_with(order, Some(reduce_only)).await?;
                drop(alone);
                Ok(Closed::Order(Box::new(row)))
            }
            ClosePlan::VirtualOnly => {
                // A fresh mark, else the last the stream gave, else the price the
                // asker gave, else the entry: a stale price never keeps a position
                // from closing.
                let price = match i.prices.mark(&p.symbol).await {
                    Ok(q) => q.price,
                    Err(_) => i
                        .stream
                        .as_ref()
                        .and_then(|s| s.get(&p.symbol))
                        .and_then(|e| e.mark)
                        .or(how.fallback_price)
                        .unwrap_or(p.position.entry_price),
                };
                metrics::counter!(DESYNC_CLOSES).increment(1);
                tracing::warn!(account, position = position_id, symbol = %p.symbol, %venue, %house, %book,
                    "the exchange does not hold this position: closed virtually");
                // Whole, even for a part asked: the exchange holds none of it.
                let reason = how.reason.as_deref().unwrap_or(how.virtual_reason);
                self.close_virtually(&p, price, reason).await?;
                Ok(Closed::Virtual { price })
            }
        }
    }

    /// Before a close is planned, the market orders on the symbol that are not final yet
    /// (a fill on its way, an event lost — any account's: the venue nets them all) are
    /// asked about and what the venue did is booked: a close judged on a book a fill
    /// behind could close virtually what the venue still holds, or send what a fill
    /// already closed.
    async fn settle_moving(
        &self,
        _account: &str,
        symbol: &str,
        position_id: &str,
    ) -> Result<(), CloseError> {
        let i = &self.inner;
        // Orders of any account on the symbol move the venue's net before the book:
        // those on their way are waited for (briefly), those the venue took are asked
        // about, so the plan compares a venue and a book that agree on them.
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.moving(symbol) && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.rows_written().await;
        for o in orders::open_markets_on(&i.pool, symbol).await? {
            if o.position_id.as_deref() == Some(position_id) {
                continue;
            }
            let q = [
                ("symbol", o.symbol.clone()),
                ("origClientOrderId", o.client_order_id.clone()),
            ];
            if let Ok(body) = i.rest.signed(Method::GET, "/fapi/v1/order", &q).await {
                if let Ok(v) = serde_json::from_str::<Value>(&body) {
                    self.adopt(&o.client_order_id, &o.symbol, &v, Source::Reconcile)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The venue's net, the house and the book of `symbol` read while nothing moves
    /// them apart: no order of ours on its way, none the venue took that the book has
    /// not booked, none sent meanwhile, and no fill booked during the reads (they are
    /// made under the symbol's lock). Retried a few times while orders keep coming;
    /// then the last reads are used (and logged).
    async fn still_snapshot(
        &self,
        account: &str,
        symbol: &str,
        position_id: &str,
    ) -> Result<(Decimal, Decimal, Decimal), CloseError> {
        let i = &self.inner;
        let mut last = None;
        for _ in 0..5 {
            self.settle_moving(account, symbol, position_id).await?;
            let sent = self.sent_on(symbol);
            let reads = {
                let _judging = self.symbol_guard(symbol).await;
                // All under the symbol's lock, made at once.
                let (venue_house, book, unbooked) = tokio::join!(
                    self.venue_and_house(symbol),
                    ledger::book_net(&i.pool, symbol),
                    orders::unbooked_markets(&i.pool, symbol, position_id)
                );
                let (venue, house) = venue_house?;
                ((venue, house, book?), unbooked?)
            };
            let (snapshot, unbooked) = reads;
            if unbooked == 0 && !self.moving(symbol) && self.sent_on(symbol) == sent {
                return Ok(snapshot);
            }
            last = Some(snapshot);
        }
        tracing::warn!(
            symbol,
            "orders kept moving the symbol: the close is planned on the last reads"
        );
        Ok(last.expect("read at least once"))
    }

    /// The reduce-only order that closes all of `p`.
    fn closing_order(
        &self,
        p: &ledger::PositionRow,
        kind: OrderKind,
        price: Option<Decimal>,
    ) -> PlaceOrder {
        PlaceOrder {
            sub_account_id: p.sub_account_id.clone(),
            symbol: p.symbol.clone(),
            side: match p.position.side {
                Side::Long => OrderSide::Sell,
                Side::Short => OrderSide::Buy,
            },
            kind,
            quantity: p.position.quantity,
            price,
            leverage: p.position.leverage,
            reduce_only: true,
            origin: "MANUAL".into(),
            request_id: None,
            position_id: Some(p.id.clone()),
            close_reason: None,
        }
    }

    /// Places a reduce-only limit order at `price` for all of one of `account`'s
    /// positions — only when the exchange, less the house, holds it as the book says
    /// (the close plan would send it to the venue); otherwise nothing is sent.
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
        self.book_changed(account).await;
        let _alone = self.gate(&p.symbol).write_owned().await;
        let (venue, house) = self.venue_and_house(&p.symbol).await?;
        let book = ledger::book_net(&i.pool, &p.symbol).await?;
        let reduce_only = match plan(venue, house, book, p.position.signed()) {
            ClosePlan::Venue { reduce_only } => reduce_only,
            ClosePlan::VirtualOnly => {
                let ours = venue - house;
                let exchange_side = match ours {
                    e if e.is_zero() => None,
                    e if e.is_sign_positive() => Some("LONG"),
                    _ => Some("SHORT"),
                };
                tracing::warn!(account, position = position_id, symbol = %p.symbol, %venue, %house, %book,
                    "limit close not sent: the exchange does not hold this position");
                return Err(CloseError::Desync {
                    exchange_side,
                    virtual_side: p.position.side.as_str(),
                });
            }
        };
        Ok(self
            .place_with(
                self.closing_order(&p, OrderKind::Limit, Some(price)),
                Some(reduce_only),
            )
            .await?)
    }

    /// Cancels the orders still resting to close `position_id` (limit closes): the
    /// position is gone, by whatever path, and they would open the other side.
    pub(super) fn cancel_orders_of_closed(&self, position_id: &str) {
        let me = self.clone();
        let position_id = position_id.to_owned();
        tokio::spawn(async move {
            let open = match orders::open_orders_of_position(&me.inner.pool, &position_id).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(position = %position_id, error = %e, "the closed position's orders not read; reconciliation cancels them");
                    return;
                }
            };
            for o in open {
                if let Err(e) = me.cancel_row(o).await {
                    tracing::warn!(position = %position_id, error = %e, "a closed position's order not cancelled");
                }
            }
        });
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
                reduce_only: false,
            },
        )
        .await?;
        if let ledger::Booked::Applied(a) = booked {
            self.cancel_orders_of_closed(&p.id);
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

    /// Closes every open position of `account`: each is tried (a kill switch does not
    /// stop at the first that fails); one that closed meanwhile by another path is
    /// skipped. The first failure is returned once all were tried.
    pub async fn close_all(&self, account: &str) -> Result<Vec<Closed>, CloseError> {
        let mut done = Vec::new();
        let mut failed = None;
        for p in ledger::open_positions(&self.inner.pool, Some(account)).await? {
            match self.close(account, &p.id).await {
                Ok(c) => done.push(c),
                Err(CloseError::PositionNotFound) => {}
                Err(e) => {
                    tracing::warn!(account, position = %p.id, error = %e, "close-all: one position not closed");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}
