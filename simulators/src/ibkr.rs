//! A simulator of the Client Portal gateway, for the demo and the tests: the REST
//! routes a client needs, the `/v1/api/ws` socket with its greeting, `sts`, `system`
//! heartbeats and `smd` frames that carry only changed fields, server-side
//! subscription expiry, and a seeded, deterministic price and Greeks process for an
//! option portfolio. Fault switches (in process, or `POST /sim/fault/{name}`) drop
//! sockets, silence them, expire the session, drop authentication, or send
//! malformed frames. `POST /sim/position/{account}` opens, changes or closes a
//! holding.
//!
//! Plain HTTP/WS by default (clients that accept a gateway URL, ours and ibind, use
//! `http://`/`ws://`); with `tls` it serves HTTPS/WSS with a fresh self-signed
//! certificate, as the real gateway does.

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
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::kit::{self, bsm, send_all, Inbound, RandomWalk};
use streaming::ibkr::wire::{self, MdField};
use streaming::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct IbkrSimConfig {
    pub seed: u64,
    pub accounts: Vec<String>,
    pub options_per_underlying: usize,
    /// How often prices move (and changed fields are sent).
    pub tick_interval: Duration,
    /// `{"topic":"system","hb":...}` period (the real gateway: ~10 s).
    pub heartbeat_interval: Duration,
    /// A `smd` stream stops this long after its last `smd` command (real: 10–15 min).
    pub smd_expiry: Duration,
    pub page_size: usize,
    /// How long `/iserver/reauthenticate` takes to restore the session.
    pub reauth_delay: Duration,
    /// Day the option expiries are counted from.
    pub today: NaiveDate,
    /// Serve HTTPS/WSS with a self-signed certificate, like the real gateway.
    pub tls: bool,
    /// Reply to `tic` (the reply's shape is a third-party observation; a client must
    /// also work with a gateway that never replies).
    pub answer_tic: bool,
    /// Underlyings whose options get prices but no Greeks and no implied volatility,
    /// as for an account without the exchange's option analytics: the service must
    /// fill those in from its own model.
    pub no_option_analytics: Vec<String>,
}

impl Default for IbkrSimConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            accounts: vec!["DU1234567".into(), "DU7654321".into()],
            options_per_underlying: 6,
            tick_interval: Duration::from_millis(250),
            heartbeat_interval: Duration::from_secs(10),
            smd_expiry: Duration::from_secs(10 * 60),
            page_size: 30,
            reauth_delay: Duration::from_millis(500),
            today: Utc::now().date_naive(),
            tls: false,
            answer_tic: true,
            no_option_analytics: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every open socket is dropped without a close frame.
    Drop,
    /// Every open socket stops sending anything (data, heartbeats, replies).
    Silent,
    /// A new session id; open sockets get `sts authenticated:false` and are closed.
    ExpireSession,
    /// The brokerage session is lost: `sts authenticated:false`, no more data until
    /// `/iserver/reauthenticate`.
    AuthLoss,
    /// Each open socket receives this many malformed frames.
    Malformed(u32),
}

