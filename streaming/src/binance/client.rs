//! The Binance USDⓈ-M streaming client. Six loops share one state:
//!
//! - the clock keeper (`/fapi/v1/time` every minute: signed calls need our clock
//!   within `recvWindow` of the venue's),
//! - the positions poller (`/fapi/v3/positionRisk` periodically and after every
//!   user-stream reconnect, which replays nothing),
//! - the listen-key keeper (keepalive every 30 min; an unknown key gets a new one),
//! - the user data stream (ACCOUNT_UPDATE moves positions as they happen;
//!   ORDER_TRADE_UPDATE is parsed and counted; `listenKeyExpired` → new key),
//! - two market sockets since the 2026 URL split: `/public` (diff depth and book
//!   ticker, a local book per symbol) and `/market` (mark prices, option marks),
//! - the price cache writer ([`super::price_cache`]).
//!
//! Every socket runs on the shared reconnecting loop ([`crate::ws`]) and is replaced
//! before the venue's 24-hour cut.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::book::{LocalBook, Sync};
use super::price_cache::{self, PriceCacheConfig, Prices};
use super::rest::{Keys, Rest, RestError, RestStats};
use super::wire::{
    self, AccountSummary, MarkPrice, MarketMessage, OptionMark, SymbolInfo, UserEvent,
};
use super::{BnKind, BnPosition, BnQuote};
use crate::broker_metrics::{self, POSITIONS, REST_ERRORS};
use crate::event::{Broker, BrokerEvent, BrokerPayload};
use crate::secret::Secret;
use crate::tasks::TaskGroup;
use crate::ws::{
    self, ConnectRequest, Disconnect, Flow, Outbox, PrepareError, TlsPolicy, WsConfig, WsHandler,
    WsStats,
};

pub const BOOK_RESYNCS: &str = "greekstream_binance_book_resyncs_total";
pub const USER_EVENTS: &str = "greekstream_binance_user_events_total";
pub const LISTEN_KEYS: &str = "greekstream_binance_listen_keys_created_total";
/// The margin account's totals, in the margin asset, by `account` and `total`
/// (`wallet_balance`, `unrealized_profit`, `margin_balance`, `initial_margin`,
/// `maint_margin`, `available_balance`).
pub const ACCOUNT_TOTALS: &str = "greekstream_binance_account";
const BROKER: Broker = Broker::Binance;

#[derive(Debug, Clone)]
pub struct BinanceConfig {
    /// REST base, `https://fapi.binance.com`.
    pub rest_url: String,
    /// WebSocket base, `wss://fstream.binance.com` (`/public`, `/market`, `/private`
    /// are appended).
    pub ws_url: String,
    pub keys: Keys,
    /// The label rows carry as their account (the API has no account number).
    pub account: String,
    /// Symbols to stream besides those held (their prices reach the cache).
    pub symbols: Vec<String>,
    pub depth_limit: u32,
    pub positions_refresh: Duration,
    pub listen_key_keepalive: Duration,
    pub time_sync_every: Duration,
    /// Sockets are replaced after this long, before the venue's 24-hour cut.
    pub max_connection_age: Duration,
    /// A market socket with subscriptions and no data for this long is replaced:
    /// it may answer probes yet have lost its subscriptions (marks alone come every
    /// second).
    pub market_data_timeout: Duration,
    pub request_timeout: Duration,
    pub accept_invalid_certs: bool,
    pub price_cache: Option<PriceCacheConfig>,
    /// The options API host (`https://eapi.binance.com`); `None` reads no option
    /// positions.
    pub options_rest_url: Option<String>,
    pub public: WsConfig,
    pub market: WsConfig,
    pub user: WsConfig,
}

impl BinanceConfig {
    pub fn new(rest_url: impl Into<String>, ws_url: impl Into<String>, keys: Keys) -> Self {
        let mut public = WsConfig::new(BROKER);
        public.socket = "public";
        let mut market = WsConfig::new(BROKER);
        market.socket = "market_data";
        let mut user = WsConfig::new(BROKER);
        user.socket = "account";
        // The venue pings every 3 minutes and account events can be rarer than that.
        user.silence_timeout = Duration::from_secs(200);
        user.heartbeat_interval = Duration::from_secs(3600);
        for c in [&mut public, &mut market] {
            // Binance has no application heartbeat; LIST_SUBSCRIPTIONS is the probe.
            c.heartbeat_interval = Duration::from_secs(3600);
        }
        Self {
            rest_url: rest_url.into().trim_end_matches('/').to_owned(),
            ws_url: ws_url.into().trim_end_matches('/').to_owned(),
            keys,
            account: "binance".into(),
            symbols: Vec::new(),
            depth_limit: 1000,
            positions_refresh: Duration::from_secs(60),
            listen_key_keepalive: Duration::from_secs(30 * 60),
            time_sync_every: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(23 * 3600 + 55 * 60),
            market_data_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            accept_invalid_certs: false,
            price_cache: None,
            options_rest_url: None,
            public,
            market,
            user,
        }
    }

