//! A simulator of Binance USDⓈ-M futures for the demo and the tests.
//!
//! - REST ([`rest`]): time, exchangeInfo, depth snapshots, positionRisk and account
//!   (v2 and v3), leverage brackets, listen keys, and LIMIT/MARKET orders (place,
//!   query, cancel, open orders); SIGNED calls verified over the raw bytes; weight
//!   headers on every response; 429 past the weight limit and a 418 ban for a client
//!   that keeps going.
//! - WebSockets ([`ws`]): every path form real clients use (`/ws`, `/stream`,
//!   `/public|market|private/{ws,stream}`, `/ws/<listenKey>`), SUBSCRIBE and
//!   friends, combined-stream envelopes, pings every few minutes; market streams
//!   from a seeded book ([`market`]) with `U/u/pu` sequencing; the user data stream
//!   with ACCOUNT_UPDATE, ORDER_TRADE_UPDATE and `listenKeyExpired`.
//!
//! Fault switches (in process, or `POST /sim/fault/{name}`): drop sockets, go silent,
//! a depth gap, expire the listen key, rate-limit, maintenance (503).

mod admission;
mod algo;
mod batch;
pub mod failures;
mod liquidation;
pub mod market;
pub mod matching;
mod moves;
pub mod options;
mod orders;
mod queries;
mod reply;
mod rest;
mod state;
mod ws;

use self::market::SimBook;
use crate::kit;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streaming::rng::SplitMix64;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use moves::{move_price, publish_marks, set_level, tick};
use state::{
    listed, set_position, side_name, store_position, Account, Frame, Held, Limiter, Market,
    SimState,
};
pub use state::{BinanceSimConfig, SimClock, SimStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every open socket is dropped without a close frame.
    Drop,
    /// Every socket stops sending (and answering) until `Resume`.
    Silent,
    Resume,
    /// The next diff of every symbol is not published: a `pu` gap.
    DepthGap,
    /// The listen key expires now: `listenKeyExpired` on its sockets, -1125 on PUT.
    ExpireListenKey,
    /// The weight budget of the current window is used up: the next requests get 429.
    RateLimit,
    /// REST answers 503, sockets drop and reconnects are refused until
    /// `MaintenanceOff`.
    Maintenance,
    MaintenanceOff,
    /// Sockets carrying market data receive this many malformed frames.
    Malformed(u32),
}

impl Fault {
    fn parse(name: &str, count: Option<u32>) -> Option<Self> {
        Some(match name {
            "drop" => Fault::Drop,
            "silent" => Fault::Silent,
            "resume" => Fault::Resume,
            "depth_gap" => Fault::DepthGap,
            "expire_listen_key" => Fault::ExpireListenKey,
            "rate_limit" => Fault::RateLimit,
            "maintenance" => Fault::Maintenance,
            "maintenance_off" => Fault::MaintenanceOff,
            "malformed" => Fault::Malformed(count.unwrap_or(5)),
            _ => return None,
        })
    }
}

/// One side of a book: price → size.
pub type BookSide = BTreeMap<Decimal, Decimal>;

impl std::fmt::Debug for BinanceSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinanceSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A running simulator. Dropping it does not stop it; call [`BinanceSim::stop`].
pub struct BinanceSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    tasks: Vec<JoinHandle<()>>,
}