impl Fault {
    fn parse(name: &str, count: Option<u32>) -> Option<Self> {
        Some(match name {
            "drop" => Fault::Drop,
            "silent" => Fault::Silent,
            "expire_session" => Fault::ExpireSession,
            "auth_loss" => Fault::AuthLoss,
            "malformed" => Fault::Malformed(count.unwrap_or(5)),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Stock,
    Option {
        underlying: usize,
        expiry: NaiveDate,
        right: char,
        strike: f64,
        vol: f64,
    },
}

#[derive(Debug, Clone)]
struct Instrument {
    conid: i64,
    symbol: &'static str,
    underlying: usize,
    kind: Kind,
}

#[derive(Debug, Clone)]
struct Holding {
    account: usize,
    instrument: usize,
    quantity: i64,
}

const UNDERLYINGS: [(&str, i64, f64); 3] = [
    ("SPY", 756733, 590.0),
    ("QQQ", 320227571, 510.0),
    ("AAPL", 265598, 230.0),
];
const RATE: f64 = 0.04;

/// The portfolio and its deterministic price process.
struct Venue {
    instruments: Vec<Instrument>,
    by_conid: HashMap<i64, usize>,
    holdings: RwLock<Vec<Holding>>,
    market: RwLock<RandomWalk>,
    /// Per underlying: whether its options carry Greeks and IV.
    analytics: Vec<bool>,
}

impl Venue {
    fn new(cfg: &IbkrSimConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let mut instruments = Vec::new();
        for (i, (symbol, conid, _)) in UNDERLYINGS.iter().enumerate() {
            instruments.push(Instrument {
                conid: *conid,
                symbol,
                underlying: i,
                kind: Kind::Stock,
            });
        }
        let mut next_conid = 700_000_001;
        for (i, (symbol, _, spot)) in UNDERLYINGS.iter().enumerate() {
            for k in 0..cfg.options_per_underlying {
                let days = if k % 2 == 0 { 30 } else { 58 };
                let moneyness = [0.9, 0.95, 1.0, 1.05, 1.1][rng.below(5)];
                let strike = (spot * moneyness / 5.0).round() * 5.0;
                instruments.push(Instrument {
                    conid: next_conid,
                    symbol,
                    underlying: i,
                    kind: Kind::Option {
                        underlying: i,
                        expiry: cfg.today + chrono::Days::new(days),
                        right: if k % 3 == 0 { 'P' } else { 'C' },
                        strike,
                        vol: rng.uniform(0.15, 0.35),
                    },
                });
                next_conid += 1;
            }
        }
        let mut holdings = Vec::new();
        for account in 0..cfg.accounts.len() {
            for (idx, inst) in instruments.iter().enumerate() {
                let quantity = match inst.kind {
                    Kind::Stock => 100 * (1 + rng.below(5) as i64),
                    Kind::Option { .. } => {
                        let q = 1 + rng.below(5) as i64;
                        if rng.next_f64() < 0.4 {
                            -q
                        } else {
                            q
                        }
                    }
                };
                holdings.push(Holding {
                    account,
                    instrument: idx,
                    quantity,
                });
            }
        }
        let by_conid = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.conid, i))
            .collect();
        Self {
            instruments,
            by_conid,
            holdings: RwLock::new(holdings),
            analytics: UNDERLYINGS
                .iter()
                .map(|(u, _, _)| !cfg.no_option_analytics.iter().any(|x| x == u))
                .collect(),
            market: RwLock::new(RandomWalk::new(
                rng,
                UNDERLYINGS.iter().map(|u| u.2).collect(),
            )),
        }
    }

    fn holdings(&self) -> std::sync::RwLockReadGuard<'_, Vec<Holding>> {
        self.holdings.read().expect("holdings lock")
    }

    fn step(&self) -> u64 {
        self.market.write().expect("market lock").advance()
    }

    /// The current field values of one instrument, as the gateway formats them.
    fn fields(&self, idx: usize, today: NaiveDate) -> [Option<String>; 9] {
        let inst = &self.instruments[idx];
        let spot = self.market.read().expect("market lock").spots[inst.underlying];
        let mut out: [Option<String>; 9] = Default::default();
        let mut set = |f: MdField, v: String| out[f as usize] = Some(v);
        match &inst.kind {
            Kind::Stock => {
                set(MdField::Last, format!("{spot:.2}"));
                set(MdField::Bid, format!("{:.2}", spot - 0.01));
                set(MdField::Ask, format!("{:.2}", spot + 0.01));
                set(MdField::Mark, format!("{spot:.2}"));
            }
            Kind::Option {
                underlying,
                expiry,
                right,
                strike,
                vol,
            } => {
                let years = ((*expiry - today).num_days().max(0) as f64 + 0.5) / 365.0;
                let g = bsm(spot, *strike, years, RATE, *vol, *right == 'C');
                let half_spread = (g.price * 0.01).max(0.01);
                set(MdField::Last, format!("{:.2}", g.price));
                set(
                    MdField::Bid,
                    format!("{:.2}", (g.price - half_spread).max(0.0)),
                );
                set(MdField::Ask, format!("{:.2}", g.price + half_spread));
                set(MdField::Mark, format!("{:.2}", g.price));
                if !self.analytics[*underlying] {
                    return out;
                }
                set(MdField::Delta, format!("{:.4}", g.delta));
                set(MdField::Gamma, format!("{:.4}", g.gamma));
                set(MdField::Theta, format!("{:.4}", g.theta_day));
                set(MdField::Vega, format!("{:.4}", g.vega_point));
                set(MdField::ImpliedVol, format!("{:.1}%", vol * 100.0));
            }
        }
        out
    }

