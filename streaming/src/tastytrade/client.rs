//! The Tastytrade streaming client. Five loops share one book:
//!
//! - the access-token keeper (OAuth refresh ahead of the 15-minute expiry),
//! - the quote-token keeper (a fresh DXLink token well before the 24 h expiry; an
//!   open feed re-authorizes on the same socket, so no subscription is dropped),
//! - the positions poller (REST, periodically and after every account-streamer
//!   reconnect, since the streamer replays nothing),
//! - the account streamer (position changes as they happen),
//! - the DXLink feed: Greeks and Quote for every option, Quote for every underlying
//!   and stock, the whole handshake and every subscription replayed per socket.
//!
//! Both sockets run on the shared reconnecting loop ([`crate::ws`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::account_stream::{self, StreamerMessage};
use super::dxlink::{self, DxEvent, EventType, GreeksEvent, QuoteEvent, Sub};
use super::feed_session::{FeedSession, Phase, Step};
use super::rest::{self, Credentials, QuoteToken, Rest, RestError, TtPosition};
use super::symbols::parse_occ;
use super::TtQuote;
use crate::event::{Broker, BrokerEvent, BrokerPayload};
use crate::secret::Secret;
use crate::ws::{
    self, ConnectRequest, Disconnect, Flow, Outbox, PrepareError, TlsPolicy, WsConfig, WsHandler,
    WsStats,
};

use crate::broker_metrics::{self, POSITIONS, REST_ERRORS};
use crate::tasks::TaskGroup;
pub const SUBSCRIPTIONS_SENT: &str = "greekstream_tastytrade_subscriptions_sent_total";
pub const POSITION_UPDATES: &str = "greekstream_tastytrade_position_updates_total";
pub const TOKEN_REFRESHES: &str = "greekstream_tastytrade_token_refreshes_total";
const BROKER: Broker = Broker::Tastytrade;
/// The DXLink channel we open for the FEED service (client channels are odd).
const FEED_CHANNEL: u64 = 3;

#[derive(Debug, Clone)]
pub struct TastytradeConfig {
    /// REST base, `https://api.tastyworks.com`.
    pub api_url: String,
    /// Account streamer, `wss://streamer.tastyworks.com`.
    pub account_streamer_url: String,
    pub credentials: Credentials,
    /// Only for a local simulator served over TLS with a self-signed certificate.
    pub accept_invalid_certs: bool,
    pub positions_refresh: Duration,
    /// How long a quote token lives (24 h, per the API docs: the response does not say).
    pub quote_token_ttl: Duration,
    /// A new quote token is fetched once this fraction of its life has passed.
    pub quote_token_renew_at: f64,
    /// The `keepaliveTimeout` we announce; we send KEEPALIVE at half of it.
    pub keepalive_timeout: Duration,
    /// The `acceptKeepaliveTimeout` we ask of the server: it must send something at
    /// least this often, so a silent socket is one that missed it.
    pub accept_keepalive_timeout: Duration,
    pub request_timeout: Duration,
    pub feed: WsConfig,
    pub account: WsConfig,
}

impl TastytradeConfig {
    pub fn new(
        api_url: impl Into<String>,
        account_streamer_url: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        let keepalive_timeout = Duration::from_secs(60);
        let accept_keepalive_timeout = Duration::from_secs(15);
        let mut feed = WsConfig::new(BROKER);
        feed.heartbeat_interval = keepalive_timeout / 2;
        // Longer than the keepalive we asked the server for, so a quiet market is
        // never mistaken for a dead socket; probing finds a dead one much sooner.
        feed.silence_timeout = accept_keepalive_timeout + Duration::from_secs(10);
        let mut account = WsConfig::new(BROKER);
        account.socket = "account";
        account.heartbeat_interval = Duration::from_secs(20);
        // Account notifications are rare: judge this socket by heartbeat acks.
        account.silence_timeout = Duration::from_secs(65);
        Self {
            api_url: api_url.into().trim_end_matches('/').to_owned(),
            account_streamer_url: account_streamer_url.into(),
            credentials,
            accept_invalid_certs: false,
            positions_refresh: Duration::from_secs(60),
            quote_token_ttl: Duration::from_secs(24 * 3600),
            quote_token_renew_at: 0.75,
            keepalive_timeout,
            accept_keepalive_timeout,
            request_timeout: Duration::from_secs(10),
            feed,
            account,
        }
    }

