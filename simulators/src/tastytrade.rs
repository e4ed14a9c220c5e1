//! A simulator of Tastytrade for the demo and the tests: the REST API (OAuth token
//! refresh, accounts, positions with unsigned quantity + direction, quote tokens),
//! the DXLink server side of the whole handshake and feed (COMPACT and FULL, in the
//! field order the client asked for), and the account streamer (acks and
//! `CurrentPosition` pushes). Greeks come from a seeded, deterministic random walk.
//!
//! Fault switches (in process, or `POST /sim/fault/{name}`): drop sockets, go
//! silent, reject authentication (and accept it again), expire every token, send NaN
//! Greeks, send malformed frames, send a DXLink ERROR.
//!
//! Faithful enough for the Python SDK `tastytrade` 13.2.3 (protocol notes §7–9): a
//! fixed channel per event type, COMPACT values in the requested order, frames under
//! 64 KiB, acks with the request id.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::kit::{self, bsm, send_all, Inbound, RandomWalk};
use streaming::rng::SplitMix64;
use streaming::tastytrade::symbols::OptionSymbol;

#[derive(Debug, Clone)]
pub struct TastytradeSimConfig {
    pub seed: u64,
    pub accounts: Vec<String>,
    pub options_per_underlying: usize,
    /// How often prices move (and FEED_DATA goes out).
    pub tick_interval: Duration,
    /// The longest gap between our KEEPALIVEs (shorter if the client's
    /// `acceptKeepaliveTimeout` asks for it).
    pub keepalive_interval: Duration,
    pub access_token_ttl: Duration,
    pub quote_token_ttl: Duration,
    /// Day the option expiries are counted from.
    pub today: NaiveDate,
    pub tls: bool,
    /// When set, `/oauth/token` accepts only this refresh token.
    pub refresh_token: Option<String>,
}

