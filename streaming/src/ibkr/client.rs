//! The IBKR streaming client: session keepalive and positions over REST, market data
//! over the shared reconnecting WebSocket ([`crate::ws`]).
//!
//! Three loops share one book: the session keeper (`/tickle` every minute, auth
//! status), the positions poller (every page of every account, periodically) and the
//! WebSocket handler, which subscribes `smd` for every option, its underlying and
//! every other holding, renews them before the server-side expiry, re-sends all of
//! them after a reconnect, and re-sends one whose data went stale.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{self, AuthStatus, IbkrPosition, MdFields, ServerFrame, Tickle};
use super::IbkrQuote;
use crate::event::{Broker, BrokerEvent, BrokerPayload};
use crate::ws::{
    self, ConnectRequest, Disconnect, Flow, Outbox, PrepareError, TlsPolicy, WsConfig, WsHandler,
    WsStats,
};

use crate::broker_metrics;
pub use crate::broker_metrics::{AUTHENTICATED, POSITIONS, REST_ERRORS};
use crate::tasks::TaskGroup;
pub const SUBSCRIPTIONS_SENT: &str = "greekstream_ibkr_subscriptions_sent_total";

#[derive(Debug, Clone)]
pub struct IbkrConfig {
    /// The gateway, e.g. `https://localhost:5000`; REST is under `/v1/api`, the
    /// WebSocket at `/v1/api/ws`.
    pub gateway_url: String,
    /// Accept the gateway's self-signed certificate. Off unless configured.
    pub accept_invalid_certs: bool,
    pub tickle_interval: Duration,
    pub positions_refresh: Duration,
    /// Re-send `smd` this long after the last send: the gateway expires streams
    /// after 10–15 minutes.
    pub renew_after: Duration,
    /// A subscription with no data for this long is sent again.
    pub stale_after: Duration,
    pub request_timeout: Duration,
    pub ws: WsConfig,
}

impl IbkrConfig {
    pub fn new(gateway_url: impl Into<String>) -> Self {
        let mut ws = WsConfig::new(Broker::Ibkr);
        // The gateway sends `hb` every ~10 s; two missed ones mean the socket is dead.
        // Where it answers `tic`, a silent socket is found in ~4 s by probing.
        ws.silence_timeout = Duration::from_secs(25);
        ws.heartbeat_interval = Duration::from_secs(30);
        Self {
            gateway_url: gateway_url.into().trim_end_matches('/').to_owned(),
            accept_invalid_certs: false,
            tickle_interval: Duration::from_secs(60),
            positions_refresh: Duration::from_secs(60),
            renew_after: Duration::from_secs(9 * 60),
            stale_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            ws,
        }
    }

    fn rest_base(&self) -> String {
        format!("{}/v1/api", self.gateway_url)
    }

    fn ws_url(&self) -> String {
        let url = &self.gateway_url;
        let ws = if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url.clone()
        };
        format!("{ws}/v1/api/ws")
    }

    fn tls(&self) -> TlsPolicy {
        TlsPolicy::accept_invalid(self.accept_invalid_certs)
    }
}