    fn tls(&self) -> TlsPolicy {
        TlsPolicy::accept_invalid(self.accept_invalid_certs)
    }
}

/// Counters a test or a report can read while the client runs.
#[derive(Debug, Default)]
pub struct TastytradeStats {
    pub feed: WsStats,
    pub account: WsStats,
    pub events_sent: AtomicU64,
    pub malformed: AtomicU64,
    pub subscriptions_sent: AtomicU64,
    pub positions: AtomicU64,
    pub position_updates: AtomicU64,
    /// AUTHs sent on an open feed (token renewal or withdrawal).
    pub reauthorizations: AtomicU64,
    pub authenticated: AtomicBool,
    /// Access tokens and quote tokens fetched (shared with the REST client).
    pub rest: Arc<rest::RestStats>,
}

/// The DXLink symbol of a position: the API's own when it gives one, else built
/// from the OCC symbol (options) or the ticker (stocks).
pub fn streamer_symbol(p: &TtPosition) -> Option<String> {
    if let Some(s) = &p.streamer_symbol {
        return Some(s.clone());
    }
    match p.instrument_type.as_str() {
        "Equity Option" => parse_occ(&p.symbol).ok().map(|o| o.to_dxfeed()),
        "Equity" => Some(p.symbol.clone()),
        _ => None,
    }
}

fn is_option(p: &TtPosition) -> bool {
    p.instrument_type.ends_with("Option")
}

type PositionKey = (Arc<str>, String);

#[derive(Default)]
struct Book {
    positions: HashMap<PositionKey, Arc<TtPosition>>,
    /// Positions by DXLink symbol.
    by_symbol: HashMap<String, Vec<Arc<TtPosition>>>,
    wanted: BTreeSet<Sub>,
    accounts: Vec<String>,
    version: u64,
    /// When the account streamer last changed each position.
    streamed: HashMap<PositionKey, Instant>,
}

impl Book {
    fn reindex(&mut self) {
        let mut by_symbol: HashMap<String, Vec<Arc<TtPosition>>> = HashMap::new();
        let mut wanted = BTreeSet::new();
        for p in self.positions.values() {
            let Some(sym) = streamer_symbol(p) else {
                continue;
            };
            if is_option(p) {
                wanted.insert((EventType::Greeks, sym.clone()));
                wanted.insert((EventType::Quote, p.underlying_symbol.clone()));
            }
            wanted.insert((EventType::Quote, sym.clone()));
            by_symbol.entry(sym).or_default().push(p.clone());
        }
        self.by_symbol = by_symbol;
        self.wanted = wanted;
        self.version += 1;
    }

    /// Every position of `account` as a REST read that began at `read_started`
    /// reports it. A position the account streamer changed after that instant keeps
    /// the streamed state: the read may predate the change and must not revert it.
    /// Returns the positions whose quantity changed, closes included (at quantity 0),
    /// so their rows can say so (no market data will come for a closed one).
    fn replace_account(
        &mut self,
        account: &str,
        positions: Vec<TtPosition>,
        read_started: Instant,
    ) -> Vec<Arc<TtPosition>> {
        let before: HashMap<PositionKey, Arc<TtPosition>> = self
            .positions
            .iter()
            .filter(|((a, _), _)| &**a == account)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut after: HashMap<PositionKey, Arc<TtPosition>> = positions
            .into_iter()
            .filter(|p| !p.quantity.is_zero())
            .map(|p| ((p.account.clone(), p.symbol.clone()), Arc::new(p)))
            .collect();
        self.streamed.retain(|_, at| at.elapsed() < STREAMED_MEMORY);
        for (key, at) in &self.streamed {
            if &*key.0 == account && *at >= read_started {
                match before.get(key) {
                    Some(p) => after.insert(key.clone(), p.clone()),
                    None => after.remove(key),
                };
            }
        }
        if before == after {
            return Vec::new();
        }
        let mut changed: Vec<Arc<TtPosition>> = after
            .iter()
            .filter(|(k, p)| before.get(*k).is_some_and(|b| b.quantity != p.quantity))
            .map(|(_, p)| p.clone())
            .collect();
        changed.extend(
            before
                .iter()
                .filter(|(k, _)| !after.contains_key(*k))
                .map(|(_, p)| {
                    Arc::new(TtPosition {
                        quantity: Decimal::ZERO,
                        ..TtPosition::clone(p)
                    })
                }),
        );
        self.positions.retain(|(a, _), _| &**a != account);
        self.positions.extend(after);
        self.reindex();
        changed
    }