    fn position_row(&self, h: &Holding, account: &str) -> Value {
        let inst = &self.instruments[h.instrument];
        let spot = self.market.read().expect("market lock").spots[inst.underlying];
        match &inst.kind {
            Kind::Stock => json!({
                "acctId": account, "conid": inst.conid, "contractDesc": inst.symbol,
                "assetClass": "STK", "position": h.quantity as f64, "mktPrice": spot,
                "mktValue": spot * h.quantity as f64, "currency": "USD", "avgCost": spot,
                "avgPrice": spot, "realizedPnl": 0.0, "unrealizedPnl": 0.0, "expiry": null,
                "putOrCall": null, "strike": "0", "multiplier": null, "undConid": 0,
                "ticker": inst.symbol, "undSym": null, "fullName": inst.symbol,
                "pageSize": 30, "model": ""
            }),
            Kind::Option {
                expiry,
                right,
                strike,
                ..
            } => json!({
                "acctId": account, "conid": inst.conid,
                "contractDesc": format!("{} {} {} {}", inst.symbol,
                    expiry.format("%b%Y").to_string().to_uppercase(), strike, right),
                "assetClass": "OPT", "position": h.quantity as f64, "mktPrice": 0.0,
                "mktValue": 0.0, "currency": "USD", "avgCost": 0.0, "avgPrice": 0.0,
                "realizedPnl": 0.0, "unrealizedPnl": 0.0,
                "expiry": expiry.format("%Y%m%d").to_string(), "putOrCall": right.to_string(),
                "strike": strike, "multiplier": 100.0, "exerciseStyle": "AMERICAN",
                "undConid": UNDERLYINGS[inst.underlying].1, "ticker": inst.symbol,
                "undSym": inst.symbol, "pageSize": 30, "model": ""
            }),
        }
    }
}

/// What the simulator saw, for tests and the goal measurements.
#[derive(Debug, Default)]
pub struct SimStats {
    pub connections: AtomicU64,
    pub smd_commands: AtomicU64,
    pub md_frames_sent: AtomicU64,
    pub tickles: AtomicU64,
    pub reauthentications: AtomicU64,
}

struct SimState {
    cfg: IbkrSimConfig,
    venue: Venue,
    session: Mutex<String>,
    authenticated: AtomicBool,
    faults: broadcast::Sender<Fault>,
    steps: watch::Receiver<u64>,
    stats: SimStats,
    /// Live subscriptions per open socket: conid → server-side expiry.
    subs: Mutex<HashMap<u64, HashMap<i64, Instant>>>,
    next_conn: AtomicU64,
}

impl SimState {
    fn session(&self) -> String {
        self.session.lock().expect("session lock").clone()
    }

    fn auth_status(&self) -> Value {
        json!({
            "authenticated": self.authenticated.load(Relaxed), "competing": false,
            "connected": true, "message": "", "MAC": "98:F2:B3:23:BF:A0",
            "serverInfo": {"serverName": "GreekSim1", "serverVersion": "Build 10.25.0p, greekstream sim"},
            "fail": "", "prompts": []
        })
    }
}

impl std::fmt::Debug for IbkrSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbkrSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A running simulator. Dropping it does not stop it; call [`IbkrSim::stop`].
pub struct IbkrSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    tasks: Vec<JoinHandle<()>>,
    tls: bool,
}

