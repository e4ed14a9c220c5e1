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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use database::ledger::LedgerError;
use database::orders::{self, NewOrder, OrderKind, OrderRow, Source};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use streaming::binance::prices::Prices;
use streaming::binance::rest::{Rest, RestError, RECV_WINDOW_MS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::order::{classify, OrderEvent, Reply, Wire};
use trading::position::OrderSide;
use trading::price::PriceError;
use trading::risk::{check_view, OrderRequest, Refusal, VenueFilters};

use super::book::{CachedBook, Refreshing};
use super::prices::PriceChain;
use super::risk_loop::RiskInput;
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

/// An order a sub-account asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub sub_account_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub kind: OrderKind,
    pub quantity: Decimal,
    /// The limit price; `None` for a market order.
    pub price: Option<Decimal>,
    pub leverage: Decimal,
    pub reduce_only: bool,
    pub origin: String,
    pub request_id: Option<String>,
    /// The position this order closes (a close or a limit close).
    pub position_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("Sub-account not found")]
    AccountNotFound,
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Price(PriceError),
    #[error("Unknown symbol {0}")]
    UnknownSymbol(String),
    #[error("{0}: the exchange position disagrees with the sub-accounts'; only orders that reduce are taken until it is reconciled")]
    SymbolDesync(String),
    #[error("The clock is {drift_ms} ms off the venue's (limit {limit_ms} ms): only orders that reduce are taken")]
    ClockDrift { drift_ms: i64, limit_ms: i64 },
    #[error("{0}")]
    Storage(LedgerError),
    #[error("{0}")]
    RateLimited(trading::budget::OverBudget),
    /// The order's record could not be made durable: nothing was sent.
    #[error("{0}")]
    Journal(super::journal::JournalError),
    /// The order was sent but what the venue said could not be stored: it is being
    /// resolved by asking the venue.
    #[error("Order state unknown: the order was sent; its outcome is being resolved ({error})")]
    StateUnknown {
        order_id: String,
        client_order_id: String,
        error: LedgerError,
    },
}

impl PlaceError {
    pub fn code(&self) -> &'static str {
        match self {
            PlaceError::AccountNotFound => "ACCOUNT_NOT_FOUND",
            PlaceError::Refused(r) => r.code(),
            PlaceError::Price(p) => p.code(),
            PlaceError::UnknownSymbol(_) => "INVALID_SYMBOL",
            PlaceError::ClockDrift { .. } => "CLOCK_DRIFT",
            PlaceError::SymbolDesync(_) => "SYMBOL_DESYNC",
            PlaceError::Storage(e) => e.code(),
            PlaceError::RateLimited(_) => "ORDER_RATE_LIMITED",
            PlaceError::Journal(_) => "JOURNAL_UNAVAILABLE",
            PlaceError::StateUnknown { .. } => "ORDER_STATE_UNKNOWN",
        }
    }
}

impl From<LedgerError> for PlaceError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::AccountNotFound(_) => PlaceError::AccountNotFound,
            e => PlaceError::Storage(e),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// How long after a request's timestamp the venue can still accept it: before
    /// then, "does not exist" may only mean "not yet".
    pub acceptance_window: Duration,
    /// The resolver's first and longest waits between queries.
    pub resolve_first: Duration,
    pub resolve_max: Duration,
    /// How often the venue's clock is measured.
    pub clock_every: Duration,
    /// A drift over this is logged as a warning.
    pub drift_warn: Duration,
    /// A drift over this refuses orders that open (reducing ones still go).
    pub drift_block: Duration,
    /// Positions on the shared exchange account that belong to no sub-account (set by
    /// the operator): reconciliation compares the exchange minus these with the book.
    pub house: HashMap<String, Decimal>,
    /// How often reconciliation runs (also after every user-stream reconnect).
    pub reconcile_every: Duration,
    /// A symbol filled this recently is not judged for desync: its fill may still be
    /// on its way to the book.
    pub fill_debounce: Duration,
    /// The lock that keeps two engines from reconciling at once.
    pub lock: Option<super::reconcile::ReconcileLock>,
    /// How long the order path trusts an account's book read from the ledger. The
    /// engine's own writes refresh it at once; this bounds how long a change made
    /// outside the engine (an operator's SQL) can go unseen.
    pub book_ttl: Duration,
    /// Our own cap on new orders, below the venue's: the venue's limits (read from
    /// `exchangeInfo`; Binance's 300 per 10 s and 1 200 per minute when it states
    /// none) apply in any case.
    pub order_limits: Option<trading::budget::Limits>,
    /// Where this process's order journal lives ([`super::journal`]); reconciliation
    /// replays the journals other processes left here.
    pub journal_dir: std::path::PathBuf,
    /// Whether each journal append waits for the disk ([`super::journal::JournalSync`]).
    pub journal_sync: super::journal::JournalSync,
}