    fn tls(&self) -> TlsPolicy {
        TlsPolicy::accept_invalid(self.accept_invalid_certs)
    }
}

/// Counters and live state a test or a report can read while the client runs.
#[derive(Debug, Default)]
pub struct BinanceStats {
    pub public: WsStats,
    pub market: WsStats,
    pub user: WsStats,
    pub events_sent: AtomicU64,
    pub malformed: AtomicU64,
    pub depth_applied: AtomicU64,
    pub snapshots: AtomicU64,
    pub resyncs: AtomicU64,
    pub account_updates: AtomicU64,
    pub order_updates: AtomicU64,
    pub listen_keys_created: AtomicU64,
    pub listen_key_expiries: AtomicU64,
    pub reconciles: AtomicU64,
    /// The margin account's totals at the last reconcile.
    pub account: Mutex<Option<AccountSummary>>,
    pub positions: AtomicU64,
    pub authenticated: AtomicBool,
    pub rest: Arc<RestStats>,
    /// The local order books, by symbol.
    pub books: Mutex<HashMap<String, LocalBook>>,
    pub prices: Arc<Prices>,
}

impl BinanceStats {
    pub fn book(&self, symbol: &str) -> Option<LocalBook> {
        self.books.lock().expect("books lock").get(symbol).cloned()
    }
}

/// The contract kind of a symbol, from exchangeInfo when we have it.
pub fn kind_of(symbol: &str, info: Option<&SymbolInfo>) -> BnKind {
    if symbol.matches('-').count() == 3 {
        return BnKind::Option;
    }
    let from_ms = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.date_naive())
    };
    match info {
        Some(i) if i.contract_type == "PERPETUAL" => BnKind::Perpetual,
        Some(i) if !i.contract_type.is_empty() => from_ms(i.delivery_date)
            .map(BnKind::Future)
            .unwrap_or(BnKind::Perpetual),
        _ => symbol
            .split_once('_')
            .and_then(|(_, d)| NaiveDate::parse_from_str(d, "%y%m%d").ok())
            .map_or(BnKind::Perpetual, BnKind::Future),
    }
}

/// The underlying of a symbol: `BTCUSDT` for `BTC-261225-100000-C` and for
/// `BTCUSDT_261225`.
pub fn underlying_of(symbol: &str, info: Option<&SymbolInfo>) -> String {
    if let Some(i) = info.filter(|i| !i.pair.is_empty()) {
        return i.pair.clone();
    }
    if let Some((base, _)) = symbol.split_once('-') {
        return format!("{base}USDT");
    }
    symbol.split('_').next().unwrap_or(symbol).to_owned()
}

type PositionKey = (String, String);

/// How long a streamed change is protected from older REST reads: far longer than
/// any one read takes.
const STREAMED_MEMORY: Duration = Duration::from_secs(600);

#[derive(Default)]
struct State {
    positions: HashMap<PositionKey, Arc<BnPosition>>,
    info: HashMap<String, SymbolInfo>,
    marks: HashMap<String, Arc<MarkPrice>>,
    option_marks: HashMap<String, Arc<OptionMark>>,
    /// Bumped whenever the set of symbols to stream may have changed.
    version: u64,
    /// When the user stream last changed each position: a REST read that began
    /// before must not revert it.
    streamed: HashMap<PositionKey, Instant>,
    /// Held options' contract units (`/eapi/v1/exchangeInfo`): their multiplier.
    option_units: HashMap<String, Decimal>,
}

impl State {
    fn position(
        &self,
        account: &Arc<str>,
        symbol: &str,
        side: &str,
        amount: Decimal,
        entry: Decimal,
    ) -> BnPosition {
        let info = self.info.get(symbol);
        let kind = kind_of(symbol, info);
        // An option's multiplier is its venue-listed unit, never a guess: unknown
        // is 0, which normalization refuses (counted as invalid_multiplier).
        let contract_size = match kind {
            BnKind::Option => self
                .option_units
                .get(symbol)
                .copied()
                .unwrap_or(Decimal::ZERO),
            _ => Decimal::ONE,
        };
        BnPosition {
            account: account.clone(),
            symbol: symbol.to_owned(),
            position_side: side.to_owned(),
            amount: amount.normalize(),
            entry_price: entry,
            kind,
            contract_size,
            underlying: underlying_of(symbol, info),
        }
    }

    fn quote(&self, p: Arc<BnPosition>) -> BnQuote {
        BnQuote {
            mark: self.marks.get(&p.symbol).cloned(),
            option: (p.kind == BnKind::Option)
                .then(|| self.option_marks.get(&p.symbol).cloned())
                .flatten(),
            position: p,
        }
    }