/// Counters a test or a report can read while the client runs.
#[derive(Debug, Default)]
pub struct IbkrStats {
    pub ws: WsStats,
    pub events_sent: AtomicU64,
    pub malformed_frames: AtomicU64,
    pub subscriptions_sent: AtomicU64,
    pub positions: AtomicU64,
    pub authenticated: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{route}: HTTP {status}")]
    Status { route: String, status: u16 },
    #[error("{route}: {message}")]
    Transport { route: String, message: String },
    #[error("{route}: unexpected body: {message}")]
    Body { route: String, message: String },
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The gateway's REST routes we use.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    pub fn new(cfg: &IbkrConfig) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(cfg.accept_invalid_certs)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("greekstream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RestError::Transport {
                route: "client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: cfg.rest_base(),
        })
    }

    async fn call(&self, post: bool, route: &str) -> Result<Value, RestError> {
        let url = format!("{}{route}", self.base);
        let req = if post {
            self.http.post(&url).json(&serde_json::json!({}))
        } else {
            self.http.get(&url)
        };
        // Errors name the route, never the full URL: a hosted gateway URL can carry tokens.
        let transport = |e: reqwest::Error| RestError::Transport {
            route: route.to_owned(),
            message: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            metrics::counter!(REST_ERRORS, "broker" => "ibkr").increment(1);
            return Err(RestError::Status {
                route: route.to_owned(),
                status: status.as_u16(),
            });
        }
        resp.json().await.map_err(|e| RestError::Body {
            route: route.to_owned(),
            message: e.without_url().to_string(),
        })
    }

    pub async fn tickle(&self) -> Result<Tickle, RestError> {
        let v = self.call(true, "/tickle").await?;
        serde_json::from_value(v).map_err(|e| RestError::Body {
            route: "/tickle".into(),
            message: e.to_string(),
        })
    }

    pub async fn auth_status(&self) -> Result<AuthStatus, RestError> {
        let v = self.call(true, "/iserver/auth/status").await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    pub async fn reauthenticate(&self) -> Result<(), RestError> {
        self.call(true, "/iserver/reauthenticate").await.map(drop)
    }

    /// Every position of every account, all pages.
    pub async fn all_positions(&self) -> Result<Vec<IbkrPosition>, RestError> {
        // A brokerage session needs `/iserver/accounts` first; portfolio routes need
        // `/portfolio/accounts` first.
        self.call(false, "/iserver/accounts").await?;
        let accounts = self.call(false, "/portfolio/accounts").await?;
        let accounts = wire::parse_accounts(&accounts).ok_or_else(|| RestError::Body {
            route: "/portfolio/accounts".into(),
            message: "not a JSON array".into(),
        })?;
        let mut out = Vec::new();
        for acct in accounts {
            // Keep reading until an empty page: the page size is not reliably documented.
            for page in 0..1000 {
                let route = format!("/portfolio/{acct}/positions/{page}");
                let body = self.call(false, &route).await?;
                let (good, bad) =
                    wire::parse_positions(&body, &acct).map_err(|e| RestError::Body {
                        route: route.clone(),
                        message: e.to_string(),
                    })?;
                for b in &bad {
                    ws::count_malformed(Broker::Ibkr);
                    tracing::warn!(account = %acct, page, error = %b, "position row skipped");
                }
                if good.is_empty() && bad.is_empty() {
                    break;
                }
                out.extend(good);
            }
        }
        Ok(out)
    }
}

/// What every loop of the client shares.
#[derive(Default)]
struct Book {
    /// Positions by conid (one conid can be held in several accounts).
    by_conid: HashMap<i64, Vec<Arc<IbkrPosition>>>,
    /// Every conid we want market data for.
    wanted: BTreeSet<i64>,
    version: u64,
}

impl Book {
    /// Replaces the book with a fresh REST read. Returns the positions whose
    /// quantity the read changed, closes included (at quantity 0): streamed market
    /// data only speaks for positions still held, so these must be emitted here or
    /// a close would never reach the current views.
    fn replace(&mut self, positions: Vec<IbkrPosition>) -> Vec<Arc<IbkrPosition>> {
        let held = |b: &HashMap<i64, Vec<Arc<IbkrPosition>>>| {
            b.values()
                .flatten()
                .map(|p| ((p.account.clone(), p.conid), p.clone()))
                .collect::<HashMap<_, _>>()
        };
        let before = held(&self.by_conid);
        let mut by_conid: HashMap<i64, Vec<Arc<IbkrPosition>>> = HashMap::new();
        let mut wanted = BTreeSet::new();
        for p in positions {
            // Expired 0DTE options linger with position 0 for a day: nothing to stream.
            if p.position.is_zero() {
                continue;
            }
            wanted.insert(p.conid);
            if let Some(u) = p.und_conid {
                wanted.insert(u);
            }
            by_conid.entry(p.conid).or_default().push(Arc::new(p));
        }
        if wanted != self.wanted || by_conid != self.by_conid {
            self.version += 1;
        }
        self.by_conid = by_conid;
        self.wanted = wanted;
        let after = held(&self.by_conid);
        let mut changed = Vec::new();
        for (key, old) in &before {
            match after.get(key) {
                Some(new) if new.position != old.position => changed.push(new.clone()),
                Some(_) => {}
                None => changed.push(Arc::new(IbkrPosition {
                    position: Decimal::ZERO,
                    ..IbkrPosition::clone(old)
                })),
            }
        }
        changed
    }
}