impl Default for TastytradeSimConfig {
    fn default() -> Self {
        Self {
            seed: 11,
            accounts: vec!["5WT00001".into(), "5WT00002".into()],
            options_per_underlying: 6,
            tick_interval: Duration::from_millis(250),
            keepalive_interval: Duration::from_secs(30),
            access_token_ttl: Duration::from_secs(900),
            quote_token_ttl: Duration::from_secs(24 * 3600),
            today: Utc::now().date_naive(),
            tls: false,
            refresh_token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every open socket (DXLink and account streamer) is dropped without a close.
    Drop,
    /// Every open socket stops sending anything.
    Silent,
    /// OAuth refreshes get 401 and DXLink AUTH gets UNAUTHORIZED until `AcceptAuth`.
    RejectAuth,
    AcceptAuth,
    /// Every access and quote token expires now: open feeds get
    /// `AUTH_STATE UNAUTHORIZED` and stop until a fresh AUTH.
    ExpireTokens,
    /// The next this-many Greeks events carry `"NaN"` delta and vega.
    NaN(u32),
    /// Each open DXLink socket receives this many malformed frames.
    Malformed(u32),
    /// Each open DXLink socket receives an `ERROR` and is closed.
    Error,
}

impl Fault {
    fn parse(name: &str, count: Option<u32>) -> Option<Self> {
        Some(match name {
            "drop" => Fault::Drop,
            "silent" => Fault::Silent,
            "reject_auth" => Fault::RejectAuth,
            "accept_auth" => Fault::AcceptAuth,
            "expire_tokens" => Fault::ExpireTokens,
            "nan" => Fault::NaN(count.unwrap_or(5)),
            "malformed" => Fault::Malformed(count.unwrap_or(5)),
            "error" => Fault::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Stock,
    Option {
        symbol: OptionSymbol,
        strike: f64,
        vol: f64,
    },
}

#[derive(Debug, Clone)]
struct Instrument {
    /// OCC for options, the ticker for stocks.
    symbol: String,
    /// The DXLink symbol.
    streamer: String,
    underlying: usize,
    kind: Kind,
}

const UNDERLYINGS: [(&str, f64); 3] = [("SPY", 590.0), ("QQQ", 510.0), ("AAPL", 230.0)];
const RATE: f64 = 0.04;

struct Venue {
    instruments: Vec<Instrument>,
    by_streamer: HashMap<String, usize>,
    by_symbol: HashMap<String, usize>,
    /// Signed quantity per (account index, instrument index).
    holdings: RwLock<Vec<Vec<i64>>>,
    market: RwLock<RandomWalk>,
}

impl Venue {
    fn new(cfg: &TastytradeSimConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let mut instruments: Vec<Instrument> = UNDERLYINGS
            .iter()
            .enumerate()
            .map(|(i, (sym, _))| Instrument {
                symbol: (*sym).to_owned(),
                streamer: (*sym).to_owned(),
                underlying: i,
                kind: Kind::Stock,
            })
            .collect();
        for (i, (root, spot)) in UNDERLYINGS.iter().enumerate() {
            for k in 0..cfg.options_per_underlying {
                let days = if k % 2 == 0 { 30 } else { 58 };
                let moneyness = [0.9, 0.95, 1.0, 1.05, 1.1][rng.below(5)];
                let strike =
                    (spot * moneyness / 5.0).round() * 5.0 + if k >= 5 { 2.5 } else { 0.0 };
                let symbol = OptionSymbol {
                    root: (*root).to_owned(),
                    expiry: cfg.today + chrono::Days::new(days),
                    right: if k % 3 == 0 { 'P' } else { 'C' },
                    strike: Decimal::try_from(strike).unwrap_or(Decimal::ONE),
                };
                instruments.push(Instrument {
                    symbol: symbol.to_occ(),
                    streamer: symbol.to_dxfeed(),
                    underlying: i,
                    kind: Kind::Option {
                        symbol,
                        strike,
                        vol: rng.uniform(0.15, 0.35),
                    },
                });
            }
        }
        let holdings = (0..cfg.accounts.len())
            .map(|_| {
                instruments
                    .iter()
                    .map(|inst| match inst.kind {
                        Kind::Stock => 100 * (1 + rng.below(5) as i64),
                        Kind::Option { .. } => {
                            let q = 1 + rng.below(5) as i64;
                            if rng.next_f64() < 0.4 {
                                -q
                            } else {
                                q
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        let by_streamer = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.streamer.clone(), i))
            .collect();
        let by_symbol = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.symbol.clone(), i))
            .collect();
        Self {
            instruments,
            by_streamer,
            by_symbol,
            holdings: RwLock::new(holdings),
            market: RwLock::new(RandomWalk::new(
                rng,
                UNDERLYINGS.iter().map(|u| u.1).collect(),
            )),
        }
    }

    fn spot(&self, underlying: usize) -> f64 {
        self.market.read().expect("market lock").spots[underlying]
    }

    fn quantity(&self, account: usize, instrument: usize) -> i64 {
        self.holdings.read().expect("holdings lock")[account][instrument]
    }

    /// A position row as `GET /accounts/{n}/positions` returns it.
    fn position_row(&self, account: &str, account_idx: usize, idx: usize) -> Value {
        let inst = &self.instruments[idx];
        let qty = self.quantity(account_idx, idx);
        let direction = match qty.signum() {
            1 => "Long",
            -1 => "Short",
            _ => "Zero",
        };
        let (kind, multiplier, expires) = match &inst.kind {
            Kind::Stock => ("Equity", 1, Value::Null),
            Kind::Option { symbol, .. } => (
                "Equity Option",
                100,
                json!(format!("{}T20:15:00.000+00:00", symbol.expiry)),
            ),
        };
        let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string();
        json!({
            "account-number": account, "symbol": inst.symbol, "instrument-type": kind,
            "underlying-symbol": UNDERLYINGS[inst.underlying].0, "streamer-symbol": inst.streamer,
            "quantity": qty.abs().to_string(), "quantity-direction": direction,
            "close-price": "0.0", "average-open-price": "0.0", "multiplier": multiplier,
            "cost-effect": if qty < 0 { "Credit" } else { "Debit" }, "is-suppressed": false,
            "is-frozen": false, "realized-day-gain": "0.0", "realized-day-gain-effect": "None",
            "realized-today": "0.0", "realized-today-effect": "None", "expires-at": expires,
            "created-at": now, "updated-at": now
        })
    }

    /// The value of one dxFeed field of one event; `None` if the symbol is unknown.
    fn field(
        &self,
        event_type: &str,
        idx: usize,
        field: &str,
        today: NaiveDate,
        nan: bool,
    ) -> Value {
        let inst = &self.instruments[idx];
        let spot = self.spot(inst.underlying);
        let now = Utc::now().timestamp_millis();
        let num = |x: f64| json!((x * 1e6).round() / 1e6);
        let (price, greeks) = match &inst.kind {
            Kind::Stock => (spot, None),
            Kind::Option {
                symbol,
                strike,
                vol,
            } => {
                let years = ((symbol.expiry - today).num_days().max(0) as f64 + 0.5) / 365.0;
                let g = bsm(spot, *strike, years, RATE, *vol, symbol.right == 'C');
                (g.price, Some((g, *vol)))
            }
        };
        let half_spread = (price * 0.0005).max(0.01);
        match (event_type, field) {
            (_, "eventType") => json!(event_type),
            (_, "eventSymbol") => json!(inst.streamer),
            (_, "eventTime" | "eventFlags" | "sequence" | "timeNanoPart") => json!(0),
            ("Greeks", "index") => json!(now << 22),
            ("Greeks", "time") | ("Quote", "bidTime" | "askTime") => json!(now),
            ("Greeks", "price") => num(price),
            ("Greeks", "volatility") => greeks.map_or(json!("NaN"), |(_, v)| num(v)),
            ("Greeks", "delta" | "vega") if nan => json!("NaN"),
            ("Greeks", f) => match (greeks, f) {
                (Some((g, _)), "delta") => num(g.delta),
                (Some((g, _)), "gamma") => num(g.gamma),
                (Some((g, _)), "theta") => num(g.theta_day),
                (Some((g, _)), "vega") => num(g.vega_point),
                (Some((g, _)), "rho") => num(g.rho_point),
                _ => json!("NaN"),
            },
            ("Quote", "bidExchangeCode" | "askExchangeCode") => json!("Q"),
            ("Quote", "bidPrice") => num((price - half_spread).max(0.01)),
            ("Quote", "askPrice") => num(price + half_spread),
            ("Quote", "bidSize" | "askSize") => json!(10),
            _ => json!("NaN"),
        }
    }
}

/// What the simulator saw, for tests and reports.
#[derive(Debug, Default)]
pub struct SimStats {
    pub dxlink_connections: AtomicU64,
    pub streamer_connections: AtomicU64,
    pub access_tokens_issued: AtomicU64,
    pub quote_tokens_issued: AtomicU64,
    pub auths_accepted: AtomicU64,
    pub auths_rejected: AtomicU64,
    pub feed_frames_sent: AtomicU64,
    pub keepalives_received: AtomicU64,
    pub rest_unauthorized: AtomicU64,
}

#[derive(Clone)]
enum SimEvent {
    Fault(Fault),
    Position { account: usize, instrument: usize },
}

struct SimState {
    cfg: TastytradeSimConfig,
    venue: Venue,
    addr: SocketAddr,
    access_tokens: Mutex<HashMap<String, Instant>>,
    quote_tokens: Mutex<HashMap<String, Instant>>,
    reject_auth: AtomicBool,
    nan_left: AtomicU64,
    events: broadcast::Sender<SimEvent>,
    steps: watch::Receiver<u64>,
    stats: SimStats,
    /// Live subscriptions per open, authorized DXLink socket.
    subs: Mutex<HashMap<u64, BTreeSet<(String, String)>>>,
    next_conn: AtomicU64,
    next_token: AtomicU64,
}

impl SimState {
    fn issue(&self, map: &Mutex<HashMap<String, Instant>>, prefix: &str, ttl: Duration) -> String {
        let n = self.next_token.fetch_add(1, Relaxed);
        let token = format!("{prefix}-{:x}-{n}", self.cfg.seed);
        map.lock()
            .expect("token lock")
            .insert(token.clone(), Instant::now() + ttl);
        token
    }

    fn valid(map: &Mutex<HashMap<String, Instant>>, token: &str) -> bool {
        map.lock()
            .expect("token lock")
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }

    fn account_index(&self, account: &str) -> Option<usize> {
        self.cfg.accounts.iter().position(|a| a == account)
    }

    fn take_nan(&self) -> bool {
        self.nan_left
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl std::fmt::Debug for TastytradeSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TastytradeSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A running simulator. Dropping it does not stop it; call [`TastytradeSim::stop`].
pub struct TastytradeSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    tasks: Vec<JoinHandle<()>>,
}

impl TastytradeSim {
    pub fn start(cfg: TastytradeSimConfig, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (step_tx, step_rx) = watch::channel(0u64);
        let (events, _) = broadcast::channel(256);
        let state = Arc::new(SimState {
            venue: Venue::new(&cfg),
            addr,
            access_tokens: Mutex::new(HashMap::new()),
            quote_tokens: Mutex::new(HashMap::new()),
            reject_auth: AtomicBool::new(false),
            nan_left: AtomicU64::new(0),
            events,
            steps: step_rx,
            stats: SimStats::default(),
            subs: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            next_token: AtomicU64::new(1),
            cfg,
        });
        let ticker = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(state.cfg.tick_interval);
                loop {
                    every.tick().await;
                    let step = state.venue.market.write().expect("market lock").advance();
                    if step_tx.send(step).is_err() {
                        return;
                    }
                }
            })
        };
        let tls = state.cfg.tls;
        let server = kit::serve(listener, router(state.clone()), tls, "tastytrade")?;
        Ok(Self {
            addr,
            state,
            tasks: vec![ticker, server],
        })
    }

    pub async fn bind(cfg: TastytradeSimConfig, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start(cfg, TcpListener::bind(addr).await?)
    }

    fn scheme(&self, secure: &str, plain: &str) -> String {
        let s = if self.state.cfg.tls { secure } else { plain };
        format!("{s}://{}", self.addr)
    }

    /// The REST base URL to give a client.
    pub fn api_url(&self) -> String {
        self.scheme("https", "http")
    }

    /// The account streamer URL to give a client.
    pub fn streamer_url(&self) -> String {
        format!("{}/streamer", self.scheme("wss", "ws"))
    }

    pub fn inject(&self, fault: Fault) {
        apply_fault(&self.state, fault);
    }

    pub fn stats(&self) -> &SimStats {
        &self.state.stats
    }

    /// `(event type, symbol)` subscribed on at least one open, authorized socket.
    pub fn live_subscriptions(&self) -> BTreeSet<(String, String)> {
        let subs = self.state.subs.lock().expect("subs lock");
        subs.values().flatten().cloned().collect()
    }

    /// What a client should subscribe to: Greeks and Quote of every held option,
    /// Quote of every held stock and of every option's underlying.
    pub fn expected_subscriptions(&self) -> BTreeSet<(String, String)> {
        let venue = &self.state.venue;
        let holdings = venue.holdings.read().expect("holdings lock");
        let mut out = BTreeSet::new();
        for per_account in holdings.iter() {
            for (idx, qty) in per_account.iter().enumerate() {
                if *qty == 0 {
                    continue;
                }
                let inst = &venue.instruments[idx];
                out.insert(("Quote".to_owned(), inst.streamer.clone()));
                if matches!(inst.kind, Kind::Option { .. }) {
                    out.insert(("Greeks".to_owned(), inst.streamer.clone()));
                    out.insert((
                        "Quote".to_owned(),
                        UNDERLYINGS[inst.underlying].0.to_owned(),
                    ));
                }
            }
        }
        out
    }

    pub fn open_feeds(&self) -> usize {
        self.state.subs.lock().expect("subs lock").len()
    }

    /// Signed quantity per `(account, symbol)` for every nonzero holding.
    pub fn positions(&self) -> Vec<(String, String, i64)> {
        let venue = &self.state.venue;
        let holdings = venue.holdings.read().expect("holdings lock");
        let mut out = Vec::new();
        for (a, per_account) in holdings.iter().enumerate() {
            for (idx, qty) in per_account.iter().enumerate() {
                if *qty != 0 {
                    out.push((
                        self.state.cfg.accounts[a].clone(),
                        venue.instruments[idx].symbol.clone(),
                        *qty,
                    ));
                }
            }
        }
        out
    }

    /// Changes a holding (OCC or ticker symbol) and pushes `CurrentPosition` to the
    /// account streamer. False if the account or symbol is unknown.
    pub fn set_position(&self, account: &str, symbol: &str, quantity: i64) -> bool {
        set_position(&self.state, account, symbol, quantity)
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn set_position(s: &SimState, account: &str, symbol: &str, quantity: i64) -> bool {
    let (Some(a), Some(&idx)) = (s.account_index(account), s.venue.by_symbol.get(symbol)) else {
        return false;
    };
    s.venue.holdings.write().expect("holdings lock")[a][idx] = quantity;
    let _ = s.events.send(SimEvent::Position {
        account: a,
        instrument: idx,
    });
    true
}

fn apply_fault(s: &SimState, fault: Fault) {
    match fault {
        Fault::RejectAuth => s.reject_auth.store(true, Relaxed),
        Fault::AcceptAuth => s.reject_auth.store(false, Relaxed),
        Fault::ExpireTokens => {
            let now = Instant::now();
            for map in [&s.access_tokens, &s.quote_tokens] {
                for exp in map.lock().expect("token lock").values_mut() {
                    *exp = now;
                }
            }
        }
        Fault::NaN(n) => {
            s.nan_left.fetch_add(u64::from(n), Relaxed);
        }
        _ => {}
    }
    let _ = s.events.send(SimEvent::Fault(fault));
}

type St = State<Arc<SimState>>;

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth_token))
        .route("/sessions/validate", post(validate))
        .route("/customers/me/accounts", get(accounts))
        .route("/accounts/{account}/positions", get(positions))
        .route("/api-quote-tokens", get(quote_token))
        .route("/dxlink", get(dxlink_upgrade))
        .route("/streamer", get(streamer_upgrade))
        .route("/sim/fault/{name}", post(fault))
        .route("/sim/position/{account}", post(position_change))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The API refuses requests without a User-Agent, and without a live access token.
fn refuse(s: &SimState, headers: &HeaderMap) -> Option<Response> {
    if !headers.contains_key("user-agent") {
        s.stats.rest_unauthorized.fetch_add(1, Relaxed);
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "missing_user_agent",
            "a User-Agent header is required",
        ));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    match token {
        Some(t) if SimState::valid(&s.access_tokens, t) => None,
        _ => {
            s.stats.rest_unauthorized.fetch_add(1, Relaxed);
            Some(error(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "This access token is invalid or expired",
            ))
        }
    }
}

async fn oauth_token(State(s): St, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !headers.contains_key("user-agent") {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_user_agent",
            "a User-Agent header is required",
        );
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let grant = body.get("grant_type").and_then(Value::as_str);
    let refresh = body.get("refresh_token").and_then(Value::as_str);
    if grant != Some("refresh_token") || refresh.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type refresh_token and refresh_token are required",
        );
    }
    let wrong = s
        .cfg
        .refresh_token
        .as_deref()
        .is_some_and(|want| Some(want) != refresh);
    if wrong || s.reject_auth.load(Relaxed) {
        return error(StatusCode::UNAUTHORIZED, "invalid_grant", "Grant revoked");
    }
    let ttl = s.cfg.access_token_ttl;
    let token = s.issue(&s.access_tokens, "sim-access", ttl);
    s.stats.access_tokens_issued.fetch_add(1, Relaxed);
    Json(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs().max(1),
        "id_token": "sim"}),
    )
    .into_response()
}