    /// Marks of one underlying's options (the stream carries every listed strike):
    /// only those of held options are kept, so memory follows the positions, not
    /// the option chain. Returns a quote for each held position they move.
    fn apply_option_marks(&mut self, marks: Vec<OptionMark>) -> Vec<BnQuote> {
        let mut held: HashMap<&str, Vec<Arc<BnPosition>>> = HashMap::new();
        for p in self.positions.values().filter(|p| p.kind == BnKind::Option) {
            held.entry(p.symbol.as_str()).or_default().push(p.clone());
        }
        let mut moved = Vec::new();
        for m in marks {
            if let Some(positions) = held.get(m.symbol.as_str()) {
                moved.extend(positions.iter().cloned());
                self.option_marks.insert(m.symbol.clone(), Arc::new(m));
            }
        }
        moved.into_iter().map(|p| self.quote(p)).collect()
    }

    /// Sets one position; returns it if it changed (closed ones too, with amount 0).
    fn upsert(&mut self, p: BnPosition) -> Option<Arc<BnPosition>> {
        let key = (p.symbol.clone(), p.position_side.clone());
        let p = Arc::new(p);
        let changed = match self.positions.get(&key) {
            Some(old) => old.amount != p.amount || old.entry_price != p.entry_price,
            None => !p.amount.is_zero(),
        };
        if !changed {
            return None;
        }
        if p.amount.is_zero() {
            self.positions.remove(&key);
            if !self.positions.values().any(|q| q.symbol == p.symbol) {
                // Nothing left to price with it (a listed symbol's mark stays: it is
                // small, and configured symbols stream whether held or not).
                self.option_marks.remove(&p.symbol);
            }
        } else {
            self.positions.insert(key, p.clone());
        }
        self.version += 1;
        Some(p)
    }

    fn streams(&self, configured: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut public = BTreeSet::new();
        let mut market = BTreeSet::new();
        let linear = configured.iter().cloned().chain(
            self.positions
                .values()
                .filter(|p| p.kind != BnKind::Option)
                .map(|p| p.symbol.clone()),
        );
        for s in linear {
            let s = s.to_ascii_lowercase();
            public.insert(format!("{s}@depth@100ms"));
            public.insert(format!("{s}@bookTicker"));
            market.insert(format!("{s}@markPrice@1s"));
        }
        for p in self.positions.values().filter(|p| p.kind == BnKind::Option) {
            market.insert(format!(
                "{}@optionMarkPrice",
                p.underlying.to_ascii_lowercase()
            ));
        }
        (public, market)
    }
}

struct Shared {
    cfg: BinanceConfig,
    rest: Rest,
    account: Arc<str>,
    state: Mutex<State>,
    stats: Arc<BinanceStats>,
    tx: mpsc::Sender<BrokerEvent>,
    /// The options API (`eapi`) client, when option positions are read.
    options: Option<Rest>,
    refresh_positions: Notify,
    /// Set when the listen key is known bad: the user socket reconnects with a new one.
    listen_key_invalid: AtomicBool,
}

impl Shared {
    async fn emit(&self, quote: BnQuote) -> bool {
        let event = BrokerEvent {
            broker: BROKER,
            account: self.account.clone(),
            received_at: Utc::now(),
            payload: BrokerPayload::Binance(quote),
        };
        if self.tx.send(event).await.is_err() {
            return false;
        }
        self.stats.events_sent.fetch_add(1, Relaxed);
        true
    }

    fn malformed(&self, what: &str, text: &str, err: &dyn std::fmt::Display) {
        broker_metrics::report_malformed(BROKER, &self.stats.malformed, what, text, err);
    }

    fn set_authenticated(&self, ok: bool) {
        broker_metrics::set_authenticated(BROKER, &self.stats.authenticated, ok);
    }

    fn rest_failed(&self, what: &str, err: &RestError) {
        if let RestError::Paused { .. } = err {
            // Held back by a rate-limit pause: the pause was warned about once when
            // it began (and is counted in `held_back`); one line per held request
            // would flood the log.
            tracing::debug!(error = %err, "Binance {what} held back");
            return;
        }
        metrics::counter!(REST_ERRORS, "broker" => BROKER.as_str()).increment(1);
        if err.is_auth() {
            self.set_authenticated(false);
        }
        tracing::warn!(error = %err, "Binance {what} failed");
    }

    fn publish_account(&self, a: AccountSummary) {
        for (total, value) in [
            ("wallet_balance", a.total_wallet_balance),
            ("unrealized_profit", a.total_unrealized_profit),
            ("margin_balance", a.total_margin_balance),
            ("initial_margin", a.total_initial_margin),
            ("maint_margin", a.total_maint_margin),
            ("available_balance", a.available_balance),
        ] {
            let value = value.to_f64().unwrap_or(f64::NAN);
            metrics::gauge!(ACCOUNT_TOTALS, "account" => self.account.to_string(), "total" => total)
                .set(value);
        }
        *self.stats.account.lock().expect("account lock") = Some(a);
    }

    fn publish_positions_gauge(&self, n: usize) {
        self.stats.positions.store(n as u64, Relaxed);
        metrics::gauge!(POSITIONS, "broker" => BROKER.as_str()).set(n as f64);
    }
}