impl BinanceSim {
    pub fn start(cfg: BinanceSimConfig, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let mut rng = SplitMix64::new(cfg.seed);
        let specs = listed();
        let books = specs
            .iter()
            .map(|s| SimBook::new(s, cfg.book_depth, &mut rng))
            .collect();
        let mut account = Account {
            next_order_id: 8_000_000,
            next_algo_id: 3_000_000,
            wallet: Decimal::from(100_000),
            next_trade_id: 50_000_000,
            ..Account::default()
        };
        let d = |s: &str| s.parse::<Decimal>().expect("literal");
        // Opened a month ago: `updateTime` is when a position last changed, and a
        // client must not take it for the time of its read.
        let started = match cfg.clock {
            SimClock::Wall => chrono::Utc::now().timestamp_millis(),
            SimClock::Fixed(epoch) | SimClock::Tokio(epoch) => epoch,
        };
        let opened = started - 30 * 24 * 3600 * 1000;
        for (symbol, amount, entry) in [
            ("BTCUSDT", "0.5", "59000"),
            ("ETHUSDT", "-4", "3100"),
            ("BTCUSDT_261225", "-0.2", "61500"),
            ("BTC-261225-60000-C", "2", "5200"),
            ("ETH-261225-3000-P", "-10", "240"),
        ] {
            account.positions.insert(
                (symbol.into(), "BOTH"),
                Held {
                    amount: d(amount),
                    entry: d(entry),
                    update_time: opened,
                },
            );
        }
        let (frames, _) = broadcast::channel(1 << 16);
        let state = Arc::new(SimState {
            market: Mutex::new(Market {
                specs,
                books,
                rng,
                gap_next: false,
                paused: cfg.market_paused,
            }),
            account: Mutex::new(account),
            limiter: Mutex::new(Limiter::default()),
            frames,
            silent: AtomicBool::new(false),
            maintenance: AtomicBool::new(false),
            failures: Mutex::default(),
            countdowns: Mutex::default(),
            clock_offset_ms: Default::default(),
            started: tokio::time::Instant::now(),
            stats: SimStats::default(),
            next_key: AtomicU64::new(1),
            options: options::listed()
                .into_iter()
                .map(|o| options::OptionSpec {
                    unit: cfg.option_unit,
                    ..o
                })
                .collect(),
            cfg,
        });
        let ticker = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(state.cfg.tick_interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut marks = tokio::time::interval(state.cfg.mark_interval);
                loop {
                    tokio::select! {
                        _ = every.tick() => tick(&state),
                        _ = marks.tick() => publish_marks(&state),
                    }
                }
            })
        };
        let expiry = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(200));
                loop {
                    every.tick().await;
                    let expired = {
                        let a = state.account.lock().expect("account lock");
                        a.listen_key
                            .as_ref()
                            .is_some_and(|(_, at)| *at <= tokio::time::Instant::now())
                    };
                    if expired {
                        expire_listen_key(&state);
                    }
                }
            })
        };
        let tls = state.cfg.tls;
        let app = rest::router(state.clone()).merge(ws::router(state.clone()));
        let server = kit::serve(listener, app, tls, "binance")?;
        Ok(Self {
            addr,
            state,
            tasks: vec![ticker, expiry, server],
        })
    }

    pub async fn bind(cfg: BinanceSimConfig, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start(cfg, TcpListener::bind(addr).await?)
    }

    fn scheme(&self, secure: &str, plain: &str) -> String {
        let s = if self.state.cfg.tls { secure } else { plain };
        format!("{s}://{}", self.addr)
    }

    /// The REST base URL to give a client.
    pub fn rest_url(&self) -> String {
        self.scheme("https", "http")
    }

    /// The WebSocket base URL (`/public`, `/market`, `/private` go after it).
    pub fn ws_url(&self) -> String {
        self.scheme("wss", "ws")
    }

    pub fn config(&self) -> &BinanceSimConfig {
        &self.state.cfg
    }

    pub fn stats(&self) -> &SimStats {
        &self.state.stats
    }

    pub fn inject(&self, fault: Fault) {
        apply_fault(&self.state, fault);
    }

    /// Stops (or restarts) the books moving, so a client can catch up.
    pub fn pause_market(&self, paused: bool) {
        self.state.market.lock().expect("market lock").paused = paused;
    }

    /// Sets one level of `symbol`'s book (`bid` true for the bid side) to `qty`, 0
    /// removing it: liquidity added or taken away, published as the next diff. False
    /// for an unknown symbol or a price or size off the grid.
    pub fn set_level(&self, symbol: &str, bid: bool, price: Decimal, qty: Decimal) -> bool {
        set_level(&self.state, symbol, bid, price, qty)
    }

    /// Sets the USDT wallet (a deposit or withdrawal; no event, as a test control).
    pub fn set_wallet(&self, wallet: Decimal) {
        self.state.account.lock().expect("account lock").wallet = wallet;
    }

    /// The venue's clock now (epoch ms), as `/fapi/v1/time` reports it.
    pub fn server_time(&self) -> i64 {
        self.state.now_ms()
    }

    /// A symbol's whole book as decimals, and its last update id.
    pub fn book(&self, symbol: &str) -> Option<(BookSide, BookSide, u64)> {
        let m = self.state.market.lock().expect("market lock");
        let i = m.specs.iter().position(|s| s.symbol == symbol)?;
        let (spec, b) = (&m.specs[i], &m.books[i]);
        let conv = |side: &BTreeMap<i64, i64>| {
            side.iter()
                .map(|(p, q)| (spec.price_of(*p), spec.qty_of(*q)))
                .collect()
        };
        Some((conv(&b.bids), conv(&b.asks), b.last_id))
    }

    /// Moves `symbol`'s book by `ticks` at once and publishes the diff: the market
    /// trading through resting orders, on demand.
    pub fn move_price(&self, symbol: &str, ticks: i64) -> bool {
        move_price(&self.state, symbol, ticks)
    }

    /// Applies `fault` to the order placements `on` selects.
    pub fn order_fault(&self, fault: failures::OrderFault, on: failures::Selector) {
        self.state
            .failures
            .lock()
            .expect("failures lock")
            .add_order_fault(fault, on);
    }

    /// Applies `fault` to the user-stream events of the orders `on` selects.
    pub fn stream_fault(&self, fault: failures::StreamFault, on: failures::Selector) {
        self.state
            .failures
            .lock()
            .expect("failures lock")
            .add_stream_fault(fault, on);
    }

    /// The venue liquidates (`adl` false) or auto-deleverages the leg at the mark, as
    /// it does to an account under water; false when nothing is held there.
    pub fn force_close(&self, symbol: &str, leg: &str, adl: bool) -> bool {
        side_name(leg).is_some_and(|leg| liquidation::force_close(&self.state, symbol, leg, adl))
    }

    /// Sets the server clock `offset_ms` away from its source.
    pub fn set_clock_offset(&self, offset_ms: i64) {
        self.state.clock_offset_ms.store(offset_ms, Relaxed);
    }

    /// Moves the server clock forward by `ms` (how a fixed clock advances).
    pub fn advance_clock(&self, ms: i64) {
        self.state.clock_offset_ms.fetch_add(ms, Relaxed);
    }

    pub fn mark(&self, symbol: &str) -> Option<Decimal> {
        self.state.mark(symbol)
    }

    /// Signed amount per symbol for every open position (hedge legs summed).
    pub fn positions(&self) -> BTreeMap<String, Decimal> {
        let a = self.state.account.lock().expect("account lock");
        let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
        for ((symbol, _), h) in a.positions.iter().filter(|(_, h)| !h.amount.is_zero()) {
            *out.entry(symbol.clone()).or_default() += h.amount;
        }
        out
    }

    /// Sets a one-way position and pushes the ACCOUNT_UPDATE, as a fill elsewhere would.
    pub fn set_position(&self, symbol: &str, amount: Decimal) {
        self.set_leg(symbol, "BOTH", amount);
    }

    /// Sets one leg (`BOTH`, `LONG` or `SHORT`) and pushes the ACCOUNT_UPDATE.
    /// Returns false for an unknown side.
    pub fn set_leg(&self, symbol: &str, side: &str, amount: Decimal) -> bool {
        let Some(side) = side_name(side) else {
            return false;
        };
        let entry = self.state.mark(symbol).unwrap_or(Decimal::ONE);
        set_position(&self.state, symbol, side, amount, entry, "ORDER");
        true
    }

    /// Changes a position without telling the user stream (as if the event was
    /// lost while the client was away): only a REST read will find it.
    pub fn set_position_quietly(&self, symbol: &str, amount: Decimal) {
        let entry = self.state.mark(symbol).unwrap_or(Decimal::ONE);
        store_position(&self.state, symbol, "BOTH", amount, entry);
    }

    /// Hedge mode on or off, as `POST /fapi/v1/positionSide/dual` would.
    pub fn set_dual_side(&self, on: bool) {
        self.state.account.lock().expect("account lock").dual_side = on;
    }

    /// The active listen key, if any.
    pub fn listen_key(&self) -> Option<String> {
        let a = self.state.account.lock().expect("account lock");
        a.listen_key.as_ref().map(|(k, _)| k.clone())
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn expire_listen_key(state: &SimState) {
    let key = state
        .account
        .lock()
        .expect("account lock")
        .listen_key
        .take();
    if let Some((key, _)) = key {
        let t = state.now_ms();
        let _ = state.frames.send(Frame::User {
            listen_key: key.clone().into(),
            payload: format!(r#"{{"e":"listenKeyExpired","E":"{t}","listenKey":"{key}"}}"#).into(),
        });
    }
}

impl kit::Faults for SimState {
    type Fault = Fault;
    const NAMES: &'static [&'static str] = &[
        "drop",
        "silent",
        "resume",
        "depth_gap",
        "expire_listen_key",
        "rate_limit",
        "maintenance",
        "maintenance_off",
        "malformed",
    ];

    fn parse(name: &str, count: Option<u32>) -> Option<Fault> {
        Fault::parse(name, count)
    }

    fn apply(&self, fault: Fault) {
        apply_fault(self, fault);
    }
}

fn apply_fault(state: &SimState, fault: Fault) {
    match fault {
        Fault::Drop => {
            let _ = state.frames.send(Frame::Drop);
        }
        Fault::Silent => state.silent.store(true, Relaxed),
        Fault::Resume => state.silent.store(false, Relaxed),
        Fault::DepthGap => state.market.lock().expect("market lock").gap_next = true,
        Fault::ExpireListenKey => expire_listen_key(state),
        Fault::RateLimit => {
            let mut l = state.limiter.lock().expect("limiter lock");
            let now = state.now_ms();
            l.saturated_until_ms = now + state.cfg.weight_window.as_millis() as i64;
            rest::roll_window(&mut l, &state.cfg, now);
        }
        Fault::Maintenance => {
            // REST answers 503, sockets close and upgrades are refused until it ends.
            state.maintenance.store(true, Relaxed);
            let _ = state.frames.send(Frame::Drop);
        }
        Fault::MaintenanceOff => state.maintenance.store(false, Relaxed),
        Fault::Malformed(n) => {
            let _ = state.frames.send(Frame::Malformed(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::state::{canonical_stream, depth_payload};
    use super::*;

    #[test]
    fn every_listed_fault_parses() {
        kit::assert_fault_names::<SimState>();
    }

    #[test]
    fn stream_names_map_to_what_is_published() {
        assert_eq!(canonical_stream("btcusdt@depth@100ms"), "btcusdt@depth");
        assert_eq!(canonical_stream("BTCUSDT@depth"), "btcusdt@depth");
        assert_eq!(
            canonical_stream("btcusdt@markPrice@1s"),
            "btcusdt@markPrice"
        );
        assert_eq!(canonical_stream("btcusdt@bookTicker"), "btcusdt@bookTicker");
        assert_eq!(
            canonical_stream("BTCUSDT@optionMarkPrice"),
            "btcusdt@optionMarkPrice"
        );
        assert_eq!(canonical_stream("btcusdt@depth5"), "btcusdt@depth5");
        assert_eq!(Fault::parse("depth_gap", None), Some(Fault::DepthGap));
        assert_eq!(Fault::parse("nope", None), None);
    }

    #[test]
    fn depth_payloads_parse_back() {
        let mut rng = SplitMix64::new(1);
        let spec = listed().remove(0);
        let mut b = SimBook::new(&spec, 20, &mut rng);
        let d = b.step(&mut rng);
        let text = depth_payload(&spec, &d, 5);
        let streaming::binance::wire::MarketMessage::Depth(u) =
            streaming::binance::wire::parse_market(&text).unwrap()
        else {
            panic!("{text}")
        };
        assert_eq!(
            (u.first_id, u.last_id, u.prev_last_id),
            (d.first_id, d.last_id, d.prev_last_id)
        );
        assert_eq!(u.bids.len(), d.bids.len());
    }
}