struct Shared {
    book: Mutex<Book>,
    /// Merged market data per conid, kept across reconnects.
    quotes: Mutex<HashMap<i64, Arc<MdFields>>>,
    stats: Arc<IbkrStats>,
}

impl Shared {
    /// The event for `position` with the latest market data of it and its underlying.
    fn event(
        &self,
        position: Arc<IbkrPosition>,
        received_at: chrono::DateTime<Utc>,
        updated_ms: Option<i64>,
    ) -> BrokerEvent {
        let quotes = self.quotes.lock().expect("quotes lock");
        let fields = quotes.get(&position.conid).cloned().unwrap_or_default();
        let underlying = position.und_conid.and_then(|u| quotes.get(&u).cloned());
        BrokerEvent {
            broker: Broker::Ibkr,
            account: position.account.clone(),
            received_at,
            payload: BrokerPayload::Ibkr(IbkrQuote {
                position,
                fields,
                underlying,
                updated_ms,
            }),
        }
    }
}

/// Registers the IBKR source's metrics (and its WebSocket's) at zero.
pub fn register_metrics() {
    ws::register_metrics(Broker::Ibkr, "market_data");
    metrics::gauge!(AUTHENTICATED, "broker" => "ibkr").set(0.0);
    metrics::counter!(REST_ERRORS, "broker" => "ibkr").increment(0);
    metrics::counter!(SUBSCRIPTIONS_SENT, "broker" => "ibkr").increment(0);
    metrics::gauge!(POSITIONS, "broker" => "ibkr").set(0.0);
}

/// Streams until `cancel` fires. Never returns early on venue errors: they are
/// retried with backoff, counted and logged.
pub async fn run_ibkr(
    cfg: IbkrConfig,
    tx: mpsc::Sender<BrokerEvent>,
    stats: Arc<IbkrStats>,
    cancel: CancellationToken,
) -> Result<(), RestError> {
    let rest = Rest::new(&cfg)?;
    register_metrics();
    let shared = Arc::new(Shared {
        book: Mutex::new(Book::default()),
        quotes: Mutex::new(HashMap::new()),
        stats: stats.clone(),
    });
    // Stopped with this run, however it ends (see `TaskGroup`).
    let mut tasks = TaskGroup::default();
    tasks.spawn(keep_session(
        rest.clone(),
        cfg.tickle_interval,
        stats.clone(),
        cancel.clone(),
    ));
    tasks.spawn(poll_positions(
        rest.clone(),
        cfg.positions_refresh,
        shared.clone(),
        tx.clone(),
        cancel.clone(),
    ));
    let mut handler = Handler {
        rest,
        cfg: cfg.clone(),
        shared: shared.clone(),
        tx,
        subs: HashMap::new(),
        book_version: u64::MAX,
        wanted: BTreeSet::new(),
    };
    ws::run_ws(&cfg.ws, &mut handler, &stats.ws, &cancel).await;
    drop(tasks);
    Ok(())
}

fn set_authenticated(stats: &IbkrStats, ok: bool) {
    broker_metrics::set_authenticated(Broker::Ibkr, &stats.authenticated, ok);
}

async fn keep_session(
    rest: Rest,
    every: Duration,
    stats: Arc<IbkrStats>,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = cancel.cancelled() => return,
        }
        match rest.tickle().await {
            Ok(t) => {
                let healthy = t.auth().is_healthy();
                set_authenticated(&stats, healthy);
                if !healthy {
                    tracing::warn!(auth = ?t.auth(), "IBKR brokerage session not authenticated; asking the gateway to re-authenticate");
                    let _ = rest.reauthenticate().await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "IBKR tickle failed"),
        }
    }
}