/// Registers the Binance source's metrics at zero.
pub fn register_metrics() {
    for socket in ["public", "market_data", "account"] {
        ws::register_metrics(BROKER, socket);
    }
    metrics::counter!(REST_ERRORS, "broker" => BROKER.as_str()).increment(0);
    metrics::counter!(BOOK_RESYNCS).increment(0);
    metrics::counter!(LISTEN_KEYS).increment(0);
    for e in [
        "account_update",
        "order_trade_update",
        "listen_key_expired",
        "other",
    ] {
        metrics::counter!(USER_EVENTS, "event" => e).increment(0);
    }
    for s in ["429", "418"] {
        metrics::counter!(super::rest::RATE_LIMITED, "status" => s).increment(0);
    }
    for api in ["fapi", "eapi"] {
        metrics::gauge!(super::rest::USED_WEIGHT, "api" => api).set(0.0);
    }
    metrics::gauge!(super::rest::TIME_OFFSET).set(0.0);
    metrics::gauge!(POSITIONS, "broker" => BROKER.as_str()).set(0.0);
    price_cache::register_metrics();
}

/// Streams until `cancel` fires. Venue errors are retried with backoff, counted and
/// logged, never returned.
pub async fn run_binance(
    cfg: BinanceConfig,
    tx: mpsc::Sender<BrokerEvent>,
    stats: Arc<BinanceStats>,
    cancel: CancellationToken,
) -> Result<(), RestError> {
    let mut rest = Rest::new(&cfg.rest_url, cfg.keys.clone(), cfg.request_timeout)?;
    rest.stats = stats.rest.clone();
    register_metrics();
    let shared = Arc::new(Shared {
        account: Arc::from(cfg.account.as_str()),
        cfg: cfg.clone(),
        state: Mutex::new(State::default()),
        stats: stats.clone(),
        tx,
        options: cfg.options_rest_url.as_deref().map(|url| rest.sibling(url)),
        refresh_positions: Notify::new(),
        listen_key_invalid: AtomicBool::new(false),
        rest,
    });
    // Stopped with this run, however it ends (see `TaskGroup`).
    let mut tasks = TaskGroup::default();
    tasks.spawn(keep_time(shared.clone(), cancel.clone()));
    tasks.spawn(keep_exchange_info(shared.clone(), cancel.clone()));
    tasks.spawn(poll_positions(shared.clone(), cancel.clone()));
    tasks.spawn(keep_listen_key(shared.clone(), cancel.clone()));
    if let Some(pc) = cfg.price_cache.clone() {
        tasks.spawn(price_cache::run_price_cache(
            pc,
            stats.prices.clone(),
            cancel.clone(),
        ));
    }
    let mut public = MarketHandler::new(shared.clone(), Route::Public);
    let mut market = MarketHandler::new(shared.clone(), Route::Market);
    let mut user = UserHandler {
        shared: shared.clone(),
        listen_key: None,
        opened_at: Instant::now(),
    };
    tokio::join!(
        ws::run_ws(&cfg.public, &mut public, &stats.public, &cancel),
        ws::run_ws(&cfg.market, &mut market, &stats.market, &cancel),
        ws::run_ws(&cfg.user, &mut user, &stats.user, &cancel),
    );
    if user.listen_key.take().is_some() {
        // This service owns the key: close it so the venue stops the stream.
        let _ = shared.rest.delete_listen_key().await;
    }
    drop(tasks);
    Ok(())
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

async fn keep_time(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = match shared.rest.sync_time().await {
            Ok(_) => shared.cfg.time_sync_every,
            Err(e) => {
                shared.rest_failed("time sync", &e);
                e_wait(&e).min(shared.cfg.time_sync_every)
            }
        };
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
    }
}

async fn keep_exchange_info(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = match shared.rest.exchange_info().await {
            Ok(symbols) => {
                let mut st = shared.state.lock().expect("state lock");
                st.info = symbols.into_iter().map(|s| (s.symbol.clone(), s)).collect();
                Duration::from_secs(3600)
            }
            Err(e) => {
                shared.rest_failed("exchangeInfo", &e);
                e_wait(&e)
            }
        };
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
    }
}

/// How long to wait after a failed call: the pause when rate limited, else briefly.
fn e_wait(e: &RestError) -> Duration {
    match e {
        RestError::Paused { retry_in, .. } => *retry_in,
        _ => Duration::from_secs(2),
    }
}