async fn validate(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    Json(
        json!({"data": {"email": "sim@example.com", "username": "sim", "external-id": "U0001",
        "id": 1}, "context": "/sessions/validate"}),
    )
    .into_response()
}

async fn accounts(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let items: Vec<Value> = s
        .cfg
        .accounts
        .iter()
        .map(|a| {
            json!({"account": {"account-number": a, "opened-at": "2024-01-02T15:00:00.000+00:00",
                "nickname": "sim", "account-type-name": "Individual", "is-closed": false,
                "day-trader-status": false, "is-firm-error": false, "is-firm-proprietary": false,
                "is-futures-approved": true, "margin-or-cash": "Margin", "is-foreign": false,
                "created-at": "2024-01-02T15:00:00.000+00:00", "external-id": format!("A{a}"),
                "investment-objective": "SPECULATION", "suitable-options-level": "No Restrictions"},
                "authority-level": "owner"})
        })
        .collect();
    Json(json!({"data": {"items": items}, "context": "/customers/me/accounts"})).into_response()
}

async fn positions(State(s): St, headers: HeaderMap, Path(account): Path<String>) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let Some(a) = s.account_index(&account) else {
        return error(
            StatusCode::NOT_FOUND,
            "record_not_found",
            "account not found",
        );
    };
    let items: Vec<Value> = (0..s.venue.instruments.len())
        .filter(|&i| s.venue.quantity(a, i) != 0)
        .map(|i| s.venue.position_row(&account, a, i))
        .collect();
    Json(json!({"data": {"items": items}, "context": format!("/accounts/{account}/positions")}))
        .into_response()
}