impl IbkrSim {
    /// Serves on `listener` until stopped.
    pub fn start(cfg: IbkrSimConfig, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (step_tx, step_rx) = watch::channel(0u64);
        let (faults, _) = broadcast::channel(64);
        let mut seed_rng = SplitMix64::new(cfg.seed ^ 0x5e55_1011);
        let state = Arc::new(SimState {
            venue: Venue::new(&cfg),
            session: Mutex::new(format!(
                "{:016x}{:016x}",
                seed_rng.next_u64(),
                seed_rng.next_u64()
            )),
            authenticated: AtomicBool::new(true),
            faults,
            steps: step_rx,
            stats: SimStats::default(),
            subs: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            cfg,
        });
        let ticker = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(state.cfg.tick_interval);
                loop {
                    every.tick().await;
                    if step_tx.send(state.venue.step()).is_err() {
                        return;
                    }
                }
            })
        };
        let app = router(state.clone());
        let tls = state.cfg.tls;
        let server = kit::serve(listener, app, tls, "ibkr")?;
        Ok(Self {
            addr,
            state,
            tasks: vec![ticker, server],
            tls,
        })
    }

    /// Binds `addr` (port 0 for any) and starts.
    pub async fn bind(cfg: IbkrSimConfig, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start(cfg, TcpListener::bind(addr).await?)
    }

    /// The gateway URL to give a client: `http://127.0.0.1:PORT` (`https` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn inject(&self, fault: Fault) {
        apply_fault(&self.state, fault);
    }

    pub fn stats(&self) -> &SimStats {
        &self.state.stats
    }

    pub fn session(&self) -> String {
        self.state.session()
    }

    pub fn is_authenticated(&self) -> bool {
        self.state.authenticated.load(Relaxed)
    }

    /// Conids with a live (not expired) stream on at least one open socket.
    pub fn live_subscriptions(&self) -> BTreeSet<i64> {
        let now = Instant::now();
        let subs = self.state.subs.lock().expect("subs lock");
        subs.values()
            .flat_map(|m| m.iter().filter(|(_, exp)| **exp > now).map(|(c, _)| *c))
            .collect()
    }

    /// Open sockets.
    pub fn open_sockets(&self) -> usize {
        self.state.subs.lock().expect("subs lock").len()
    }

    /// Conids of every non-zero holding and of the underlyings of held options:
    /// what a complete client subscribes to.
    pub fn expected_subscriptions(&self) -> BTreeSet<i64> {
        let v = &self.state.venue;
        let mut out = BTreeSet::new();
        for h in v.holdings().iter().filter(|h| h.quantity != 0) {
            let inst = &v.instruments[h.instrument];
            out.insert(inst.conid);
            if let Kind::Option { underlying, .. } = inst.kind {
                out.insert(UNDERLYINGS[underlying].1);
            }
        }
        out
    }

    /// Position rows the REST API serves (every account).
    pub fn position_count(&self) -> usize {
        self.state.venue.holdings().len()
    }

    /// The volatility the simulator prices an option at: the truth a model's implied
    /// volatility is checked against.
    pub fn option_vol(
        &self,
        symbol: &str,
        expiry: NaiveDate,
        right: char,
        strike: f64,
    ) -> Option<f64> {
        self.state
            .venue
            .instruments
            .iter()
            .find_map(|i| match &i.kind {
                Kind::Option {
                    expiry: e,
                    right: r,
                    strike: k,
                    vol,
                    ..
                } if i.symbol == symbol && *e == expiry && *r == right && *k == strike => {
                    Some(*vol)
                }
                _ => None,
            })
    }

    /// Every holding the REST API serves: (account, conid, signed quantity).
    pub fn holdings(&self) -> Vec<(String, i64, i64)> {
        let v = &self.state.venue;
        v.holdings()
            .iter()
            .map(|h| {
                (
                    self.state.cfg.accounts[h.account].clone(),
                    v.instruments[h.instrument].conid,
                    h.quantity,
                )
            })
            .collect()
    }

    /// The sum of every holding's signed quantity.
    pub fn total_quantity(&self) -> i64 {
        self.state.venue.holdings().iter().map(|h| h.quantity).sum()
    }

    /// Sets the quantity `account` holds of `conid` (0 closes it; the row stays, as
    /// the gateway keeps closed positions listed for a while). Returns false for an
    /// unknown account or conid.
    pub fn set_position(&self, account: &str, conid: i64, quantity: i64) -> bool {
        set_position(&self.state, account, conid, quantity)
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// See [`IbkrSim::set_position`].
fn set_position(state: &SimState, account: &str, conid: i64, quantity: i64) -> bool {
    let v = &state.venue;
    let Some(acct) = state.cfg.accounts.iter().position(|a| a == account) else {
        return false;
    };
    let Some(&instrument) = v.by_conid.get(&conid) else {
        return false;
    };
    let mut holdings = v.holdings.write().expect("holdings lock");
    match holdings
        .iter_mut()
        .find(|h| h.account == acct && h.instrument == instrument)
    {
        Some(h) => h.quantity = quantity,
        None => holdings.push(Holding {
            account: acct,
            instrument,
            quantity,
        }),
    }
    true
}

fn apply_fault(state: &SimState, fault: Fault) {
    match fault {
        Fault::ExpireSession => {
            let mut s = state.session.lock().expect("session lock");
            *s = format!(
                "{:x}",
                u128::from_str_radix(&s, 16)
                    .unwrap_or(1)
                    .wrapping_mul(31)
                    .wrapping_add(7)
            );
            state.authenticated.store(false, Relaxed);
        }
        Fault::AuthLoss => state.authenticated.store(false, Relaxed),
        _ => {}
    }
    let _ = state.faults.send(fault);
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/api/tickle", get(tickle).post(tickle))
        .route(
            "/v1/api/iserver/auth/status",
            get(auth_status).post(auth_status),
        )
        .route(
            "/v1/api/iserver/reauthenticate",
            get(reauthenticate).post(reauthenticate),
        )
        .route("/v1/api/iserver/auth/ssodh/init", post(reauthenticate))
        .route("/v1/api/iserver/accounts", get(iserver_accounts))
        .route("/v1/api/portfolio/accounts", get(portfolio_accounts))
        .route("/v1/api/portfolio/subaccounts", get(portfolio_accounts))
        .route(
            "/v1/api/portfolio/{account}/positions/{page}",
            get(positions),
        )
        .route("/v1/api/sso/validate", get(sso_validate))
        .route("/v1/api/logout", post(logout))
        .route("/v1/api/ws", get(ws_upgrade))
        .route("/sim/fault/{name}", post(fault))
        .route("/sim/position/{account}", post(position_change))
        .with_state(state)
}

type St = State<Arc<SimState>>;

async fn tickle(State(s): St) -> Json<Value> {
    s.stats.tickles.fetch_add(1, Relaxed);
    Json(json!({
        "session": s.session(), "ssoExpires": 460311, "collission": false, "userId": 123456789,
        "hmds": {"error": "no bridge"}, "iserver": {"authStatus": s.auth_status()}
    }))
}

async fn auth_status(State(s): St) -> Json<Value> {
    Json(s.auth_status())
}

async fn reauthenticate(State(s): St) -> Json<Value> {
    s.stats.reauthentications.fetch_add(1, Relaxed);
    let state = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(state.cfg.reauth_delay).await;
        state.authenticated.store(true, Relaxed);
    });
    Json(json!({"message": "triggered"}))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "not authenticated", "statusCode": 401})),
    )
        .into_response()
}