async fn poll_positions(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = match reconcile(&shared).await {
            Ok(()) => shared.cfg.positions_refresh,
            Err(e) => {
                shared.rest_failed("positionRisk", &e);
                e_wait(&e).min(shared.cfg.positions_refresh)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.refresh_positions.notified() => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Reads every position and brings the book in line with it, emitting a row for
/// each one that changed (closed ones with quantity 0). Futures come from
/// positionRisk; options, when an options host is configured, from
/// `/eapi/v1/position`. A failed options read keeps the option positions as they
/// were rather than closing them.
async fn reconcile(shared: &Shared) -> Result<(), RestError> {
    let started = Instant::now();
    let (rows, bad) = shared.rest.position_risk().await?;
    shared.set_authenticated(true);
    for b in &bad {
        shared.malformed("positionRisk row", "", b);
    }
    // The totals are for operators and risk; a failed read does not hold up positions.
    match shared.rest.account().await {
        Ok(a) => shared.publish_account(a),
        Err(e) => shared.rest_failed("account", &e),
    }
    let options = match &shared.options {
        Some(rest) => read_options(shared, rest).await,
        None => None,
    };
    shared.stats.reconciles.fetch_add(1, Relaxed);
    let changed: Vec<BnQuote> = {
        let mut st = shared.state.lock().expect("state lock");
        let mut seen = BTreeSet::new();
        let mut held = Vec::new();
        for r in rows {
            if r.mark_price > Decimal::ZERO && !st.marks.contains_key(&r.symbol) {
                st.marks.insert(
                    r.symbol.clone(),
                    Arc::new(MarkPrice {
                        symbol: r.symbol.clone(),
                        // Observed now: the row's updateTime is when the position
                        // last changed, which can be weeks ago.
                        event_time: Utc::now().timestamp_millis(),
                        mark: r.mark_price,
                        index: None,
                        funding_rate: None,
                        next_funding_time: None,
                    }),
                );
            }
            held.push((r.symbol, r.position_side, r.amount, r.entry_price));
        }
        let options_known = options.is_some();
        if let Some((positions, marks)) = options {
            // `/eapi/v1/mark` lists every option: keep the held ones' only.
            let held_options: BTreeSet<&str> =
                positions.iter().map(|o| o.symbol.as_str()).collect();
            for m in marks
                .into_iter()
                .filter(|m| held_options.contains(m.symbol.as_str()))
            {
                st.option_marks
                    .entry(m.symbol.clone())
                    .or_insert_with(|| Arc::new(m));
            }
            for o in positions {
                held.push((o.symbol, "BOTH".to_owned(), o.quantity, o.entry_price));
            }
        }
        let mut changed = Vec::new();
        st.streamed.retain(|_, at| at.elapsed() < STREAMED_MEMORY);
        // What the user stream changed after this read began is newer than the read.
        let fresher: BTreeSet<PositionKey> = st
            .streamed
            .iter()
            .filter(|(_, at)| **at >= started)
            .map(|(k, _)| k.clone())
            .collect();
        for (symbol, side, amount, entry) in held {
            let key = (symbol.clone(), side.clone());
            seen.insert(key.clone());
            if fresher.contains(&key) {
                continue;
            }
            let p = st.position(&shared.account, &symbol, &side, amount, entry);
            if let Some(p) = st.upsert(p) {
                changed.push(st.quote(p));
            }
        }
        let gone: Vec<Arc<BnPosition>> = st
            .positions
            .iter()
            .filter(|(k, p)| {
                !seen.contains(*k)
                    && !fresher.contains(*k)
                    && (options_known || p.kind != BnKind::Option)
            })
            .map(|(_, p)| p.clone())
            .collect();
        for old in gone {
            let p = st.position(
                &shared.account,
                &old.symbol,
                &old.position_side,
                Decimal::ZERO,
                old.entry_price,
            );
            if let Some(p) = st.upsert(p) {
                changed.push(st.quote(p));
            }
        }
        shared.publish_positions_gauge(st.positions.len());
        changed
    };
    for q in changed {
        shared.emit(q).await;
    }
    Ok(())
}

/// Option positions and, when there are any, their marks and Greeks (so the first
/// row of a new option has Greeks, not a missing leg until the stream speaks).
/// `None` when the read failed: the caller must not take that as "no options".
async fn read_options(
    shared: &Shared,
    rest: &Rest,
) -> Option<(Vec<wire::OptionPosition>, Vec<OptionMark>)> {
    let (positions, bad) = match rest.option_positions().await {
        Ok(v) => v,
        Err(e) => {
            shared.rest_failed("option positions", &e);
            return None;
        }
    };
    for b in &bad {
        shared.malformed("option position row", "", b);
    }
    let unknown_unit = {
        let st = shared.state.lock().expect("state lock");
        positions
            .iter()
            .any(|p| !st.option_units.contains_key(&p.symbol))
    };
    if unknown_unit {
        match rest.option_units().await {
            Ok(units) => {
                let mut st = shared.state.lock().expect("state lock");
                let held: BTreeSet<&str> = positions.iter().map(|p| p.symbol.as_str()).collect();
                st.option_units = units
                    .into_iter()
                    .filter(|(s, _)| held.contains(s.as_str()))
                    .collect();
            }
            Err(e) => shared.rest_failed("option exchangeInfo", &e),
        }
    }
    let marks = if positions.is_empty() {
        Vec::new()
    } else {
        rest.option_marks().await.unwrap_or_else(|e| {
            shared.rest_failed("option marks", &e);
            Vec::new()
        })
    };
    Some((positions, marks))
}

async fn keep_listen_key(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut wait = shared.cfg.listen_key_keepalive;
    loop {
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
        wait = shared.cfg.listen_key_keepalive;
        match shared.rest.keepalive_listen_key().await {
            Ok(()) => {}
            // Held back by a rate-limit pause: keep the key alive as soon as the
            // pause ends, not a whole keepalive period later.
            Err(RestError::Paused { retry_in, .. }) => wait = retry_in,
            Err(e) => {
                shared.rest_failed("listen key keepalive", &e);
                if e.code() == Some(-1125) || e.is_auth() {
                    shared.listen_key_invalid.store(true, Relaxed);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `/public`: diff depth and book tickers.
    Public,
    /// `/market`: mark prices and option marks.
    Market,
}

struct MarketHandler {
    shared: Arc<Shared>,
    route: Route,
    subscribed: BTreeSet<String>,
    version: u64,
    next_id: u64,
    opened_at: Instant,
    last_data: Instant,
}

impl MarketHandler {
    fn new(shared: Arc<Shared>, route: Route) -> Self {
        Self {
            shared,
            route,
            subscribed: BTreeSet::new(),
            version: u64::MAX,
            next_id: 1,
            opened_at: Instant::now(),
            last_data: Instant::now(),
        }
    }

    fn wanted(&self) -> BTreeSet<String> {
        let st = self.shared.state.lock().expect("state lock");
        let (public, market) = st.streams(&self.shared.cfg.symbols);
        match self.route {
            Route::Public => public,
            Route::Market => market,
        }
    }

    /// Subscribes what is wanted and not yet subscribed, 200 streams per request.
    fn subscribe_missing(&mut self, out: &mut Outbox) {
        let version = self.shared.state.lock().expect("state lock").version;
        if version == self.version {
            return;
        }
        self.version = version;
        let missing: Vec<String> = self
            .wanted()
            .into_iter()
            .filter(|s| !self.subscribed.contains(s))
            .collect();
        for chunk in missing.chunks(200) {
            out.push(wire::subscribe(self.next_id, chunk));
            self.next_id += 1;
        }
        self.subscribed.extend(missing);
    }

    async fn on_depth(&mut self, diff: wire::DepthUpdate) {
        let symbol = diff.symbol.clone();
        let mut sync = {
            let mut books = self.shared.stats.books.lock().expect("books lock");
            books.entry(symbol.clone()).or_default().on_diff(diff)
        };
        // A snapshot can itself be older than the buffered diffs: try a few times.
        for _ in 0..3 {
            match sync {
                Sync::Applied => {
                    self.shared.stats.depth_applied.fetch_add(1, Relaxed);
                    return;
                }
                Sync::Pending => return,
                Sync::Gap | Sync::NeedSnapshot => {
                    if sync == Sync::Gap {
                        self.shared.stats.resyncs.fetch_add(1, Relaxed);
                        metrics::counter!(BOOK_RESYNCS).increment(1);
                        tracing::info!(%symbol, "Binance depth gap: resyncing the book from a snapshot");
                    }
                    if self.shared.rest.paused_for().is_some() {
                        // Rate limited: diffs keep buffering and the snapshot waits
                        // for the pause to end, rather than one held request per diff.
                        let mut books = self.shared.stats.books.lock().expect("books lock");
                        if let Some(b) = books.get_mut(&symbol) {
                            b.snapshot_failed();
                        }
                        return;
                    }
                    let snap = self
                        .shared
                        .rest
                        .depth(&symbol, self.shared.cfg.depth_limit)
                        .await;
                    let mut books = self.shared.stats.books.lock().expect("books lock");
                    let book = books.entry(symbol.clone()).or_default();
                    match snap {
                        Ok(s) => {
                            self.shared.stats.snapshots.fetch_add(1, Relaxed);
                            sync = book.on_snapshot(&s);
                        }
                        Err(e) => {
                            book.snapshot_failed();
                            drop(books);
                            self.shared.rest_failed("depth snapshot", &e);
                            return;
                        }
                    }
                }
            }
        }
        if matches!(sync, Sync::Gap | Sync::NeedSnapshot) {
            let mut books = self.shared.stats.books.lock().expect("books lock");
            if let Some(b) = books.get_mut(&symbol) {
                b.snapshot_failed();
            }
        }
    }

    async fn on_mark(&mut self, m: MarkPrice) {
        self.shared.stats.prices.update(&m.symbol, |e| {
            e.mark = Some(m.mark);
            e.mark_time = m.event_time;
        });
        let quotes: Vec<BnQuote> = {
            let mut st = self.shared.state.lock().expect("state lock");
            let m = Arc::new(m);
            st.marks.insert(m.symbol.clone(), m.clone());
            st.positions
                .values()
                .filter(|p| p.symbol == m.symbol)
                .cloned()
                .map(|p| st.quote(p))
                .collect()
        };
        for q in quotes {
            self.shared.emit(q).await;
        }
    }

    async fn on_option_marks(&mut self, marks: Vec<OptionMark>) {
        let quotes = self
            .shared
            .state
            .lock()
            .expect("state lock")
            .apply_option_marks(marks);
        for q in quotes {
            self.shared.emit(q).await;
        }
    }
}

impl WsHandler for MarketHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let path = match self.route {
            Route::Public => "public",
            Route::Market => "market",
        };
        Ok(ConnectRequest {
            url: format!("{}/{path}/ws", self.shared.cfg.ws_url),
            headers: Vec::new(),
            tls: self.shared.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        self.subscribed.clear();
        self.version = u64::MAX;
        self.opened_at = Instant::now();
        self.last_data = Instant::now();
        self.subscribe_missing(out);
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        let flow = self.on_message(text).await;
        if flow == Flow::Data {
            self.last_data = Instant::now();
        }
        flow
    }

    fn heartbeat(&mut self, _out: &mut Outbox) {}

    fn probe(&mut self, out: &mut Outbox) -> bool {
        out.push(wire::list_subscriptions(0));
        true
    }

    fn on_tick(&mut self, out: &mut Outbox) -> Flow {
        if self.opened_at.elapsed() > self.shared.cfg.max_connection_age {
            return Flow::Reconnect("max_age");
        }
        if !self.subscribed.is_empty()
            && self.last_data.elapsed() > self.shared.cfg.market_data_timeout
        {
            tracing::warn!(route = ?self.route, "Binance market socket answers but sends no data; replacing it");
            return Flow::Reconnect("no_data");
        }
        self.subscribe_missing(out);
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {
        if self.route == Route::Public {
            let mut books = self.shared.stats.books.lock().expect("books lock");
            for b in books.values_mut() {
                b.reset();
            }
        }
    }
}

impl MarketHandler {
    async fn on_message(&mut self, text: &str) -> Flow {
        match wire::parse_market(text) {
            Ok(MarketMessage::Depth(d)) => {
                self.on_depth(d).await;
                Flow::Data
            }
            Ok(MarketMessage::BookTicker(t)) => {
                self.shared.stats.prices.update(&t.symbol, |e| {
                    e.bid = Some(t.bid);
                    e.ask = Some(t.ask);
                    e.book_time = t.event_time;
                });
                Flow::Data
            }
            Ok(MarketMessage::MarkPrice(m)) => {
                self.on_mark(m).await;
                Flow::Data
            }
            Ok(MarketMessage::OptionMarks(m)) => {
                self.on_option_marks(m).await;
                Flow::Data
            }
            Ok(MarketMessage::Reply { .. }) => Flow::ProbeReply,
            Ok(MarketMessage::Error { code, msg }) => {
                tracing::warn!(code, %msg, "Binance refused a stream request");
                Flow::Continue
            }
            Err(e) => {
                self.shared.malformed("market frame", text, &e);
                Flow::Continue
            }
        }
    }
}

struct UserHandler {
    shared: Arc<Shared>,
    listen_key: Option<Secret>,
    opened_at: Instant,
}

impl UserHandler {
    async fn on_account_update(&mut self, data: wire::AccountData) {
        let quotes: Vec<BnQuote> = {
            let mut st = self.shared.state.lock().expect("state lock");
            let mut quotes = Vec::new();
            for p in data.positions {
                let p = st.position(
                    &self.shared.account,
                    &p.symbol,
                    &p.position_side,
                    p.amount,
                    p.entry_price,
                );
                let key = (p.symbol.clone(), p.position_side.clone());
                st.streamed.insert(key, Instant::now());
                if let Some(p) = st.upsert(p) {
                    quotes.push(st.quote(p));
                }
            }
            self.shared.publish_positions_gauge(st.positions.len());
            quotes
        };
        for q in quotes {
            self.shared.emit(q).await;
        }
    }
}

impl WsHandler for UserHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let stale = self.shared.listen_key_invalid.swap(false, Relaxed);
        if stale || self.listen_key.is_none() {
            let key = self.shared.rest.create_listen_key().await.map_err(|e| {
                self.shared.rest_failed("listen key", &e);
                if e.is_auth() {
                    PrepareError::NotAuthenticated(e.to_string())
                } else {
                    PrepareError::Failed(e.to_string())
                }
            })?;
            self.shared.set_authenticated(true);
            self.shared.stats.listen_keys_created.fetch_add(1, Relaxed);
            metrics::counter!(LISTEN_KEYS).increment(1);
            self.listen_key = Some(key);
        }
        let key = self.listen_key.as_ref().expect("listen key set above");
        Ok(ConnectRequest {
            url: format!(
                "{}/private/ws?listenKey={}",
                self.shared.cfg.ws_url,
                key.expose()
            ),
            headers: Vec::new(),
            tls: self.shared.cfg.tls(),
        })
    }

    fn on_open(&mut self, _out: &mut Outbox) {
        self.opened_at = Instant::now();
        // Whatever changed while we were away is not replayed: read it.
        self.shared.refresh_positions.notify_one();
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        let event = match wire::parse_user(text) {
            Ok(e) => e,
            Err(e) => {
                self.shared.malformed("user data frame", text, &e);
                return Flow::Continue;
            }
        };
        let label = match &event {
            UserEvent::AccountUpdate { .. } => "account_update",
            UserEvent::OrderTradeUpdate { .. } => "order_trade_update",
            UserEvent::ListenKeyExpired { .. } => "listen_key_expired",
            UserEvent::Other(_) => "other",
        };
        metrics::counter!(USER_EVENTS, "event" => label).increment(1);
        match event {
            UserEvent::AccountUpdate { data, .. } => {
                self.shared.stats.account_updates.fetch_add(1, Relaxed);
                self.on_account_update(data).await;
                Flow::Data
            }
            UserEvent::OrderTradeUpdate { order, .. } => {
                self.shared.stats.order_updates.fetch_add(1, Relaxed);
                tracing::debug!(symbol = %order.symbol, order_id = order.order_id,
                    status = %order.status, "Binance order update");
                Flow::Data
            }
            UserEvent::ListenKeyExpired { .. } => {
                self.shared.stats.listen_key_expiries.fetch_add(1, Relaxed);
                tracing::warn!("Binance listen key expired; creating a new one");
                self.listen_key = None;
                Flow::Reconnect("listen_key_expired")
            }
            UserEvent::Other(_) => Flow::Data,
        }
    }

    fn heartbeat(&mut self, _out: &mut Outbox) {}

    fn on_tick(&mut self, _out: &mut Outbox) -> Flow {
        if self.shared.listen_key_invalid.load(Relaxed) {
            return Flow::Reconnect("listen_key_invalid");
        }
        if self.opened_at.elapsed() > self.shared.cfg.max_connection_age {
            return Flow::Reconnect("max_age");
        }
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_underlyings() {
        assert_eq!(kind_of("BTCUSDT", None), BnKind::Perpetual);
        assert_eq!(
            kind_of("BTCUSDT_261225", None),
            BnKind::Future(NaiveDate::from_ymd_opt(2026, 12, 25).unwrap())
        );
        assert_eq!(kind_of("BTC-261225-100000-C", None), BnKind::Option);
        assert_eq!(underlying_of("BTC-261225-100000-C", None), "BTCUSDT");
        assert_eq!(underlying_of("ETHUSDT_270326", None), "ETHUSDT");
        let info = SymbolInfo {
            symbol: "BTCUSDT_270326".into(),
            pair: "BTCUSDT".into(),
            contract_type: "NEXT_QUARTER".into(),
            delivery_date: 1_806_048_000_000,
            status: "TRADING".into(),
            base_asset: "BTC".into(),
            quote_asset: "USDT".into(),
            filters: vec![],
        };
        assert!(matches!(
            kind_of("BTCUSDT_270326", Some(&info)),
            BnKind::Future(_)
        ));
    }

    #[test]
    fn upsert_reports_only_changes_and_streams_follow_positions() {
        let mut st = State::default();
        let acct: Arc<str> = "main".into();
        let p = st.position(&acct, "BTCUSDT", "BOTH", Decimal::from(2), Decimal::ONE);
        assert!(st.upsert(p.clone()).is_some());
        assert!(st.upsert(p).is_none());
        let o = st.position(
            &acct,
            "BTC-261225-100000-C",
            "BOTH",
            Decimal::from(-1),
            Decimal::ONE,
        );
        st.upsert(o);
        let (public, market) = st.streams(&["ETHUSDT".into()]);
        assert!(public.contains("btcusdt@depth@100ms") && public.contains("ethusdt@bookTicker"));
        assert!(
            market.contains("btcusdt@markPrice@1s") && market.contains("btcusdt@optionMarkPrice")
        );
        assert_eq!(public.len(), 4);
        let closed = st.position(&acct, "BTCUSDT", "BOTH", Decimal::ZERO, Decimal::ONE);
        assert_eq!(st.upsert(closed).unwrap().amount, Decimal::ZERO);
        assert_eq!(st.positions.len(), 1);
    }

    #[test]
    fn option_marks_are_kept_only_for_held_options() {
        let mut st = State::default();
        let acct: Arc<str> = "main".into();
        let held = "BTC-261225-100000-C";
        let o = st.position(&acct, held, "BOTH", Decimal::from(-1), Decimal::ONE);
        st.upsert(o);
        let mark = |symbol: String| OptionMark {
            symbol,
            event_time: 1,
            mark: Decimal::ONE,
            index: None,
            mark_iv: None,
            delta: Some(0.5),
            gamma: None,
            theta: None,
            vega: None,
        };
        // The underlying's stream carries the whole chain.
        let chain: Vec<OptionMark> = (0..500)
            .map(|i| mark(format!("BTC-261225-{}-P", 50_000 + i * 500)))
            .chain([mark(held.to_owned())])
            .collect();
        let quotes = st.apply_option_marks(chain);
        assert_eq!(quotes.len(), 1);
        assert_eq!(st.option_marks.len(), 1, "one held option, one mark kept");
        let closed = st.position(&acct, held, "BOTH", Decimal::ZERO, Decimal::ONE);
        st.upsert(closed);
        assert!(st.option_marks.is_empty(), "forgotten once no longer held");
    }
}