async fn poll_positions(
    rest: Rest,
    every: Duration,
    shared: Arc<Shared>,
    tx: mpsc::Sender<BrokerEvent>,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = cancel.cancelled() => return,
        }
        match rest.all_positions().await {
            Ok(positions) => {
                failures = 0;
                let n = positions.len();
                shared.stats.positions.store(n as u64, Relaxed);
                metrics::gauge!(POSITIONS, "broker" => "ibkr").set(n as f64);
                let changed = {
                    let mut book = shared.book.lock().expect("book lock");
                    let before = book.version;
                    let changed = book.replace(positions);
                    if book.version != before {
                        tracing::info!(
                            positions = n,
                            conids = book.wanted.len(),
                            "IBKR positions changed"
                        );
                    }
                    changed
                };
                let received_at = Utc::now();
                for position in changed {
                    if tx
                        .send(shared.event(position, received_at, None))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    shared.stats.events_sent.fetch_add(1, Relaxed);
                }
                // Market data of conids no longer wanted is dropped: memory follows
                // the holdings, not everything ever held.
                let wanted = shared.book.lock().expect("book lock").wanted.clone();
                shared
                    .quotes
                    .lock()
                    .expect("quotes lock")
                    .retain(|conid, _| wanted.contains(conid));
            }
            Err(err) => {
                failures += 1;
                if failures <= 3 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %err, failures, "IBKR positions refresh failed; keeping the last book");
                }
                // Retry soon rather than a whole refresh period later.
                if failures <= 3 {
                    interval.reset_after(Duration::from_millis(500));
                }
            }
        }
    }
}

struct Sub {
    sent_at: Instant,
    last_data: Option<Instant>,
}

struct Handler {
    rest: Rest,
    cfg: IbkrConfig,
    shared: Arc<Shared>,
    tx: mpsc::Sender<BrokerEvent>,
    /// Subscriptions on the current socket.
    subs: HashMap<i64, Sub>,
    book_version: u64,
    wanted: BTreeSet<i64>,
}

impl Handler {
    fn refresh_wanted(&mut self) {
        let book = self.shared.book.lock().expect("book lock");
        if book.version != self.book_version {
            self.book_version = book.version;
            self.wanted = book.wanted.clone();
        }
    }

    fn subscribe(&mut self, conid: i64, out: &mut Outbox) {
        out.push(wire::smd_command(conid, &wire::MD_FIELD_IDS));
        let last_data = self.subs.get(&conid).and_then(|s| s.last_data);
        self.subs.insert(
            conid,
            Sub {
                sent_at: Instant::now(),
                last_data,
            },
        );
        self.shared.stats.subscriptions_sent.fetch_add(1, Relaxed);
        metrics::counter!(SUBSCRIPTIONS_SENT, "broker" => "ibkr").increment(1);
    }

    fn malformed(&self, text: &str, err: &dyn std::fmt::Display) {
        let count = &self.shared.stats.malformed_frames;
        broker_metrics::report_malformed(Broker::Ibkr, count, "IBKR frame", text, err);
    }

    async fn market_data(&mut self, md: wire::MdUpdate) -> Flow {
        if let Some(s) = self.subs.get_mut(&md.conid) {
            s.last_data = Some(Instant::now());
        }
        if md.fields.is_empty() {
            return Flow::Continue;
        }
        {
            let mut quotes = self.shared.quotes.lock().expect("quotes lock");
            let merged = quotes.entry(md.conid).or_default();
            Arc::make_mut(merged).merge(&md.fields);
        }
        let holders = self
            .shared
            .book
            .lock()
            .expect("book lock")
            .by_conid
            .get(&md.conid)
            .cloned()
            .unwrap_or_default();
        let received_at = Utc::now();
        for position in holders {
            let event = self.shared.event(position, received_at, md.updated_ms);
            if self.tx.send(event).await.is_err() {
                return Flow::Continue;
            }
            self.shared.stats.events_sent.fetch_add(1, Relaxed);
        }
        Flow::Data
    }
}