async fn iserver_accounts(State(s): St) -> Response {
    if !s.authenticated.load(Relaxed) {
        return unauthorized();
    }
    let accounts = &s.cfg.accounts;
    Json(json!({
        "accounts": accounts, "aliases": {}, "selectedAccount": accounts.first(),
        "allowFeatures": {}, "chartPeriods": {}, "groups": [], "profiles": [],
        "isPaper": true, "isFT": false
    }))
    .into_response()
}

async fn portfolio_accounts(State(s): St) -> Response {
    if !s.authenticated.load(Relaxed) {
        return unauthorized();
    }
    let rows: Vec<Value> = s
        .cfg
        .accounts
        .iter()
        .map(|a| {
            json!({
                "id": a, "accountId": a, "accountVan": a, "accountTitle": "greekstream sim",
                "displayName": a, "accountAlias": null, "accountStatus": 1_700_000_000_000i64,
                "currency": "USD", "type": "DEMO", "tradingType": "PMRGN", "faclient": false,
                "clearingStatus": "O", "covestor": false, "parent": {}, "desc": a
            })
        })
        .collect();
    Json(Value::Array(rows)).into_response()
}

async fn positions(State(s): St, Path((account, page)): Path<(String, usize)>) -> Response {
    if !s.authenticated.load(Relaxed) {
        return unauthorized();
    }
    let Some(acct_idx) = s.cfg.accounts.iter().position(|a| *a == account) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid account"})),
        )
            .into_response();
    };
    let rows: Vec<Value> = s
        .venue
        .holdings()
        .iter()
        .filter(|h| h.account == acct_idx)
        .skip(page.saturating_mul(s.cfg.page_size))
        .take(s.cfg.page_size)
        .map(|h| s.venue.position_row(h, &account))
        .collect();
    Json(Value::Array(rows)).into_response()
}