async fn quote_token(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let token = s.issue(&s.quote_tokens, "sim-quote", s.cfg.quote_token_ttl);
    s.stats.quote_tokens_issued.fetch_add(1, Relaxed);
    let scheme = if s.cfg.tls { "wss" } else { "ws" };
    Json(
        json!({"data": {"token": token, "dxlink-url": format!("{scheme}://{}/dxlink", s.addr),
        "level": "api"}, "context": "/api-quote-tokens"}),
    )
    .into_response()
}

#[derive(serde::Deserialize)]
struct FaultQuery {
    count: Option<u32>,
}

async fn fault(State(s): St, Path(name): Path<String>, Query(q): Query<FaultQuery>) -> Response {
    match Fault::parse(&name, q.count) {
        Some(f) => {
            apply_fault(&s, f);
            Json(json!({"injected": name})).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_fault",
            &format!("unknown fault {name:?}"),
        ),
    }
}

async fn position_change(
    State(s): St,
    Path(account): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let symbol = body.get("symbol").and_then(Value::as_str).unwrap_or("");
    let quantity = body.get("quantity").and_then(Value::as_i64).unwrap_or(0);
    if set_position(&s, &account, symbol, quantity) {
        Json(json!({"account": account, "symbol": symbol, "quantity": quantity})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "record_not_found",
            "unknown account or symbol",
        )
    }
}

