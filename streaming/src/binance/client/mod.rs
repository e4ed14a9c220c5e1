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
//!   whose latest values land in [`BinanceStats::prices`] for the binary to publish.
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
use super::prices::Prices;
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
mod keepers;
mod market;
mod state;
mod user;

use keepers::*;
use market::*;
use state::*;
use user::*;

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
    /// The options API host (`https://eapi.binance.com`); `None` reads no option
    /// positions.
    pub options_rest_url: Option<String>,
    pub public: WsConfig,
    pub market: WsConfig,
    pub user: WsConfig,
    /// Where the user stream's order updates go (the trading engine), and a word on
    /// every (re)connect, after which what the stream missed must be read back.
    pub orders: Option<mpsc::Sender<OrderFeed>>,
}

/// What the user stream tells the trading engine.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderFeed {
    /// The user socket (re)connected: events may have been missed while it was down.
    Opened,
    Update {
        event_time: i64,
        order: Box<wire::OrderUpdate>,
    },
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
            options_rest_url: None,
            public,
            market,
            user,
            orders: None,
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