async fn sso_validate(State(s): St) -> Json<Value> {
    Json(
        json!({"USER_ID": 123456789, "USER_NAME": "greeksim", "RESULT": s.authenticated.load(Relaxed)}),
    )
}

async fn logout(State(s): St) -> Json<Value> {
    s.authenticated.store(false, Relaxed);
    Json(json!({"status": true}))
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
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown fault", "faults": ["drop", "silent", "expire_session", "auth_loss", "malformed"]})),
        )
            .into_response(),
    }
}

/// `POST /sim/position/{account}` `{"conid": 265598, "quantity": 0}`: opens,
/// changes or (at 0) closes a holding, as a trade or an expiry would; the REST reads
/// show it from then on.
async fn position_change(
    State(s): St,
    Path(account): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let conid = body.get("conid").and_then(Value::as_i64);
    let quantity = body.get("quantity").and_then(Value::as_i64);
    let (Some(conid), Some(quantity)) = (conid, quantity) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "body must be {\"conid\": <integer>, \"quantity\": <integer>}"})),
        )
            .into_response();
    };
    if set_position(&s, &account, conid, quantity) {
        Json(json!({"account": account, "conid": conid, "quantity": quantity})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown account or conid"})),
        )
            .into_response()
    }
}

async fn ws_upgrade(State(s): St, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let cookie_session = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(wire::session_from_cookie);
    if let Some(session) = &cookie_session {
        if *session != s.session() {
            return unauthorized();
        }
    }
    let authed = cookie_session.is_some();
    upgrade.on_upgrade(move |socket| connection(s, socket, authed))
}

fn greeting(s: &SimState) -> Vec<String> {
    let accounts = &s.cfg.accounts;
    vec![
        json!({"topic": "system", "success": "greeksim", "isFT": false, "isPaper": true}).to_string(),
        json!({"topic": "act", "args": {"accounts": accounts, "acctProps": {}, "aliases": {},
            "allowFeatures": {}, "chartPeriods": {"STK": [], "OPT": []}, "groups": [], "profiles": [],
            "selectedAccount": accounts.first(), "serverInfo": {"serverName": "GreekSim1",
            "serverVersion": "sim"}, "sessionId": s.session(), "isFT": false, "isPaper": true}})
        .to_string(),
        json!({"topic": "sts", "args": {"connected": true, "authenticated": s.authenticated.load(Relaxed),
            "established": true, "competing": false, "message": "", "fail": ""}})
        .to_string(),
    ]
}

