//! A simulator of Tastytrade for the demo and the tests: the REST API (OAuth token
//! refresh, accounts, positions with unsigned quantity + direction, quote tokens),
//! the DXLink server side of the whole handshake and feed (COMPACT and FULL, in the
//! field order the client asked for), and the account streamer (acks and
//! `CurrentPosition` pushes). Greeks come from a seeded, deterministic random walk.
//!
//! Parts: [`venue`] (instruments, holdings, prices), [`rest`] (the API and `/sim/`
//! controls), [`dxlink`] (the market-data feed), [`streamer`] (the account streamer);
//! this module holds the configuration, fault switches, shared state and the handle.
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
use axum::extract::{Path, State};
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

mod venue;
#[allow(unused_imports)]
use venue::*;
mod rest;
#[allow(unused_imports)]
use rest::*;
mod dxlink;
#[allow(unused_imports)]
use dxlink::*;
mod streamer;
#[allow(unused_imports)]
use streamer::*;

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

impl kit::Faults for SimState {
    type Fault = Fault;
    const NAMES: &'static [&'static str] = &[
        "drop",
        "silent",
        "reject_auth",
        "accept_auth",
        "expire_tokens",
        "nan",
        "malformed",
        "error",
    ];

    fn parse(name: &str, count: Option<u32>) -> Option<Fault> {
        Fault::parse(name, count)
    }

    fn apply(&self, fault: Fault) {
        apply_fault(self, fault);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_fault_parses() {
        kit::assert_fault_names::<SimState>();
    }
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
