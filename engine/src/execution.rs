//! Placing orders for sub-accounts on the one shared Binance account, and booking what
//! the venue does with them.
//!
//! Placing: the account and its rules from the ledger, a fresh price from the chain,
//! the pre-trade checks (`trading::risk`), then the order journaled (`super::journal`,
//! durable) with its deterministic client order id, *then* the venue call, its row
//! (SUBMITTED) written beside it; whatever reads the order waits for that row. The reply is classified
//! by `trading::order::classify`: an ambiguous one (timeout after the write, 5xx,
//! -1007, 503 "Unknown error") leaves the order UNKNOWN and starts a resolver that
//! queries the venue by client order id — never a resend. "Order does not exist" is
//! believed only once the request can no longer be accepted (its timestamp plus the
//! receive window has passed); then the order is REJECTED.
//!
//! Booking: the user stream's ORDER_TRADE_UPDATEs (and the resolver's queries) become
//! order events; in one transaction the order is locked, the event applied by the
//! state machine, a new fill booked on the sub-account's position and balance
//! (`database::ledger`), and the transition recorded. Duplicate trades are no-ops.
//! After the commit the gateway hears of it and the risk loop gets the new book.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use database::ledger::LedgerError;
use database::orders::{self, NewOrder, OrderKind, OrderRow, Source};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use streaming::binance::prices::Prices;
use streaming::binance::rest::{Rest, RestError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::order::{classify, OrderEvent, Wire};
use trading::risk::{check_view, VenueFilters};

use super::book_cache::{CachedBook, Refreshing};
pub use super::config::{ExecutionConfig, DEFAULT_JOURNAL_DIR};
use super::prices::PriceChain;
pub(crate) use super::replies::{detail_of, event_of, wire_of};
pub use super::replies::{now_ms, position_side};
pub(crate) use super::request::request_of;
pub use super::request::{PlaceError, PlaceOrder};
use super::risk_loop::RiskInput;
pub use super::stats::{ExecutionStats, Latencies, LATENCY_SAMPLES};
use bus::outbox::Outbox;

pub const ORDERS: &str = "greekstream_orders_total";
pub const AMBIGUOUS: &str = "greekstream_orders_ambiguous_total";
pub const FILLS: &str = "greekstream_fills_booked_total";
/// Reducing market orders checked at a last known price (no fresh one).
pub const STALE_PRICE_CLOSES: &str = "greekstream_stale_price_closes_total";
/// Orders taken for REJECTED that the venue then showed (accepted, filled, cancelled).
pub const RESURRECTED: &str = "greekstream_orders_resurrected_total";
/// Reduce-only fills (or parts of them) past what the position held: not booked.
pub const REDUCE_ONLY_EXCESS: &str = "greekstream_reduce_only_excess_total";
pub const FEED_ERRORS: &str = "greekstream_order_feed_errors_total";
pub const TIME_DRIFT: &str = "greekstream_time_drift_seconds";
/// Command accepted → request on the wire (the engine's own cost).
pub const OVERHEAD: &str = "greekstream_order_overhead_seconds";
/// Request on the wire → the venue's reply.
pub const ACK: &str = "greekstream_order_ack_seconds";
/// A fill's user-stream frame → booked and its events queued.
pub const FILL_BOOKING: &str = "greekstream_fill_booking_seconds";

/// What [`Executor::ticket`] read for an order.
#[derive(Debug, Clone)]
pub(super) struct Ticket {
    pub(super) symbol: String,
    pub(super) filters: VenueFilters,
    pub(super) rules: trading::risk::RiskRules,
    pub(super) mark: Decimal,
    pub(super) view: trading::risk::AccountView,
    /// The account's signed position in the symbol, if any.
    pub(super) here: Option<Decimal>,
}

#[derive(Clone)]
pub struct Executor {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) config: ExecutionConfig,
    pub(super) pool: PgPool,
    pub(super) rest: Rest,
    pub(super) prices: PriceChain,
    pub(super) stream: Option<Arc<Prices>>,
    pub(super) filters: HashMap<String, VenueFilters>,
    pub(super) outbox: Outbox,
    pub(super) risk: Option<mpsc::Sender<RiskInput>>,
    pub(super) stats: Arc<ExecutionStats>,
    pub(super) cancel: CancellationToken,
    /// Symbols whose exchange position disagrees with the book: orders that open are
    /// refused on them until reconciliation finds them in line again.
    pub(super) blocked: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When each symbol last had a fill booked.
    pub(super) last_fill: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    /// One reconciliation at a time.
    pub(super) reconciling: tokio::sync::Mutex<()>,
    /// Each account's book and rules, as last read.
    pub(super) books: std::sync::Mutex<HashMap<String, CachedBook>>,
    /// Numbers the book reads: a read installs its book only over an older one.
    pub(super) book_reads: AtomicU64,
    /// Accounts whose book is being read again after fills ([`Executor::book_changed_soon`]).
    pub(super) refreshing: std::sync::Mutex<HashMap<String, Refreshing>>,
    /// Each account's orders that can open, from when they are journaled until they
    /// are final and the book has been read again after: the next check counts them
    /// without reading the book again (their rows may not even be written yet).
    /// Keyed by account, then client order id.
    #[allow(clippy::type_complexity)]
    pub(super) unsettled:
        std::sync::Mutex<HashMap<String, HashMap<String, trading::risk::PendingOrder>>>,
    /// Wakes whoever waits for a given order to change ([`Executor::settle`]): only
    /// that order's waiters, so a busy engine does not wake every waiter on every fill.
    pub(super) watched: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// The venue's new-order limits, kept here so an order it would refuse is not
    /// written or sent.
    pub(super) budget: std::sync::Mutex<trading::budget::OrderBudget>,
    /// Orders are durable here before they are sent; their rows follow.
    pub(super) journal: super::journal::Journal,
    /// The database the journal's orders belong to.
    pub(super) scope: String,
    /// This engine's id in `orders.sent_by` (random per process): its book reads
    /// leave out its own orders, which it counts from memory.
    pub(super) instance: String,
    /// Orders sent whose rows are still being written: `true` once written. Whoever
    /// reads such an order waits for its row.
    pub(super) rows: std::sync::Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// One close at a time per position ([`Executor::close`]).
    pub(super) closing: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per symbol: a fill is booked, or reconciliation judges the symbol, under it —
    /// never both at once.
    pub(super) symbols: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per symbol: orders are sent under it shared, a close is planned and sent under
    /// it alone — so no order of any account moves the venue's net between a close's
    /// reads and its send ([`Executor::gate`]).
    pub(super) gates: std::sync::Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Per symbol: orders of ours sent whose reply is not processed yet, and how many
    /// were ever sent.
    pub(super) in_flight: std::sync::Mutex<HashMap<String, usize>>,
    pub(super) sent: std::sync::Mutex<HashMap<String, u64>>,
}