const MALFORMED: [&str; 5] = [
    "{\"topic\":\"smd+",
    "not json at all",
    "{\"topic\":\"smd+x\",\"conid\":\"abc\",\"31\":\"1\"}",
    "[1,2,3]",
    "{\"no_topic\":true}",
];

struct ConnSub {
    expires: Instant,
    sent: [Option<String>; 9],
    first: bool,
}

/// One socket: greeting, commands, changed fields on every price step, heartbeats,
/// and faults.
async fn connection(s: Arc<SimState>, mut socket: WebSocket, mut authed: bool) {
    let id = s.next_conn.fetch_add(1, Relaxed);
    s.stats.connections.fetch_add(1, Relaxed);
    s.subs.lock().expect("subs lock").insert(id, HashMap::new());
    let mut faults = s.faults.subscribe();
    let mut steps = s.steps.clone();
    let mut hb = tokio::time::interval(s.cfg.heartbeat_interval);
    let mut subs: HashMap<i64, ConnSub> = HashMap::new();
    let mut silent = false;
    let mut out: Vec<String> = if authed {
        greeting(&s)
    } else {
        vec![json!({"message": "waiting for session"}).to_string()]
    };
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
                if silent {
                    continue;
                }
                if !authed {
                    // The documented text handshake: {"session":"<id from /tickle>"}.
                    let session = serde_json::from_str::<Value>(&text).ok()
                        .and_then(|v| v.get("session")?.as_str().map(str::to_owned));
                    if session.as_deref() == Some(s.session().as_str()) {
                        authed = true;
                        out.extend(greeting(&s));
                    } else {
                        let head: String = text.chars().take(3).collect();
                        out.push(json!({"error": format!("Topic unknown '{head}'"), "code": 1}).to_string());
                    }
                    continue;
                }
                command(&s, id, &text, &mut subs, &mut out);
            }
            changed = steps.changed() => {
                if changed.is_err() {
                    break;
                }
                if authed && s.authenticated.load(Relaxed) {
                    render(&s, &mut subs, &mut out);
                }
            }
            _ = hb.tick() => {
                out.push(json!({"topic": "system", "hb": Utc::now().timestamp_millis()}).to_string());
            }
            fault = faults.recv() => match fault {
                Ok(Fault::Drop) => break,
                Ok(Fault::Silent) => silent = true,
                Ok(Fault::ExpireSession) => {
                    let _ = socket.send(Message::text(sts_unauthenticated())).await;
                    break;
                }
                Ok(Fault::AuthLoss) => out.push(sts_unauthenticated()),
                Ok(Fault::Malformed(n)) => {
                    for i in 0..n {
                        out.push(MALFORMED[i as usize % MALFORMED.len()].to_owned());
                    }
                    if socket.send(Message::Binary(vec![0xff, 0xfe, 0x00].into())).await.is_err() {
                        break;
                    }
                }
                Err(_) => {}
            },
        }
    }
    s.subs.lock().expect("subs lock").remove(&id);
}

fn sts_unauthenticated() -> String {
    json!({"topic": "sts", "args": {"connected": true, "authenticated": false, "established": false,
        "competing": false, "message": "session expired", "fail": ""}})
    .to_string()
}