impl WsHandler for Handler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let tickle = self
            .rest
            .tickle()
            .await
            .map_err(|e| PrepareError::Failed(e.to_string()))?;
        let auth = tickle.auth();
        set_authenticated(&self.shared.stats, auth.is_healthy());
        if !auth.is_healthy() {
            // The gateway is up but the brokerage session is not: ask for a new one
            // and wait, instead of reconnecting in a loop.
            let _ = self.rest.reauthenticate().await;
            return Err(PrepareError::NotAuthenticated(format!(
                "authenticated={:?} connected={:?} competing={:?}",
                auth.authenticated, auth.connected, auth.competing
            )));
        }
        let session = tickle
            .session
            .ok_or_else(|| PrepareError::Failed("/tickle returned no session".into()))?;
        Ok(ConnectRequest {
            url: self.cfg.ws_url(),
            headers: vec![("cookie", wire::session_cookie(&session))],
            tls: self.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        // Nothing is replayed by the gateway after a reconnect: send everything.
        self.subs.clear();
        self.refresh_wanted();
        for conid in self.wanted.clone() {
            self.subscribe(conid, out);
        }
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        match wire::parse_frame(text) {
            Ok(ServerFrame::MarketData(md)) => self.market_data(md).await,
            Ok(ServerFrame::Status(s)) => {
                if s.authenticated == Some(false) || s.competing == Some(true) {
                    set_authenticated(&self.shared.stats, false);
                    tracing::warn!(status = ?s, "IBKR gateway reports the session is not usable");
                    return Flow::Reconnect("not_authenticated");
                }
                if s.authenticated == Some(true) {
                    set_authenticated(&self.shared.stats, true);
                }
                Flow::Continue
            }
            // `tic` and `ech+hb` are answered at once: proof the gateway is alive.
            Ok(ServerFrame::Tic | ServerFrame::Echo) => Flow::ProbeReply,
            Ok(ServerFrame::Error { code, message }) => {
                tracing::warn!(?code, %message, "IBKR websocket error frame");
                Flow::Continue
            }
            Ok(_) => Flow::Continue,
            Err(err) => {
                self.malformed(text, &err);
                Flow::Continue
            }
        }
    }

    fn heartbeat(&mut self, out: &mut Outbox) {
        out.push("tic");
    }

    fn probe(&mut self, out: &mut Outbox) -> bool {
        out.push("tic");
        true
    }

    fn on_tick(&mut self, out: &mut Outbox) -> Flow {
        self.refresh_wanted();
        let now = Instant::now();
        let stale = self.cfg.stale_after;
        let renew = self.cfg.renew_after;
        let due: Vec<i64> = self
            .wanted
            .iter()
            .copied()
            .filter(|c| match self.subs.get(c) {
                None => true,
                Some(s) => {
                    let since_sent = now - s.sent_at;
                    let since_data = now - s.last_data.unwrap_or(s.sent_at).max(s.sent_at);
                    since_sent >= renew || (since_data >= stale && since_sent >= stale)
                }
            })
            .collect();
        for conid in due {
            self.subscribe(conid, out);
        }
        let gone: Vec<i64> = self
            .subs
            .keys()
            .copied()
            .filter(|c| !self.wanted.contains(c))
            .collect();
        for conid in gone {
            out.push(wire::umd_command(conid));
            self.subs.remove(&conid);
        }
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {
        self.subs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_the_gateway_address() {
        let c = IbkrConfig::new("https://localhost:5000/");
        assert_eq!(c.rest_base(), "https://localhost:5000/v1/api");
        assert_eq!(c.ws_url(), "wss://localhost:5000/v1/api/ws");
        let c = IbkrConfig::new("http://127.0.0.1:15000");
        assert_eq!(c.ws_url(), "ws://127.0.0.1:15000/v1/api/ws");
        assert_eq!(c.tls(), TlsPolicy::Verify);
    }

    fn pos(conid: i64, und: Option<i64>, qty: i64) -> IbkrPosition {
        IbkrPosition {
            account: Arc::from("DU1"),
            conid,
            asset_class: "OPT".into(),
            position: qty.into(),
            expiry: None,
            put_or_call: None,
            strike: None,
            multiplier: None,
            und_conid: und,
            underlying_symbol: None,
        }
    }

    #[test]
    fn the_book_wants_options_their_underlyings_and_not_closed_positions() {
        let mut b = Book::default();
        b.replace(vec![
            pos(1, Some(10), 2),
            pos(2, Some(10), -1),
            pos(3, None, 0),
        ]);
        assert_eq!(b.wanted.iter().copied().collect::<Vec<_>>(), vec![1, 2, 10]);
        let v = b.version;
        b.replace(vec![pos(1, Some(10), 2), pos(2, Some(10), -1)]);
        assert_eq!(b.version, v, "same book, same version");
        b.replace(vec![pos(1, Some(10), 3)]);
        assert_eq!(b.version, v + 1);
        assert_eq!(b.wanted.len(), 2);
    }
}