/// Counts an order in flight on its symbol until dropped.
pub(super) struct InFlight {
    exec: Executor,
    symbol: String,
    n: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.exec.inner.in_flight.lock().expect("in-flight lock");
        if let Some(c) = m.get_mut(&self.symbol) {
            *c = c.saturating_sub(self.n);
            if *c == 0 {
                m.remove(&self.symbol);
            }
        }
    }
}

/// Why the executor did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("venue: {0}")]
    Venue(#[from] RestError),
    #[error("{0}")]
    Journal(#[from] super::journal::JournalError),
    #[error("no random source for the engine's id")]
    Random,
}

impl StartError {
    pub const fn code(&self) -> &'static str {
        match self {
            StartError::Venue(_) => "EXCHANGE_ERROR",
            StartError::Journal(_) => "JOURNAL_UNAVAILABLE",
            StartError::Random => "NO_RANDOM_SOURCE",
        }
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("symbols", &self.inner.filters.len())
            .finish()
    }
}

impl Executor {
    /// Reads the venue's symbols and filters once; the executor then takes orders.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        config: ExecutionConfig,
        pool: PgPool,
        rest: Rest,
        prices: PriceChain,
        stream: Option<Arc<Prices>>,
        outbox: Outbox,
        risk: Option<mpsc::Sender<RiskInput>>,
        cancel: CancellationToken,
    ) -> Result<Self, (StartError, PriceChain)> {
        metrics::counter!(ORDERS).increment(0);
        metrics::counter!(AMBIGUOUS).increment(0);
        metrics::counter!(FILLS).increment(0);
        metrics::counter!(RESURRECTED).increment(0);
        metrics::counter!(REDUCE_ONLY_EXCESS).increment(0);
        metrics::counter!(STALE_PRICE_CLOSES).increment(0);
        metrics::counter!(FEED_ERRORS).increment(0);
        metrics::gauge!(TIME_DRIFT).set(0.0);
        metrics::counter!(super::journal::REPLAYED).increment(0);
        let (info, venue_limits) = match rest.exchange_info_and_order_limits().await {
            Ok(x) => x,
            Err(e) => return Err((e.into(), prices)),
        };
        let scope = super::journal::scope_of(&pool);
        let mut seed = [0u8; 16];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).is_err() {
            return Err((StartError::Random, prices));
        }
        let instance = orders::OrderIds::from_random(seed).id;
        let journal =
            match super::journal::Journal::open(&config.journal_dir, &scope, config.journal_sync) {
                Ok(j) => j,
                Err(e) => return Err((e.into(), prices)),
            };
        let mut limits = trading::budget::Limits::default();
        for (secs, limit) in venue_limits {
            match secs {
                10 => limits.per_10s = limit,
                60 => limits.per_minute = limit,
                _ => {}
            }
        }
        if let Some(own) = config.order_limits {
            limits.per_10s = limits.per_10s.min(own.per_10s);
            limits.per_minute = limits.per_minute.min(own.per_minute);
        }
        let filters = info
            .into_iter()
            .filter(|s| s.status == "TRADING")
            .map(|s| {
                let (tick, step) = s.tick_and_step();
                let f = |kind: &str, field: &str| {
                    s.filters
                        .iter()
                        .find(|f| f["filterType"] == kind)
                        .and_then(|f| f[field].as_str())
                        .and_then(|v| v.parse::<Decimal>().ok())
                };
                let filters = VenueFilters {
                    tick: tick.unwrap_or(Decimal::ZERO),
                    step: step.unwrap_or(Decimal::ZERO),
                    min_notional: f("MIN_NOTIONAL", "notional").unwrap_or(Decimal::ZERO),
                    up: f("PERCENT_PRICE", "multiplierUp").unwrap_or(Decimal::from(100)),
                    down: f("PERCENT_PRICE", "multiplierDown").unwrap_or(Decimal::ZERO),
                };
                (s.symbol, filters)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                pool,
                rest,
                prices,
                stream,
                filters,
                outbox,
                risk,
                stats: Arc::default(),
                cancel,
                blocked: Default::default(),
                last_fill: Default::default(),
                reconciling: Default::default(),
                books: Default::default(),
                book_reads: Default::default(),
                refreshing: Default::default(),
                unsettled: Default::default(),
                watched: Default::default(),
                budget: std::sync::Mutex::new(trading::budget::OrderBudget::new(limits)),
                journal,
                scope,
                instance,
                rows: Default::default(),
                closing: Default::default(),
                symbols: Default::default(),
                gates: Default::default(),
                in_flight: Default::default(),
                sent: Default::default(),
            }),
        })
    }

    pub fn stats(&self) -> Arc<ExecutionStats> {
        self.inner.stats.clone()
    }

    /// Checks and places an order. `Ok` is the order as it stands after the venue's
    /// reply: SUBMITTED (accepted), UNKNOWN (being resolved), or REJECTED with the
    /// venue's code. `Err` means nothing was written or sent.
    pub async fn place(&self, p: PlaceOrder) -> Result<OrderRow, PlaceError> {
        let _shared = self.gate(&p.symbol).read_owned().await;
        self.place_with(p, None).await
    }

    /// `symbol`'s gate: orders are sent holding it shared (from their checks to their
    /// reply stored), a close holds it alone from its reads to its reply. Uncontended
    /// it costs an atomic operation; a close waits for the sends under way (at most one
    /// venue round trip) and orders wait for the close's reads and send.
    pub(super) fn gate(&self, symbol: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.inner
            .gates
            .lock()
            .expect("gates lock")
            .entry(symbol.to_ascii_uppercase())
            .or_default()
            .clone()
    }

    /// Marks `n` orders on `symbol` as in flight while the guard lives.
    pub(super) fn in_flight(&self, symbol: &str, n: usize) -> InFlight {
        *self
            .inner
            .sent
            .lock()
            .expect("sent lock")
            .entry(symbol.to_owned())
            .or_default() += n as u64;
        *self
            .inner
            .in_flight
            .lock()
            .expect("in-flight lock")
            .entry(symbol.to_owned())
            .or_default() += n;
        InFlight {
            exec: self.clone(),
            symbol: symbol.to_owned(),
            n,
        }
    }

    /// How many orders of ours were ever sent on `symbol`.
    pub(super) fn sent_on(&self, symbol: &str) -> u64 {
        self.inner
            .sent
            .lock()
            .expect("sent lock")
            .get(symbol)
            .copied()
            .unwrap_or_default()
    }

    /// Whether orders of ours on `symbol` are on their way to the venue.
    pub(super) fn moving(&self, symbol: &str) -> bool {
        self.inner
            .in_flight
            .lock()
            .expect("in-flight lock")
            .contains_key(symbol)
    }

    /// The symbol's lock: fills are booked and reconciliation judges under it.
    pub(super) async fn symbol_guard(&self, symbol: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .inner
            .symbols
            .lock()
            .expect("symbols lock")
            .entry(symbol.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// A `trade` as the JS system places it: against an opposite position, the whole
    /// of it closes and `quantity` opens, in one order (`trading::position::
    /// trade_quantity`); reduce-only reduces by `quantity` and never flips.
    /// The position it flips is the one the account will hold once its market orders
    /// on their way have filled.
    pub async fn place_trade(&self, mut p: PlaceOrder) -> Result<OrderRow, PlaceError> {
        let t = self.ticket(&p).await?;
        let held = t.view.here.as_ref().map(|m| &m.position);
        p.quantity = trading::position::trade_quantity(held, p.side, p.quantity, p.reduce_only);
        self.place(p).await
    }

    /// [`Executor::place`]; `venue_reduce_only` overrides whether the venue sees
    /// `reduceOnly` (a close knows from its plan; otherwise a reduce-only request is
    /// reduce-only on the venue only when the exchange's net position covers it).
    pub(super) async fn place_with(
        &self,
        p: PlaceOrder,
        venue_reduce_only: Option<bool>,
    ) -> Result<OrderRow, PlaceError> {
        let i = &self.inner;
        let accepted = std::time::Instant::now();
        let t = self.ticket(&p).await?;
        let approved = check_view(
            &t.view,
            &t.rules,
            &t.filters,
            t.mark,
            request_of(&t.symbol, &p),
        )
        .map_err(PlaceError::Refused)?;
        let (symbol, here) = (t.symbol, t.here);
        let req = approved.request();
        let sent_at = now_ms() + i.rest.stats.time_offset_ms.load(Relaxed);
        self.take_budget(sent_at, 1, !req.reduce_only)?;
        let checked = std::time::Instant::now();
        i.stats.record(|l| &mut l.checks_us, checked - accepted);
        let new = NewOrder {
            sub_account_id: p.sub_account_id.clone(),
            symbol: symbol.clone(),
            side: req.side,
            kind: p.kind,
            quantity: req.quantity,
            price: req.limit,
            leverage: req.leverage,
            reduce_only: req.reduce_only,
            origin: p.origin.clone(),
            request_id: p.request_id.clone(),
            position_id: p.position_id.clone(),
            close_reason: p.close_reason.clone(),
        };
        let row = self.write_ahead(vec![new], sent_at)?.remove(0);
        let _moving = self.in_flight(&symbol, 1);
        i.stats.record(|l| &mut l.write_us, checked.elapsed());
        i.stats.placed.fetch_add(1, Relaxed);
        let mut params = vec![
            ("symbol", symbol.clone()),
            ("side", orders::side_str(req.side).to_owned()),
            ("type", p.kind.as_str().to_owned()),
            ("quantity", req.quantity.normalize().to_string()),
            ("newClientOrderId", row.client_order_id.clone()),
            ("newOrderRespType", "ACK".to_owned()),
        ];
        if let Some(px) = req.limit {
            params.push(("price", px.normalize().to_string()));
            params.push(("timeInForce", "GTC".to_owned()));
        }
        let venue_reduce = match (venue_reduce_only, req.reduce_only, here) {
            (Some(r), _, _) => r,
            (None, true, Some(v)) => match self.exchange_net(&symbol).await {
                Ok(e) => trading::close::covers(
                    e,
                    if v.is_sign_positive() {
                        req.quantity
                    } else {
                        -req.quantity
                    },
                ),
                Err(_) => false,
            },
            (None, _, _) => false,
        };
        if venue_reduce {
            params.push(("reduceOnly", "true".to_owned()));
        }
        let on_wire = std::time::Instant::now();
        // When the request really leaves (its signed timestamp is taken now): until
        // this plus the receive window, "no such order" may only mean "not yet".
        let left_at = now_ms() + i.rest.stats.time_offset_ms.load(Relaxed);
        let overhead = on_wire - accepted;
        metrics::histogram!(OVERHEAD).record(overhead.as_secs_f64());
        i.stats.record(|l| &mut l.overhead_us, overhead);
        let reply = i.rest.signed(Method::POST, "/fapi/v1/order", &params).await;
        let ack = on_wire.elapsed();
        metrics::histogram!(ACK).record(ack.as_secs_f64());
        i.stats.record(|l| &mut l.ack_us, ack);
        let wire = match reply {
            Ok(body) => match serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["orderId"].as_u64())
            {
                Some(id) => Wire::Ok {
                    venue_id: id.to_string(),
                },
                None => Wire::Broken {
                    detail: "a 2xx without an orderId".into(),
                },
            },
            Err(e) => wire_of(&e),
        };
        let event = event_of(classify(wire));
        let outcome = match &event {
            OrderEvent::Accepted { .. } => "accepted",
            OrderEvent::Ambiguous { .. } => "unknown",
            _ => "rejected",
        };
        metrics::counter!(ORDERS, "outcome" => outcome).increment(1);
        let ambiguous = matches!(event, OrderEvent::Ambiguous { .. });
        let after = match self
            .transition(&row.client_order_id, event, Source::Rest)
            .await
        {
            Ok(a) => a,
            Err(error) => {
                // Sent, and the venue's answer not stored: ask the venue until it is.
                tracing::error!(order = %row.client_order_id, %error, "an order's reply not stored: resolving it");
                self.resolve_later(&row.client_order_id, &symbol, left_at);
                return Err(PlaceError::StateUnknown {
                    order_id: row.id.clone(),
                    client_order_id: row.client_order_id.clone(),
                    error,
                });
            }
        };
        if ambiguous {
            self.resolve_later(&row.client_order_id, &symbol, left_at);
        }
        Ok(after.unwrap_or(row))
    }

    /// Everything an order of `p`'s account and symbol is checked against: the gates
    /// (clock drift, a desynced symbol), the venue's filters, the account and its
    /// rules in one read, a fresh price, and the account's view at the marks.
    pub(super) async fn ticket(&self, p: &PlaceOrder) -> Result<Ticket, PlaceError> {
        let i = &self.inner;
        let drift_ms = i.stats.drift_ms.load(Relaxed);
        let limit_ms = i.config.drift_block.as_millis() as i64;
        if drift_ms > limit_ms && !p.reduce_only {
            return Err(PlaceError::ClockDrift { drift_ms, limit_ms });
        }
        let symbol = p.symbol.to_ascii_uppercase();
        if !p.reduce_only && i.blocked.lock().expect("blocked lock").contains(&symbol) {
            return Err(PlaceError::SymbolDesync(symbol));
        }
        let filters = i
            .filters
            .get(&symbol)
            .cloned()
            .ok_or_else(|| PlaceError::UnknownSymbol(symbol.clone()))?;
        let cached = self
            .book_of(&p.sub_account_id)
            .await?
            .ok_or(PlaceError::AccountNotFound)?;
        let (prepared, rules) = (&cached.prepared, cached.rules.clone());
        let account = prepared.account();
        let pending = self.pending_of(&p.sub_account_id, &cached, &symbol);
        let mark = match i.prices.mark(&symbol).await {
            Ok(q) => q.price,
            // A market order that only reduces is never held up by a stale price: it
            // is checked at the last mark the stream gave, or the position's entry
            // (the venue fills it at its own price in any case).
            Err(e) if p.reduce_only && p.kind == OrderKind::Market => {
                let last = i
                    .stream
                    .as_ref()
                    .and_then(|s| s.get(&symbol))
                    .and_then(|e| e.mark);
                let entry = account
                    .positions
                    .iter()
                    .find(|q| *q.symbol == *symbol)
                    .map(|q| q.position.entry_price);
                match last.or(entry) {
                    Some(px) => {
                        metrics::counter!(STALE_PRICE_CLOSES).increment(1);
                        tracing::warn!(symbol = %symbol, error = %e, price = %px,
                            "no fresh price: a reducing market order checked at the last known");
                        px
                    }
                    None => return Err(PlaceError::Price(e)),
                }
            }
            Err(e) => return Err(PlaceError::Price(e)),
        };
        // The account's other symbols at fresh marks (the chain's staleness bound):
        // the stream's when fresh, else the chain's. None fresh anywhere: an order that
        // opens is refused rather than checked at a stale price or the entry.
        let mut marks: HashMap<&str, Decimal> = HashMap::new();
        let others = account
            .positions
            .iter()
            .map(|q| &*q.symbol)
            .chain(pending.resting.iter().map(|o| o.symbol.as_str()))
            .filter(|s| *s != symbol);
        let now = now_ms();
        let max_age = i.prices.max_age().as_millis() as i64;
        for s in others {
            if marks.contains_key(s) {
                continue;
            }
            let streamed = i
                .stream
                .as_ref()
                .and_then(|p| p.get(s))
                .filter(|e| now - e.mark_time <= max_age)
                .and_then(|e| e.mark);
            let fresh = match streamed {
                Some(m) => Some(m),
                None => match i.prices.mark(s).await {
                    Ok(q) => Some(q.price),
                    Err(e) if !p.reduce_only => return Err(PlaceError::Price(e)),
                    Err(_) => None,
                },
            };
            if let Some(m) = fresh {
                marks.insert(s, m);
            }
        }
        let stream_mark = |s: &str| {
            if s == symbol {
                return Some(mark);
            }
            marks.get(s).copied()
        };
        let symbols: Vec<_> = account.positions.iter().map(|p| p.symbol.clone()).collect();
        let here = account
            .positions
            .iter()
            .find(|q| *q.symbol == *symbol)
            .map(|q| q.position.signed());
        let mut view = prepared.view(|k| stream_mark(&symbols[k]), &symbol, cached.realized_today);
        // A market order of this symbol on its way is as good as filled (the lane is
        // free before its fill is booked): the account is checked with it in place.
        // The rest of what is pending counts by what it could add.
        for fill in &pending.arriving {
            trading::risk::assume_filled(&mut view, fill, mark, mark);
        }
        let held = |s: &str| {
            account
                .positions
                .iter()
                .find(|q| &*q.symbol == s)
                .map_or(Decimal::ZERO, |q| q.position.signed())
        };
        view.pending = trading::risk::Pending::of(&pending.resting, &symbol, held, stream_mark);
        Ok(Ticket {
            symbol,
            filters,
            rules,
            mark,
            view,
            here,
        })
    }

    /// Takes `n` new orders from the venue's limits at venue time `venue_now`, after
    /// raising our counts to what the venue last said it counted.
    pub(super) fn take_budget(
        &self,
        venue_now: i64,
        n: u64,
        opening: bool,
    ) -> Result<(), PlaceError> {
        let st = &self.inner.rest.stats;
        let mut b = self.inner.budget.lock().expect("budget lock");
        let at = st.order_count_at_ms.load(Relaxed);
        if at > 0 {
            let offset = st.time_offset_ms.load(Relaxed);
            b.observe(
                at + offset,
                Some(st.order_count_10s.load(Relaxed)),
                Some(st.order_count_1m.load(Relaxed)),
            );
        }
        b.take(venue_now, n, opening).map_err(|e| {
            metrics::counter!(ORDERS, "outcome" => "rate_limited").increment(1);
            PlaceError::RateLimited(e)
        })
    }

    /// The order with `client_id` once it is final (filled, cancelled, rejected,
    /// expired), or as it stands after `within`.
    pub async fn settle(
        &self,
        client_id: &str,
        within: Duration,
    ) -> Result<Option<OrderRow>, LedgerError> {
        let deadline = tokio::time::Instant::now() + within;
        let notify = self
            .inner
            .watched
            .lock()
            .expect("watched lock")
            .entry(client_id.to_owned())
            .or_default()
            .clone();
        let settled = async {
            loop {
                // Registered before the read: a change between the two still wakes us.
                let changed = notify.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let row = orders::by_client_id(&self.inner.pool, client_id).await?;
                match &row {
                    Some(r) if !r.order.state.is_final() => {}
                    _ => return Ok(row),
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok(row);
                }
            }
        }
        .await;
        let mut watched = self.inner.watched.lock().expect("watched lock");
        // The last waiter for this order takes its entry away.
        if watched
            .get(client_id)
            .is_some_and(|n| Arc::strong_count(n) <= 2)
        {
            watched.remove(client_id);
        }
        drop(notify);
        settled
    }
}