fn command(
    s: &SimState,
    id: u64,
    text: &str,
    subs: &mut HashMap<i64, ConnSub>,
    out: &mut Vec<String>,
) {
    let mut parts = text.trim().splitn(3, '+');
    let topic = parts.next().unwrap_or_default();
    let arg = parts.next().unwrap_or_default();
    match topic {
        "smd" => {
            s.stats.smd_commands.fetch_add(1, Relaxed);
            let conid = arg.split('@').next().and_then(|c| c.parse::<i64>().ok());
            let Some(conid) = conid.filter(|c| s.venue.by_conid.contains_key(c)) else {
                out.push(
                    json!({"topic": format!("smd+{arg}"), "error": "invalid conid"}).to_string(),
                );
                return;
            };
            let expires = Instant::now() + s.cfg.smd_expiry;
            let sub = subs.entry(conid).or_insert(ConnSub {
                expires,
                sent: Default::default(),
                first: true,
            });
            sub.expires = expires;
            // Like the gateway, an early frame carries only the ids.
            out.push(json!({"topic": format!("smd+{conid}"), "conid": conid, "conidEx": conid.to_string(),
                "server_id": "q0", "6119": "q0"}).to_string());
            let mut live = s.subs.lock().expect("subs lock");
            live.entry(id).or_default().insert(conid, expires);
        }
        "umd" => {
            if let Ok(conid) = arg.parse::<i64>() {
                subs.remove(&conid);
                if let Some(m) = s.subs.lock().expect("subs lock").get_mut(&id) {
                    m.remove(&conid);
                }
            }
        }
        "tic" if s.cfg.answer_tic => out.push(
            json!({"topic": "tic", "alive": true, "id": s.session(),
            "lastAccessed": Utc::now().timestamp_millis()})
            .to_string(),
        ),
        "tic" => {}
        "ech" => out.push("ech+hb".to_owned()),
        "spl" => out.push(json!({"topic": "spl", "args": {}}).to_string()),
        "sor" => out.push(json!({"topic": "sor", "args": []}).to_string()),
        "upl" | "uor" | "usd" | "uld" | "utr" => {}
        _ => {
            let head: String = text.chars().take(3).collect();
            out.push(json!({"error": format!("Topic unknown '{head}'"), "code": 1}).to_string());
        }
    }
}

fn render(s: &SimState, subs: &mut HashMap<i64, ConnSub>, out: &mut Vec<String>) {
    let now = Instant::now();
    let updated = Utc::now().timestamp_millis();
    for (conid, sub) in subs.iter_mut() {
        if sub.expires <= now {
            continue;
        }
        let Some(&idx) = s.venue.by_conid.get(conid) else {
            continue;
        };
        let values = s.venue.fields(idx, s.cfg.today);
        let mut frame = serde_json::Map::new();
        for (i, v) in values.iter().enumerate() {
            if v.is_some() && *v != sub.sent[i] {
                let mut text = v.clone().unwrap_or_default();
                // A fresh subscription first shows the previous close, `C`-prefixed.
                if sub.first && MdField::ALL[i] == MdField::Last {
                    text.insert(0, 'C');
                }
                frame.insert(MdField::ALL[i].id().to_owned(), Value::String(text));
                sub.sent[i].clone_from(v);
            }
        }
        sub.first = false;
        if frame.is_empty() {
            continue;
        }
        frame.insert("conid".into(), json!(conid));
        frame.insert("conidEx".into(), json!(conid.to_string()));
        frame.insert("_updated".into(), json!(updated));
        frame.insert("server_id".into(), json!("q0"));
        frame.insert("6119".into(), json!("q0"));
        frame.insert("topic".into(), json!(format!("smd+{conid}")));
        out.push(Value::Object(frame).to_string());
        s.stats.md_frames_sent.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portfolio_is_deterministic_and_formatted_like_the_gateway() {
        let cfg = IbkrSimConfig {
            today: NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
            ..IbkrSimConfig::default()
        };
        let a = Venue::new(&cfg);
        let b = Venue::new(&cfg);
        assert_eq!(a.holdings().len(), b.holdings().len());
        for _ in 0..10 {
            a.step();
            b.step();
        }
        let opt = a
            .instruments
            .iter()
            .position(|i| matches!(i.kind, Kind::Option { .. }))
            .unwrap();
        assert_eq!(a.fields(opt, cfg.today), b.fields(opt, cfg.today));
        let f = a.fields(opt, cfg.today);
        assert!(f[MdField::ImpliedVol as usize]
            .as_deref()
            .unwrap()
            .ends_with('%'));
        let stock = a.fields(0, cfg.today);
        assert!(
            stock[MdField::Delta as usize].is_none(),
            "no Greeks for a stock"
        );
    }
}