/// The journal's directory when none is configured (`GS_ORDER_JOURNAL_DIR`).
pub const DEFAULT_JOURNAL_DIR: &str = "var/journal";

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            acceptance_window: Duration::from_millis(RECV_WINDOW_MS + 1_000),
            resolve_first: Duration::from_millis(200),
            resolve_max: Duration::from_secs(5),
            clock_every: Duration::from_secs(60),
            drift_warn: Duration::from_secs(1),
            drift_block: Duration::from_secs(5),
            house: HashMap::new(),
            reconcile_every: Duration::from_secs(60),
            fill_debounce: Duration::from_secs(5),
            lock: None,
            book_ttl: Duration::from_secs(10),
            order_limits: None,
            journal_dir: DEFAULT_JOURNAL_DIR.into(),
            journal_sync: Default::default(),
        }
    }
}

/// Counters a test or a status page can read.
#[derive(Debug, Default)]
pub struct ExecutionStats {
    pub placed: AtomicU64,
    pub ambiguous: AtomicU64,
    pub resolved: AtomicU64,
    pub fills_booked: AtomicU64,
    pub duplicates: AtomicU64,
    pub feed_errors: AtomicU64,
    pub foreign: AtomicU64,
    pub desync_closes: AtomicU64,
    /// The last measured |venue clock − ours|, in ms.
    pub drift_ms: AtomicI64,
    /// Recent latencies in µs (the newest `LATENCY_SAMPLES` of each), for reports.
    pub latencies: std::sync::Mutex<Latencies>,
}

/// How many recent samples of each latency are kept.
pub const LATENCY_SAMPLES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Latencies {
    pub overhead_us: std::collections::VecDeque<u32>,
    /// Of the overhead: the checks before the write (gates, book, price, risk).
    pub checks_us: std::collections::VecDeque<u32>,
    /// Of the overhead: the order's journal append, durable.
    pub write_us: std::collections::VecDeque<u32>,
    /// The order row's commit, beside the venue call (not part of the overhead).
    pub row_us: std::collections::VecDeque<u32>,
    pub ack_us: std::collections::VecDeque<u32>,
    pub fill_booking_us: std::collections::VecDeque<u32>,
    /// Of the fill booking: its transaction (the order locked, the fill booked, the
    /// order's event row), from its start to its commit.
    pub booking_tx_us: std::collections::VecDeque<u32>,
    /// Of the fill booking: after the commit (the book read again, the events).
    pub booking_after_us: std::collections::VecDeque<u32>,
}

fn sample(q: &mut std::collections::VecDeque<u32>, d: Duration) {
    if q.len() == LATENCY_SAMPLES {
        q.pop_front();
    }
    q.push_back(d.as_micros().min(u32::MAX as u128) as u32);
}

impl ExecutionStats {
    pub(super) fn record(
        &self,
        pick: fn(&mut Latencies) -> &mut std::collections::VecDeque<u32>,
        d: Duration,
    ) {
        sample(pick(&mut self.latencies.lock().expect("latency lock")), d);
    }
}

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

pub(super) fn request_of(symbol: &str, p: &PlaceOrder) -> OrderRequest {
    OrderRequest {
        symbol: symbol.to_owned(),
        side: p.side,
        quantity: p.quantity,
        limit: p.price,
        leverage: p.leverage,
        reduce_only: p.reduce_only,
    }
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
}