async fn dxlink_upgrade(State(s): St, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| dxlink_connection(s, socket))
}

async fn streamer_upgrade(State(s): St, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| streamer_connection(s, socket))
}

const MALFORMED: [&str; 5] = [
    "{\"type\":\"FEED_DATA\",\"channel\":",
    "not json at all",
    "{\"type\":\"FEED_DATA\",\"channel\":3,\"data\":[\"Greeks\",[\".SPY\",1,2]]}",
    "[1,2,3]",
    "{\"channel\":0}",
];

/// One FEED channel as the client set it up.
#[derive(Default)]
struct Channel {
    compact: bool,
    fields: HashMap<String, Vec<String>>,
    subs: BTreeSet<(String, String)>,
}

/// Events per FEED_DATA frame: keeps frames well under the SDK's 64 KiB limit.
const EVENTS_PER_FRAME: usize = 100;

struct Dx {
    id: u64,
    authorized: Option<String>,
    channels: HashMap<u64, Channel>,
    /// The client's keepaliveTimeout: silence longer than this gets ERROR TIMEOUT.
    client_timeout: Duration,
    keepalive_every: Duration,
}

impl Dx {
    fn publish(&self, s: &SimState) {
        let mut subs = s.subs.lock().expect("subs lock");
        if self.authorized.is_some() {
            subs.insert(
                self.id,
                self.channels
                    .values()
                    .flat_map(|c| c.subs.iter().cloned())
                    .collect(),
            );
        } else {
            subs.remove(&self.id);
        }
    }