    /// One position as the account streamer pushed it. Returns it (closed ones too,
    /// so their last row can say so).
    fn upsert(&mut self, p: TtPosition) -> Arc<TtPosition> {
        let key = (p.account.clone(), p.symbol.clone());
        self.streamed.insert(key.clone(), Instant::now());
        let p = Arc::new(p);
        if p.quantity.is_zero() {
            self.positions.remove(&key);
        } else {
            self.positions.insert(key, p.clone());
        }
        self.reindex();
        p
    }
}

/// How long a streamed change is remembered to protect it from older REST reads:
/// far longer than any one read takes.
const STREAMED_MEMORY: Duration = Duration::from_secs(600);

/// The latest market data per DXLink symbol, shared by both sockets.
#[derive(Default)]
struct Market {
    greeks: HashMap<String, Arc<GreeksEvent>>,
    quotes: HashMap<String, Arc<QuoteEvent>>,
}

impl Market {
    fn quote_for(&self, position: Arc<TtPosition>) -> TtQuote {
        let sym = streamer_symbol(&position).unwrap_or_default();
        self.quote_for_symbol(&sym, position)
    }

    /// As [`Market::quote_for`], when the caller already knows the DXLink symbol
    /// (the per-event path: no symbol is rebuilt).
    fn quote_for_symbol(&self, sym: &str, position: Arc<TtPosition>) -> TtQuote {
        TtQuote {
            greeks: is_option(&position)
                .then(|| self.greeks.get(sym).cloned())
                .flatten(),
            quote: self.quotes.get(sym).cloned(),
            underlying: self.quotes.get(&position.underlying_symbol).cloned(),
            position,
        }
    }
}

struct Shared {
    book: Mutex<Book>,
    market: Mutex<Market>,
    /// The current quote token and a generation number that changes with it.
    quote_token: Mutex<Option<(QuoteToken, u64)>>,
    stats: Arc<TastytradeStats>,
    tx: mpsc::Sender<BrokerEvent>,
    /// Wakes the positions poller (after an account-streamer reconnect).
    refresh_positions: Notify,
}