impl StartError {
    pub const fn code(&self) -> &'static str {
        match self {
            StartError::Venue(_) => "EXCHANGE_ERROR",
            StartError::Journal(_) => "JOURNAL_UNAVAILABLE",
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

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a REST error says about an order placement.
pub(super) fn wire_of(e: &RestError) -> Wire {
    match e {
        RestError::Api { status, code, msg } => Wire::Api {
            status: *status,
            code: *code,
            message: msg.clone(),
        },
        RestError::Http { status, .. } => Wire::Http { status: *status },
        // Held back by our own rate-limit pause: it never left.
        RestError::Paused { .. } | RestError::Connect(_) => Wire::NotConnected,
        RestError::Transport(d) => Wire::Broken { detail: d.clone() },
        // A 2xx whose body we could not read: the venue took it.
        RestError::Body(e) => Wire::Broken {
            detail: format!("unreadable reply: {e}"),
        },
    }
}

pub(super) fn event_of(reply: Reply) -> OrderEvent {
    match reply {
        Reply::Accepted { venue_id } => OrderEvent::Accepted { venue_id },
        Reply::Rejected { code, message } => OrderEvent::Rejected { code, message },
        Reply::Unknown { reason } => OrderEvent::Ambiguous { reason },
    }
}

pub(super) fn detail_of(e: &OrderEvent) -> Value {
    match e {
        OrderEvent::Accepted { venue_id } => json!({"venueOrderId": venue_id}),
        OrderEvent::Ambiguous { reason } => json!({"reason": reason}),
        OrderEvent::Rejected { code, message } => json!({"code": code, "message": message}),
        OrderEvent::Fill(x) => json!({"tradeId": x.trade_id, "quantity": x.quantity.to_string(),
            "price": x.price.to_string(), "fee": x.fee.to_string()}),
        OrderEvent::Sent
        | OrderEvent::NotFound
        | OrderEvent::Canceled
        | OrderEvent::Expired
        | OrderEvent::NotSent => json!({}),
    }
}

pub const fn position_side(side: OrderSide) -> &'static str {
    match side {
        OrderSide::Buy => "LONG",
        OrderSide::Sell => "SHORT",
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

    /// Makes `orders` durable in the journal, then starts writing their rows; returns
    /// them as they stand (SUBMITTED, sent at `sent_at`). Refused before anything is
    /// written: an order its row's checks would refuse (once sent, its row must not
    /// fail). Every order gets fresh random ids.
    pub(super) fn write_ahead(
        &self,
        orders: Vec<NewOrder>,
        sent_at: i64,
    ) -> Result<Vec<OrderRow>, PlaceError> {
        use ring::rand::SecureRandom;
        let i = &self.inner;
        let random = ring::rand::SystemRandom::new();
        let mut ids = Vec::with_capacity(orders.len());
        for o in &orders {
            o.check()
                .map_err(|why| PlaceError::Refused(Refusal::Invalid(why)))?;
            let mut b = [0u8; 16];
            random
                .fill(&mut b)
                .map_err(|_| PlaceError::Refused(Refusal::Invalid("no random source")))?;
            ids.push(orders::OrderIds::from_random(b));
        }
        let entries: Vec<_> = ids
            .iter()
            .zip(&orders)
            .map(|(ids, o)| super::journal::Entry::new(ids, o, sent_at))
            .collect();
        // The durable write blocks this thread: on a multi-thread runtime the
        // worker's other tasks move to another thread meanwhile (the write itself
        // stays here: a hand-off to a writer thread costs more than the write).
        let append = || i.journal.append(&entries);
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let appended = match i.config.journal_sync {
            super::journal::JournalSync::Always if multi => tokio::task::block_in_place(append),
            _ => append(),
        };
        appended.map_err(PlaceError::Journal)?;
        {
            let mut sent = i.unsettled.lock().expect("unsettled lock");
            for (ids, o) in ids.iter().zip(&orders).filter(|(_, o)| !o.reduce_only) {
                sent.entry(o.sub_account_id.clone()).or_default().insert(
                    ids.client_order_id.clone(),
                    trading::risk::PendingOrder {
                        symbol: o.symbol.clone(),
                        side: o.side,
                        remaining: o.quantity,
                        price: o.price,
                        leverage: o.leverage,
                    },
                );
            }
        }
        Ok(ids
            .into_iter()
            .zip(orders)
            .map(|(ids, o)| {
                let row = OrderRow::submitted(&ids, &o, sent_at);
                self.write_row(ids, o, sent_at);
                row
            })
            .collect())
    }

    /// Writes a journaled order's row, retrying while the database is away (the order
    /// is on its way to the venue: its row must follow). Readers of the order wait
    /// for it ([`Executor::row_written`]).
    fn write_row(&self, ids: orders::OrderIds, o: NewOrder, sent_at: i64) {
        let (written, rx) = tokio::sync::watch::channel(false);
        let client_id = ids.client_order_id.clone();
        self.inner
            .rows
            .lock()
            .expect("rows lock")
            .insert(client_id.clone(), rx);
        let me = self.clone();
        tokio::spawn(async move {
            let i = &me.inner;
            let started = std::time::Instant::now();
            let mut retry =
                streaming::retry::exponential(Duration::from_millis(20), Duration::from_secs(2));
            loop {
                match orders::insert_submitted(&i.pool, &ids, &o, sent_at).await {
                    Ok(_) => {
                        i.journal.settled(1);
                        i.stats.record(|l| &mut l.row_us, started.elapsed());
                        let _ = written.send(true);
                        break;
                    }
                    Err(e @ LedgerError::AccountNotFound(_)) => {
                        // Checked just before: only an account removed in between.
                        tracing::error!(client_order_id = %client_id, error = %e, "a sent order's row was refused; it stays in the journal");
                        break;
                    }
                    Err(e) => {
                        let wait = retry.next_backoff().unwrap_or(Duration::from_secs(2));
                        tracing::warn!(client_order_id = %client_id, error = %e, retry_in_ms = wait.as_millis() as u64, "a sent order's row is not written yet");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            // The journal keeps it: the next reconciliation writes it.
                            _ = i.cancel.cancelled() => break,
                        }
                    }
                }
            }
            i.rows.lock().expect("rows lock").remove(&client_id);
        });
    }

    /// Returns once the row of the order with `client_id` is written, if it is one
    /// this executor sent and is still writing.
    pub(super) async fn row_written(&self, client_id: &str) {
        let pending = self
            .inner
            .rows
            .lock()
            .expect("rows lock")
            .get(client_id)
            .cloned();
        if let Some(mut rx) = pending {
            let _ = rx.wait_for(|w| *w).await;
        }
    }

    /// Returns once every row being written when it was called is written.
    pub(super) async fn rows_written(&self) {
        let pending: Vec<_> = self
            .inner
            .rows
            .lock()
            .expect("rows lock")
            .values()
            .cloned()
            .collect();
        for mut rx in pending {
            let _ = rx.wait_for(|w| *w).await;
        }
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