    fn handle(&mut self, s: &SimState, text: &str, out: &mut Vec<String>) -> bool {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            out.push(dx_error("INVALID_MESSAGE", "not JSON"));
            return true;
        };
        let channel = msg.get("channel").and_then(Value::as_u64).unwrap_or(0);
        match msg.get("type").and_then(Value::as_str).unwrap_or("") {
            "SETUP" => {
                if let Some(t) = msg.get("keepaliveTimeout").and_then(Value::as_u64) {
                    self.client_timeout = Duration::from_secs(t.max(1));
                }
                if let Some(t) = msg.get("acceptKeepaliveTimeout").and_then(Value::as_u64) {
                    self.keepalive_every =
                        self.keepalive_every.min(Duration::from_secs(t.max(2)) / 2);
                }
                out.push(
                    json!({"type": "SETUP", "channel": 0, "keepaliveTimeout": 60,
                    "acceptKeepaliveTimeout": 60, "version": "1.0-greekstream-sim"})
                    .to_string(),
                );
                out.push(auth_state(false));
            }
            "AUTH" => {
                let token = msg.get("token").and_then(Value::as_str).unwrap_or("");
                if !s.reject_auth.load(Relaxed) && SimState::valid(&s.quote_tokens, token) {
                    self.authorized = Some(token.to_owned());
                    s.stats.auths_accepted.fetch_add(1, Relaxed);
                    out.push(auth_state(true));
                } else {
                    s.stats.auths_rejected.fetch_add(1, Relaxed);
                    self.authorized = None;
                    out.push(auth_state(false));
                }
            }
            "KEEPALIVE" => {
                s.stats.keepalives_received.fetch_add(1, Relaxed);
                out.push(json!({"type": "KEEPALIVE", "channel": 0}).to_string());
            }
            _ if self.authorized.is_none() => {
                out.push(dx_error("UNAUTHORIZED", "authorize first"));
            }
            "CHANNEL_REQUEST" => {
                let service = msg.get("service").cloned().unwrap_or(json!("FEED"));
                self.channels.insert(channel, Channel::default());
                out.push(
                    json!({"type": "CHANNEL_OPENED", "channel": channel, "service": service,
                    "parameters": msg.get("parameters").cloned().unwrap_or(json!({}))})
                    .to_string(),
                );
            }
            "CHANNEL_CANCEL" => {
                self.channels.remove(&channel);
                out.push(json!({"type": "CHANNEL_CLOSED", "channel": channel}).to_string());
            }
            "FEED_SETUP" => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    out.push(dx_error("BAD_ACTION", "no such channel"));
                    return true;
                };
                ch.compact = msg.get("acceptDataFormat").and_then(Value::as_str) != Some("FULL");
                if let Some(fields) = msg.get("acceptEventFields").and_then(Value::as_object) {
                    for (t, list) in fields {
                        let names = list
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .filter_map(|f| f.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        ch.fields.insert(t.clone(), names);
                    }
                }
                out.push(json!({"type": "FEED_CONFIG", "channel": channel,
                    "aggregationPeriod": 0.1, "dataFormat": if ch.compact { "COMPACT" } else { "FULL" },
                    "eventFields": ch.fields}).to_string());
            }
            "FEED_SUBSCRIPTION" => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    out.push(dx_error("BAD_ACTION", "no such channel"));
                    return true;
                };
                if msg.get("reset").and_then(Value::as_bool) == Some(true) {
                    ch.subs.clear();
                }
                let pairs = |key: &str| -> Vec<(String, String)> {
                    msg.get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| {
                            Some((
                                e.get("type")?.as_str()?.to_owned(),
                                e.get("symbol")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                };
                for p in pairs("remove") {
                    ch.subs.remove(&p);
                }
                ch.subs.extend(pairs("add"));
            }
            _ => out.push(dx_error("INVALID_MESSAGE", "unknown message type")),
        }
        true
    }

    fn render(&self, s: &SimState, out: &mut Vec<String>) {
        let venue = &s.venue;
        let today = s.cfg.today;
        for (channel, ch) in &self.channels {
            let mut by_type: HashMap<&str, Vec<usize>> = HashMap::new();
            for (t, sym) in &ch.subs {
                if !matches!(t.as_str(), "Greeks" | "Quote") {
                    continue;
                }
                if let Some(&idx) = venue.by_streamer.get(sym) {
                    // No Greeks for a stock.
                    if t == "Greeks" && matches!(venue.instruments[idx].kind, Kind::Stock) {
                        continue;
                    }
                    by_type.entry(t.as_str()).or_default().push(idx);
                }
            }
            for (t, idxs) in by_type {
                let default_fields: Vec<String> = match t {
                    "Greeks" => streaming::tastytrade::dxlink::GREEKS_FIELDS
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                    _ => streaming::tastytrade::dxlink::QUOTE_FIELDS
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                };
                let fields = ch
                    .fields
                    .get(t)
                    .filter(|f| !f.is_empty())
                    .unwrap_or(&default_fields);
                for chunk in idxs.chunks(EVENTS_PER_FRAME) {
                    let data = if ch.compact {
                        let mut flat = Vec::with_capacity(chunk.len() * fields.len());
                        for &idx in chunk {
                            let nan = t == "Greeks" && s.take_nan();
                            flat.extend(fields.iter().map(|f| venue.field(t, idx, f, today, nan)));
                        }
                        json!([t, flat])
                    } else {
                        let events: Vec<Value> = chunk
                            .iter()
                            .map(|&idx| {
                                let nan = t == "Greeks" && s.take_nan();
                                let mut obj = serde_json::Map::new();
                                obj.insert("eventType".into(), json!(t));
                                for f in fields {
                                    obj.insert(f.clone(), venue.field(t, idx, f, today, nan));
                                }
                                Value::Object(obj)
                            })
                            .collect();
                        json!(events)
                    };
                    out.push(
                        json!({"type": "FEED_DATA", "channel": channel, "data": data}).to_string(),
                    );
                    s.stats.feed_frames_sent.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

fn auth_state(authorized: bool) -> String {
    let state = if authorized {
        "AUTHORIZED"
    } else {
        "UNAUTHORIZED"
    };
    json!({"type": "AUTH_STATE", "channel": 0, "state": state}).to_string()
}

fn dx_error(error: &str, message: &str) -> String {
    json!({"type": "ERROR", "channel": 0, "error": error, "message": message}).to_string()
}

async fn dxlink_connection(s: Arc<SimState>, mut socket: WebSocket) {
    let id = s.next_conn.fetch_add(1, Relaxed);
    s.stats.dxlink_connections.fetch_add(1, Relaxed);
    let mut events = s.events.subscribe();
    let mut steps = s.steps.clone();
    let mut dx = Dx {
        id,
        authorized: None,
        channels: HashMap::new(),
        client_timeout: Duration::from_secs(60),
        keepalive_every: s.cfg.keepalive_interval,
    };
    let mut silent = false;
    let mut out = Vec::new();
    let mut last_inbound = Instant::now();
    let mut last_keepalive = Instant::now();
    'conn: loop {
        if silent {
            out.clear();
        } else if !send_all(&mut socket, &mut out).await {
            break;
        }
        tokio::select! {
            msg = socket.recv() => {
                let text = match kit::inbound(&mut socket, msg).await {
                    Inbound::Text(t) => t,
                    Inbound::Other => continue,
                    Inbound::Gone => break,
                };
                last_inbound = Instant::now();
                if !silent && !dx.handle(&s, &text, &mut out) {
                    break;
                }
                dx.publish(&s);
            }
            changed = steps.changed() => {
                if changed.is_err() {
                    break;
                }
                if last_inbound.elapsed() > dx.client_timeout {
                    let msg = format!("No keepalive received for {} seconds", dx.client_timeout.as_secs());
                    let _ = socket.send(Message::text(dx_error("TIMEOUT", &msg))).await;
                    break;
                }
                if let Some(token) = dx.authorized.clone() {
                    if SimState::valid(&s.quote_tokens, &token) {
                        dx.render(&s, &mut out);
                    } else {
                        // The token expired under an open feed: say so and wait for AUTH.
                        dx.authorized = None;
                        dx.publish(&s);
                        out.push(auth_state(false));
                    }
                }
                if last_keepalive.elapsed() >= dx.keepalive_every {
                    last_keepalive = Instant::now();
                    out.push(json!({"type": "KEEPALIVE", "channel": 0}).to_string());
                }
            }
            event = events.recv() => match event {
                Ok(SimEvent::Fault(Fault::Drop)) => break,
                Ok(SimEvent::Fault(Fault::Silent)) => silent = true,
                Ok(SimEvent::Fault(Fault::Malformed(n))) => {
                    for i in 0..n {
                        out.push(MALFORMED[i as usize % MALFORMED.len()].to_owned());
                    }
                }
                Ok(SimEvent::Fault(Fault::Error)) => {
                    out.push(dx_error("UNKNOWN", "simulated server error"));
                    let _ = send_all(&mut socket, &mut out).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break 'conn;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    s.subs.lock().expect("subs lock").remove(&id);
}

async fn streamer_connection(s: Arc<SimState>, mut socket: WebSocket) {
    s.stats.streamer_connections.fetch_add(1, Relaxed);
    let mut events = s.events.subscribe();
    let session_id = format!("sim-ws-{}", s.next_conn.fetch_add(1, Relaxed));
    let mut connected: Vec<usize> = Vec::new();
    let mut silent = false;
    let mut out = Vec::new();
    loop {
        if silent {
            out.clear();
        } else if !send_all(&mut socket, &mut out).await {
            break;
        }
        tokio::select! {
            msg = socket.recv() => {
                let text = match kit::inbound(&mut socket, msg).await {
                    Inbound::Text(t) => t,
                    Inbound::Other => continue,
                    Inbound::Gone => break,
                };
                if !silent {
                    streamer_action(&s, &session_id, &text, &mut connected, &mut out);
                }
            }
            event = events.recv() => match event {
                Ok(SimEvent::Fault(Fault::Drop)) => break,
                Ok(SimEvent::Fault(Fault::Silent)) => silent = true,
                Ok(SimEvent::Position { account, instrument }) if connected.contains(&account) => {
                    let name = &s.cfg.accounts[account];
                    out.push(json!({"type": "CurrentPosition",
                        "data": s.venue.position_row(name, account, instrument),
                        "timestamp": Utc::now().timestamp_millis()}).to_string());
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

fn streamer_action(
    s: &SimState,
    session_id: &str,
    text: &str,
    connected: &mut Vec<usize>,
    out: &mut Vec<String>,
) {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        out.push(json!({"status": "error", "action": "", "message": "invalid json"}).to_string());
        return;
    };
    let action = msg.get("action").and_then(Value::as_str).unwrap_or("");
    let request_id = msg.get("request-id").cloned().unwrap_or(Value::Null);
    let token = msg
        .get("auth-token")
        .and_then(Value::as_str)
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim())
        .unwrap_or("");
    let ack = |status: &str, message: Option<&str>, value: Value| {
        let mut v = json!({"status": status, "action": action, "web-socket-session-id": session_id,
            "request-id": request_id});
        if let Some(m) = message {
            v["message"] = json!(m);
        }
        if !value.is_null() {
            v["value"] = value;
        }
        v.to_string()
    };
    if !SimState::valid(&s.access_tokens, token) {
        out.push(ack(
            "error",
            Some("invalid or expired auth-token"),
            Value::Null,
        ));
        return;
    }
    match action {
        "connect" => {
            // The JS client sends one account as a bare string.
            let value = msg.get("value").cloned().unwrap_or(Value::Null);
            let names: Vec<String> = match &value {
                Value::String(one) => vec![one.clone()],
                Value::Array(list) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            *connected = names.iter().filter_map(|n| s.account_index(n)).collect();
            out.push(ack("ok", None, json!(names)));
        }
        _ if connected.is_empty() => {
            out.push(ack("error", Some("connect-not-completed"), Value::Null));
        }
        "heartbeat"
        | "public-watchlists-subscribe"
        | "quote-alerts-subscribe"
        | "user-message-subscribe" => out.push(ack("ok", None, Value::Null)),
        _ => out.push(ack("error", Some("unknown action"), Value::Null)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streaming::tastytrade::rest::parse_positions;
    use streaming::tastytrade::symbols::{parse_dxfeed, parse_occ};

    #[test]
    fn the_portfolio_is_deterministic_and_shaped_like_the_api() {
        let cfg = TastytradeSimConfig {
            today: NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
            ..TastytradeSimConfig::default()
        };
        let a = Venue::new(&cfg);
        let b = Venue::new(&cfg);
        assert_eq!(*a.holdings.read().unwrap(), *b.holdings.read().unwrap());
        let rows: Vec<Value> = (0..a.instruments.len())
            .map(|i| a.position_row("5WT00001", 0, i))
            .collect();
        let (good, bad) = parse_positions(&json!({"data": {"items": rows}})).unwrap();
        assert!(bad.is_empty());
        for (p, inst) in good.iter().zip(&a.instruments) {
            assert_eq!(
                p.quantity,
                Decimal::from(a.quantity(0, a.by_symbol[&inst.symbol]))
            );
            if p.instrument_type == "Equity Option" {
                let occ = parse_occ(&p.symbol).unwrap();
                let dx = parse_dxfeed(p.streamer_symbol.as_deref().unwrap()).unwrap();
                assert_eq!(occ, dx, "OCC and dxFeed symbols name the same option");
            }
        }
        let today = cfg.today;
        let opt = a
            .instruments
            .iter()
            .position(|i| matches!(i.kind, Kind::Option { .. }))
            .unwrap();
        let delta = a.field("Greeks", opt, "delta", today, false);
        assert!(delta.as_f64().unwrap().abs() <= 1.0);
        assert_eq!(a.field("Greeks", opt, "delta", today, true), json!("NaN"));
        assert_eq!(
            a.field("Greeks", opt, "eventSymbol", today, false),
            json!(a.instruments[opt].streamer)
        );
    }
}