impl Shared {
    async fn emit(&self, quote: TtQuote) -> bool {
        let event = BrokerEvent {
            broker: BROKER,
            account: quote.position.account.clone(),
            received_at: Utc::now(),
            payload: BrokerPayload::Tastytrade(quote),
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
}

/// Registers the Tastytrade source's metrics at zero.
pub fn register_metrics() {
    ws::register_metrics(BROKER, "market_data");
    ws::register_metrics(BROKER, "account");
    metrics::counter!(REST_ERRORS, "broker" => BROKER.as_str()).increment(0);
    metrics::counter!(SUBSCRIPTIONS_SENT, "broker" => BROKER.as_str()).increment(0);
    metrics::counter!(POSITION_UPDATES, "broker" => BROKER.as_str()).increment(0);
    for t in ["access", "quote"] {
        metrics::counter!(TOKEN_REFRESHES, "token" => t).increment(0);
    }
    metrics::gauge!(POSITIONS, "broker" => BROKER.as_str()).set(0.0);
}

/// Streams until `cancel` fires. Venue errors are retried with backoff, counted and
/// logged, never returned.
pub async fn run_tastytrade(
    cfg: TastytradeConfig,
    tx: mpsc::Sender<BrokerEvent>,
    stats: Arc<TastytradeStats>,
    cancel: CancellationToken,
) -> Result<(), RestError> {
    let mut rest = Rest::new(
        &cfg.api_url,
        cfg.credentials.clone(),
        cfg.accept_invalid_certs,
        cfg.request_timeout,
    )?;
    rest.stats = stats.rest.clone();
    register_metrics();
    let shared = Arc::new(Shared {
        book: Mutex::new(Book::default()),
        market: Mutex::new(Market::default()),
        quote_token: Mutex::new(None),
        stats: stats.clone(),
        tx,
        refresh_positions: Notify::new(),
    });
    // Stopped with this run, however it ends (see `TaskGroup`).
    let mut tasks = TaskGroup::default();
    tasks.spawn(keep_access_token(
        rest.clone(),
        shared.clone(),
        cancel.clone(),
    ));
    tasks.spawn(keep_quote_token(
        rest.clone(),
        cfg.quote_token_ttl.mul_f64(cfg.quote_token_renew_at),
        shared.clone(),
        cancel.clone(),
    ));
    tasks.spawn(poll_positions(
        rest.clone(),
        cfg.positions_refresh,
        shared.clone(),
        cancel.clone(),
    ));
    let mut account = AccountHandler {
        rest: rest.clone(),
        cfg: cfg.clone(),
        shared: shared.clone(),
        token: Secret::default(),
        next_request: 1,
        force_token: false,
    };
    let mut feed = FeedHandler {
        rest,
        cfg: cfg.clone(),
        shared: shared.clone(),
        session: FeedSession::new(FEED_CHANNEL),
        token_generation: 0,
        force_token: false,
        subscribed: BTreeSet::new(),
        book_version: u64::MAX,
        wanted: BTreeSet::new(),
    };
    let account_cancel = cancel.clone();
    let account_stats = stats.clone();
    let account_task = async move {
        ws::run_ws(
            &account.cfg.account.clone(),
            &mut account,
            &account_stats.account,
            &account_cancel,
        )
        .await
    };
    tokio::join!(
        account_task,
        ws::run_ws(&cfg.feed, &mut feed, &stats.feed, &cancel)
    );
    drop(tasks);
    Ok(())
}

async fn keep_access_token(rest: Rest, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = rest.access_token_due_in().await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        let before = rest.stats.access_tokens.load(Relaxed);
        match rest.access_token(false).await {
            Ok(_) => {
                shared.set_authenticated(true);
                if rest.stats.access_tokens.load(Relaxed) != before {
                    metrics::counter!(TOKEN_REFRESHES, "token" => "access").increment(1);
                }
            }
            Err(err) => {
                if matches!(err, RestError::Unauthorized { .. }) {
                    shared.set_authenticated(false);
                }
                tracing::warn!(error = %err, "Tastytrade access token refresh failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    }
}

async fn fetch_quote_token(rest: &Rest, shared: &Shared) -> Result<(QuoteToken, u64), RestError> {
    let token = rest.quote_token().await?;
    // An authenticated REST call succeeded: the credentials work.
    shared.set_authenticated(true);
    metrics::counter!(TOKEN_REFRESHES, "token" => "quote").increment(1);
    let mut slot = shared.quote_token.lock().expect("token lock");
    let generation = slot.as_ref().map_or(1, |(_, g)| g + 1);
    *slot = Some((token.clone(), generation));
    Ok((token, generation))
}

async fn keep_quote_token(
    rest: Rest,
    renew_after: Duration,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut wait = renew_after;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        wait = match fetch_quote_token(&rest, &shared).await {
            Ok(_) => renew_after,
            Err(err) => {
                tracing::warn!(error = %err, "Tastytrade quote token renewal failed; retrying");
                Duration::from_secs(2).min(renew_after)
            }
        };
    }
}

async fn poll_positions(
    rest: Rest,
    every: Duration,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        match read_positions(&rest, &shared).await {
            Ok(()) => failures = 0,
            Err(err) => {
                failures += 1;
                if matches!(err, RestError::Unauthorized { .. }) {
                    shared.set_authenticated(false);
                }
                if failures <= 3 || failures % 60 == 0 {
                    tracing::warn!(error = %err, failures, "Tastytrade positions refresh failed; keeping the last book");
                }
            }
        }
        // Retry soon after a failure rather than a whole period later.
        let wait = if (1..=3).contains(&failures) {
            Duration::from_millis(500)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.refresh_positions.notified() => {}
            _ = cancel.cancelled() => return,
        }
    }
}

async fn read_positions(rest: &Rest, shared: &Shared) -> Result<(), RestError> {
    let started = Instant::now();
    let accounts = rest.accounts().await?;
    shared.set_authenticated(true);
    let mut fetched = Vec::with_capacity(accounts.len());
    for account in &accounts {
        let (good, bad) = rest.positions(account).await?;
        for b in &bad {
            shared.malformed("position row", "", b);
        }
        fetched.push((account.clone(), good));
    }
    let changed = {
        let mut book = shared.book.lock().expect("book lock");
        let before = book.version;
        let mut changed = Vec::new();
        for (account, positions) in fetched {
            changed.extend(book.replace_account(&account, positions, started));
        }
        book.positions
            .retain(|(a, _), _| accounts.iter().any(|x| **a == **x));
        book.accounts = accounts;
        let n = book.positions.len();
        shared.stats.positions.store(n as u64, Relaxed);
        metrics::gauge!(POSITIONS, "broker" => BROKER.as_str()).set(n as f64);
        if book.version != before {
            tracing::info!(
                positions = n,
                subscriptions = book.wanted.len(),
                "Tastytrade positions changed"
            );
        }
        changed
    };
    let quotes: Vec<TtQuote> = {
        let wanted: std::collections::HashSet<String> = shared
            .book
            .lock()
            .expect("book lock")
            .wanted
            .iter()
            .map(|(_, sym)| sym.clone())
            .collect();
        let mut market = shared.market.lock().expect("market lock");
        let quotes = changed.into_iter().map(|p| market.quote_for(p)).collect();
        // Market data of symbols no longer wanted is dropped: memory follows the
        // holdings, not everything ever held.
        market.greeks.retain(|sym, _| wanted.contains(sym));
        market.quotes.retain(|sym, _| wanted.contains(sym));
        quotes
    };
    for quote in quotes {
        if !shared.emit(quote).await {
            break;
        }
    }
    Ok(())
}

impl Shared {
    /// A connection cannot be prepared: refused credentials are a state to wait
    /// in, anything else is retried with backoff.
    fn prepare_error(&self, err: RestError) -> PrepareError {
        match err {
            RestError::Unauthorized { .. } => {
                self.set_authenticated(false);
                PrepareError::NotAuthenticated(err.to_string())
            }
            other => PrepareError::Failed(other.to_string()),
        }
    }
}

struct FeedHandler {
    rest: Rest,
    cfg: TastytradeConfig,
    shared: Arc<Shared>,
    session: FeedSession,
    /// The quote token this socket authorized with.
    token_generation: u64,
    /// The server refused our token: fetch a new one before the next connect.
    force_token: bool,
    /// Subscriptions on the current socket.
    subscribed: BTreeSet<Sub>,
    book_version: u64,
    wanted: BTreeSet<Sub>,
}

impl FeedHandler {
    fn current_token(&self) -> Option<(QuoteToken, u64)> {
        self.shared.quote_token.lock().expect("token lock").clone()
    }

    fn refresh_wanted(&mut self) {
        let book = self.shared.book.lock().expect("book lock");
        if book.version != self.book_version {
            self.book_version = book.version;
            self.wanted = book.wanted.clone();
        }
    }

    fn authorize(&mut self, out: &mut Outbox) {
        if let Some((token, generation)) = self.current_token() {
            self.token_generation = generation;
            out.push(dxlink::auth(token.token.expose()));
        }
    }

    fn send_subscriptions(&mut self, subs: &[Sub], out: &mut Outbox) {
        for msg in dxlink::subscriptions(FEED_CHANNEL, subs) {
            out.push(msg);
        }
        self.shared
            .stats
            .subscriptions_sent
            .fetch_add(subs.len() as u64, Relaxed);
        metrics::counter!(SUBSCRIPTIONS_SENT, "broker" => BROKER.as_str())
            .increment(subs.len() as u64);
    }

    fn subscribe_all(&mut self, out: &mut Outbox) {
        self.refresh_wanted();
        self.subscribed = self.wanted.clone();
        let all: Vec<Sub> = self.subscribed.iter().cloned().collect();
        self.send_subscriptions(&all, out);
    }

    async fn dispatch(&mut self, events: Vec<DxEvent>) {
        for event in events {
            let quotes: Vec<TtQuote> = {
                let book = self.shared.book.lock().expect("book lock");
                let mut market = self.shared.market.lock().expect("market lock");
                let (symbol, options) = match event {
                    DxEvent::Greeks(g) => {
                        let symbol = g.symbol.clone();
                        market.greeks.insert(symbol.clone(), Arc::new(g));
                        (symbol, true)
                    }
                    DxEvent::Quote(q) => {
                        let symbol = q.symbol.clone();
                        market.quotes.insert(symbol.clone(), Arc::new(q));
                        (symbol, false)
                    }
                };
                // Options are emitted on their Greeks; stocks and futures on quotes.
                book.by_symbol
                    .get(&symbol)
                    .into_iter()
                    .flatten()
                    .filter(|p| is_option(p) == options)
                    .map(|p| market.quote_for_symbol(&symbol, p.clone()))
                    .collect()
            };
            for q in quotes {
                if !self.shared.emit(q).await {
                    return;
                }
            }
        }
    }
}

impl WsHandler for FeedHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let token = match self.current_token() {
            Some(t) if !std::mem::take(&mut self.force_token) => t.0,
            _ => {
                fetch_quote_token(&self.rest, &self.shared)
                    .await
                    .map_err(|e| self.shared.prepare_error(e))?
                    .0
            }
        };
        Ok(ConnectRequest {
            url: token.dxlink_url,
            headers: Vec::new(),
            tls: self.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        self.session = FeedSession::new(FEED_CHANNEL);
        self.subscribed.clear();
        out.push(dxlink::setup(
            self.cfg.keepalive_timeout.as_secs(),
            self.cfg.accept_keepalive_timeout.as_secs(),
        ));
    }

    async fn on_text(&mut self, text: &str, out: &mut Outbox) -> Flow {
        let msg = match dxlink::parse_message(text) {
            Ok(m) => m,
            Err(err) => {
                self.shared.malformed("DXLink message", text, &err);
                return Flow::Continue;
            }
        };
        match self.session.on_message(msg) {
            Step::Nothing => Flow::Continue,
            Step::Send(msgs) => {
                for m in msgs {
                    out.push(m);
                }
                Flow::Continue
            }
            Step::Authorize => {
                self.authorize(out);
                Flow::Continue
            }
            Step::Subscribe => {
                out.push(dxlink::feed_setup(FEED_CHANNEL));
                self.subscribe_all(out);
                Flow::Continue
            }
            Step::Resubscribe => {
                let all: Vec<Sub> = self.subscribed.iter().cloned().collect();
                self.send_subscriptions(&all, out);
                Flow::Continue
            }
            Step::Reauthorize => {
                tracing::info!("DXLink withdrew authorization; authorizing with a fresh token");
                match fetch_quote_token(&self.rest, &self.shared).await {
                    Ok(_) => {
                        self.authorize(out);
                        self.session.reauthorizing();
                        self.shared.stats.reauthorizations.fetch_add(1, Relaxed);
                        Flow::Continue
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot fetch a new quote token");
                        Flow::Reconnect("token_refresh_failed")
                    }
                }
            }
            Step::Data(batch) => {
                for err in &batch.skipped {
                    self.shared.malformed("DXLink event", text, err);
                }
                let had_events = !batch.events.is_empty();
                self.dispatch(batch.events).await;
                if had_events {
                    Flow::Data
                } else {
                    Flow::Continue
                }
            }
            Step::Malformed(why) => {
                self.shared.malformed("DXLink message", text, &why);
                Flow::Continue
            }
            Step::Alive => Flow::ProbeReply,
            Step::Reconnect(reason) => {
                if reason == "auth_rejected" {
                    self.force_token = true;
                }
                Flow::Reconnect(reason)
            }
        }
    }

    fn heartbeat(&mut self, out: &mut Outbox) {
        out.push(dxlink::keepalive());
    }

    fn probe(&mut self, out: &mut Outbox) -> bool {
        out.push(dxlink::keepalive());
        true
    }

    fn on_tick(&mut self, out: &mut Outbox) -> Flow {
        if self.session.phase != Phase::Streaming {
            return Flow::Continue;
        }
        // A renewed quote token: authorize again on this socket, keeping the channel.
        if let Some((token, generation)) = self.current_token() {
            if generation != self.token_generation {
                self.token_generation = generation;
                out.push(dxlink::auth(token.token.expose()));
                self.session.reauthorizing();
                self.shared.stats.reauthorizations.fetch_add(1, Relaxed);
                return Flow::Continue;
            }
        }
        self.refresh_wanted();
        let add: Vec<Sub> = self.wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<Sub> = self.subscribed.difference(&self.wanted).cloned().collect();
        if !add.is_empty() {
            self.send_subscriptions(&add, out);
        }
        if !remove.is_empty() {
            for msg in dxlink::unsubscriptions(FEED_CHANNEL, &remove) {
                out.push(msg);
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            self.subscribed = self.wanted.clone();
        }
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {
        self.subscribed.clear();
    }
}

struct AccountHandler {
    rest: Rest,
    cfg: TastytradeConfig,
    shared: Arc<Shared>,
    token: Secret,
    next_request: u64,
    force_token: bool,
}

impl AccountHandler {
    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    async fn position(&mut self, data: &serde_json::Value, text: &str) -> Flow {
        let p = match rest::parse_position(data) {
            Ok(p) => p,
            Err(err) => {
                self.shared.malformed("CurrentPosition", text, &err);
                return Flow::Continue;
            }
        };
        let quote = {
            let mut book = self.shared.book.lock().expect("book lock");
            let p = book.upsert(p);
            self.shared
                .stats
                .positions
                .store(book.positions.len() as u64, Relaxed);
            self.shared.market.lock().expect("market lock").quote_for(p)
        };
        self.shared.stats.position_updates.fetch_add(1, Relaxed);
        metrics::counter!(POSITION_UPDATES, "broker" => BROKER.as_str()).increment(1);
        tracing::info!(
            account = %quote.position.account,
            symbol = %quote.position.symbol,
            quantity = %quote.position.quantity,
            "Tastytrade position changed"
        );
        self.shared.emit(quote).await;
        Flow::Data
    }
}

impl WsHandler for AccountHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        self.token = self
            .rest
            .access_token(std::mem::take(&mut self.force_token))
            .await
            .map_err(|e| self.shared.prepare_error(e))?;
        let known = self.shared.book.lock().expect("book lock").accounts.clone();
        if known.is_empty() {
            let accounts = self
                .rest
                .accounts()
                .await
                .map_err(|e| self.shared.prepare_error(e))?;
            self.shared.book.lock().expect("book lock").accounts = accounts;
        }
        Ok(ConnectRequest {
            url: self.cfg.account_streamer_url.clone(),
            headers: Vec::new(),
            tls: self.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        let accounts = self.shared.book.lock().expect("book lock").accounts.clone();
        let id = self.request_id();
        out.push(account_stream::connect(self.token.expose(), &accounts, id));
        // The streamer replays nothing: re-read positions for whatever we missed.
        self.shared.refresh_positions.notify_one();
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        let messages = match account_stream::parse(text) {
            Ok(m) => m,
            Err(err) => {
                self.shared
                    .malformed("account streamer message", text, &err);
                return Flow::Continue;
            }
        };
        let mut flow = Flow::Continue;
        for m in messages {
            let f = match m {
                StreamerMessage::Ack {
                    ok: true, action, ..
                } if action == "heartbeat" => Flow::ProbeReply,
                StreamerMessage::Ack { ok: true, .. } => Flow::Continue,
                StreamerMessage::Ack {
                    ok: false,
                    action,
                    message,
                    ..
                } => {
                    tracing::warn!(%action, %message, "Tastytrade account streamer refused an action");
                    self.force_token = true;
                    Flow::Reconnect("action_refused")
                }
                StreamerMessage::Notification { kind, data } if kind == "CurrentPosition" => {
                    self.position(&data, text).await
                }
                StreamerMessage::Notification { kind, .. } => {
                    tracing::debug!(%kind, "account notification ignored");
                    Flow::Continue
                }
            };
            flow = match (flow, f) {
                (Flow::Reconnect(r), _) | (_, Flow::Reconnect(r)) => Flow::Reconnect(r),
                (Flow::Data, _) | (_, Flow::Data) => Flow::Data,
                (Flow::ProbeReply, _) | (_, Flow::ProbeReply) => Flow::ProbeReply,
                _ => Flow::Continue,
            };
        }
        flow
    }

    fn heartbeat(&mut self, out: &mut Outbox) {
        let id = self.request_id();
        out.push(account_stream::heartbeat(self.token.expose(), id));
    }

    fn probe(&mut self, out: &mut Outbox) -> bool {
        self.heartbeat(out);
        true
    }

    fn on_tick(&mut self, _out: &mut Outbox) -> Flow {
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn pos(account: &str, symbol: &str, kind: &str, und: &str, qty: i64) -> TtPosition {
        TtPosition {
            account: Arc::from(account),
            symbol: symbol.into(),
            instrument_type: kind.into(),
            underlying_symbol: und.into(),
            quantity: Decimal::from(qty),
            multiplier: Decimal::ONE_HUNDRED,
            streamer_symbol: None,
            expires_at: None,
        }
    }

    #[test]
    fn the_book_wants_greeks_for_options_and_quotes_for_underlyings() {
        let mut b = Book::default();
        b.replace_account(
            "A",
            vec![
                pos("A", "SPY   260619C00500000", "Equity Option", "SPY", -2),
                pos("A", "AAPL", "Equity", "AAPL", 100),
                pos("A", "QQQ   260619P00400000", "Equity Option", "QQQ", 0),
            ],
            Instant::now(),
        );
        let wanted: Vec<String> = b
            .wanted
            .iter()
            .map(|(t, s)| format!("{}:{s}", t.as_str()))
            .collect();
        assert_eq!(
            wanted,
            vec![
                "Greeks:.SPY260619C500",
                "Quote:.SPY260619C500",
                "Quote:AAPL",
                "Quote:SPY"
            ]
        );
        let v = b.version;
        b.replace_account(
            "A",
            vec![
                pos("A", "SPY   260619C00500000", "Equity Option", "SPY", -2),
                pos("A", "AAPL", "Equity", "AAPL", 100),
            ],
            Instant::now(),
        );
        assert_eq!(b.version, v, "same book, same version");
        let closed = b.upsert(pos("A", "AAPL", "Equity", "AAPL", 0));
        assert!(closed.quantity.is_zero());
        assert!(!b.wanted.contains(&(EventType::Quote, "AAPL".into())));
        assert_eq!(b.positions.len(), 1);
        b.replace_account(
            "B",
            vec![pos("B", "AAPL", "Equity", "AAPL", 5)],
            Instant::now(),
        );
        assert_eq!(b.positions.len(), 2, "accounts are replaced independently");
    }

    #[test]
    fn a_rest_read_reports_closes_and_quantity_changes_at_their_new_quantity() {
        let mut b = Book::default();
        let spy = "SPY   260619C00500000";
        b.replace_account(
            "A",
            vec![
                pos("A", spy, "Equity Option", "SPY", -2),
                pos("A", "AAPL", "Equity", "AAPL", 100),
            ],
            Instant::now(),
        );
        let changed = b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 50)],
            Instant::now(),
        );
        let mut seen: Vec<(String, Decimal)> = changed
            .iter()
            .map(|p| (p.symbol.clone(), p.quantity))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("AAPL".to_owned(), Decimal::from(50)),
                (spy.to_owned(), Decimal::ZERO)
            ]
        );
        assert!(b
            .replace_account(
                "A",
                vec![pos("A", "AAPL", "Equity", "AAPL", 50)],
                Instant::now()
            )
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rest_read_older_than_a_streamed_change_never_reverts_it() {
        let mut b = Book::default();
        b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 100)],
            Instant::now(),
        );
        // The read starts, the streamer reports a fill, then the read returns what
        // the venue held when it started.
        let read_started = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        b.upsert(pos("A", "AAPL", "Equity", "AAPL", 150));
        b.upsert(pos("A", "MSFT", "Equity", "MSFT", 10));
        let changed = b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 100)],
            read_started,
        );
        assert!(changed.is_empty(), "{changed:?}");
        let qty = |b: &Book, s: &str| {
            b.positions
                .get(&(Arc::from("A"), s.to_owned()))
                .map(|p| p.quantity)
        };
        assert_eq!(qty(&b, "AAPL"), Some(Decimal::from(150)));
        assert_eq!(qty(&b, "MSFT"), Some(Decimal::from(10)));
        // A read that starts after the change is the truth again.
        tokio::time::advance(Duration::from_millis(10)).await;
        let changed = b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 150)],
            Instant::now(),
        );
        assert_eq!(changed.len(), 1, "MSFT closed");
        assert_eq!(qty(&b, "MSFT"), None);
    }
}
