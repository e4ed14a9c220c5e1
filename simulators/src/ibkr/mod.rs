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
//!
//! Parts: [`venue`] (instruments, holdings, prices), [`rest`] (routes and `/sim/`
//! controls), [`socket`] (the WebSocket); this module holds the configuration, fault
//! switches, shared state and the handle.

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
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::kit::{self, bsm, send_all, Inbound, RandomWalk};
use streaming::ibkr::wire::{self, MdField};
use streaming::rng::SplitMix64;

mod venue;
#[allow(unused_imports)]
use venue::*;
mod rest;
#[allow(unused_imports)]
use rest::*;
mod socket;
#[allow(unused_imports)]
use socket::*;

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

impl kit::Faults for SimState {
    type Fault = Fault;
    const NAMES: &'static [&'static str] =
        &["drop", "silent", "expire_session", "auth_loss", "malformed"];

    fn parse(name: &str, count: Option<u32>) -> Option<Fault> {
        Fault::parse(name, count)
    }

    fn apply(&self, fault: Fault) {
        apply_fault(self, fault);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_fault_parses() {
        kit::assert_fault_names::<SimState>();
    }

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
