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

mod algo;
pub mod failures;
pub mod market;
pub mod matching;
pub mod options;
mod orders;
mod rest;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use self::market::{Diff, SimBook, SymbolSpec};
use crate::kit;
use streaming::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct BinanceSimConfig {
    pub seed: u64,
    pub api_key: String,
    pub secret: String,
    /// How often the books move.
    pub tick_interval: Duration,
    /// Diff events per symbol per tick (raise it for volume tests).
    pub events_per_tick: usize,
    pub mark_interval: Duration,
    /// How often every socket gets a ping frame (3 min on the venue).
    pub ping_interval: Duration,
    pub listen_key_ttl: Duration,
    /// REQUEST_WEIGHT per window, and the window (1 minute on the venue).
    pub weight_limit: u64,
    pub weight_window: Duration,
    /// 429s within one window before the IP is banned (418).
    pub ban_after: u32,
    pub ban_duration: Duration,
    pub book_depth: i64,
    pub tls: bool,
    /// The `unit` every listed option carries in `/eapi/v1/exchangeInfo`
    /// (underlying per contract; 1 for BTC and ETH options on the venue).
    pub option_unit: u32,
    /// Fee rates per fill (VIP 0 on the venue: 0.02 % maker, 0.05 % taker).
    pub maker_fee: Decimal,
    /// Start with the books still (`pause_market(false)` starts them): what replays
    /// need, since the first market step would otherwise race the test's pause.
    pub market_paused: bool,
    /// The venue's clock (wall time by default).
    pub clock: SimClock,
    /// How long an "accepted then timeout" reply is held back.
    pub hang: Duration,
    /// The ORDERS limits (300 per 10 s and 1200 per minute on the venue).
    pub orders_per_10s: u64,
    pub orders_per_minute: u64,
    pub taker_fee: Decimal,
    /// Lots a resting order can fill per book step when the market trades through
    /// it: small enough that large orders fill over several steps.
    pub resting_liquidity: i64,
}

impl Default for BinanceSimConfig {
    fn default() -> Self {
        Self {
            seed: 17,
            api_key: "sim-api-key".into(),
            secret: "sim-secret".into(),
            tick_interval: Duration::from_millis(100),
            events_per_tick: 1,
            mark_interval: Duration::from_secs(1),
            ping_interval: Duration::from_secs(180),
            listen_key_ttl: Duration::from_secs(3600),
            weight_limit: 2400,
            weight_window: Duration::from_secs(60),
            ban_after: 3,
            ban_duration: Duration::from_secs(120),
            book_depth: 50,
            tls: false,
            option_unit: 1,
            maker_fee: Decimal::new(2, 4),
            hang: Duration::from_secs(30),
            clock: SimClock::Wall,
            market_paused: false,
            orders_per_10s: 300,
            orders_per_minute: 1200,
            taker_fee: Decimal::new(5, 4),
            resting_liquidity: 250,
        }
    }
}

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

/// What the venue publishes to sockets.
#[derive(Debug, Clone)]
enum Frame {
    /// A market payload for `stream` (`btcusdt@depth`, `btcusdt@bookTicker`, ...).
    Market {
        stream: Arc<str>,
        payload: Arc<str>,
    },
    /// A user-data payload for the sockets of `listen_key`.
    User {
        listen_key: Arc<str>,
        payload: Arc<str>,
    },
    Drop,
    Malformed(u32),
}

#[derive(Debug, Default)]
pub struct SimStats {
    pub rest_requests: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub rate_limited: AtomicU64,
    pub banned: AtomicU64,
    pub ws_connections: AtomicU64,
    pub depth_events: AtomicU64,
    pub gaps: AtomicU64,
    pub snapshots: AtomicU64,
    pub listen_keys_created: AtomicU64,
    pub orders: AtomicU64,
}

struct Market {
    specs: Vec<SymbolSpec>,
    books: Vec<SimBook>,
    rng: SplitMix64,
    gap_next: bool,
    paused: bool,
}

#[derive(Debug, Clone)]
struct Order {
    id: u64,
    client_id: String,
    symbol: String,
    side: String,
    /// `BOTH`, or in hedge mode the leg it trades: `LONG` or `SHORT`.
    position_side: &'static str,
    kind: String,
    tif: String,
    qty: Decimal,
    price: Decimal,
    executed: Decimal,
    /// Σ price × quantity over the fills: the average price is this over `executed`.
    cum_quote: Decimal,
    status: &'static str,
    reduce_only: bool,
    time: i64,
    update_time: i64,
}

/// One held position leg.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Held {
    /// Signed: a SHORT leg (or a short one-way position) is negative.
    amount: Decimal,
    entry: Decimal,
    /// When the position last changed (`updateTime`), not when it was read.
    update_time: i64,
}

/// `BOTH` in one-way mode; `LONG` and `SHORT` in hedge (dual-side) mode.
type PositionKey = (String, &'static str);

fn side_name(side: &str) -> Option<&'static str> {
    match side {
        "BOTH" => Some("BOTH"),
        "LONG" => Some("LONG"),
        "SHORT" => Some("SHORT"),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Account {
    positions: BTreeMap<PositionKey, Held>,
    /// Hedge mode (`dualSidePosition`): LONG and SHORT legs per symbol.
    dual_side: bool,
    orders: BTreeMap<u64, Order>,
    /// The ids of open orders, and the latest order per client id: indexes over
    /// `orders`, kept by `Account::store`.
    open: std::collections::BTreeSet<u64>,
    client_ids: std::collections::HashMap<String, u64>,
    next_order_id: u64,
    algos: BTreeMap<u64, algo::AlgoOrder>,
    next_algo_id: u64,
    listen_key: Option<(String, tokio::time::Instant)>,
    wallet: Decimal,
    /// Every fill, oldest first (bounded), for `userTrades`.
    trades: std::collections::VecDeque<orders::Trade>,
    next_trade_id: u64,
    /// Per symbol; 20 until set.
    leverage: BTreeMap<String, u32>,
    /// Symbols in isolated margin mode (cross otherwise).
    isolated: std::collections::BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Limiter {
    window: u64,
    used: u64,
    strikes: u32,
    banned_until_ms: i64,
    /// Until then every request is over the limit (an injected `RateLimit`): a full
    /// window from the injection, not the rest of the current one, so a test's next
    /// requests cannot slip into a fresh window.
    saturated_until_ms: i64,
    /// ORDERS counters per account: (window index, count) for 10 s and 1 min.
    orders_10s: (i64, u64),
    orders_1m: (i64, u64),
}

struct SimState {
    cfg: BinanceSimConfig,
    /// Listed options (eapi); their positions live in `Account::positions` too.
    options: Vec<options::OptionSpec>,
    market: Mutex<Market>,
    account: Mutex<Account>,
    limiter: Mutex<Limiter>,
    frames: broadcast::Sender<Frame>,
    silent: AtomicBool,
    maintenance: AtomicBool,
    failures: Mutex<failures::Failures>,
    /// `countdownCancelAll` deadlines (server ms) per symbol.
    countdowns: Mutex<BTreeMap<String, i64>>,
    /// Added to the server's clock (an injected offset, or a fixed clock's advance).
    clock_offset_ms: std::sync::atomic::AtomicI64,
    started: tokio::time::Instant,
    stats: SimStats,
    next_key: AtomicU64,
}

/// Where the venue's clock comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimClock {
    /// The machine's clock.
    Wall,
    /// Frozen at this epoch (ms): it moves only when advanced (`advance_clock`,
    /// `/sim/clock`), so the same seed and commands replay byte for byte.
    Fixed(i64),
    /// This epoch plus tokio's time since start: follows `tokio::time::pause`.
    Tokio(i64),
}

/// The contracts the simulator lists.
fn listed() -> Vec<SymbolSpec> {
    let d = |s: &str| s.parse::<Decimal>().expect("literal");
    vec![
        SymbolSpec::perpetual("BTC", 60_000.0, d("0.1"), d("0.001")),
        SymbolSpec::perpetual("ETH", 3_000.0, d("0.01"), d("0.001")),
        SymbolSpec::perpetual("SOL", 150.0, d("0.01"), d("1")),
        SymbolSpec::quarterly(
            "BTC",
            NaiveDate::from_ymd_opt(2026, 12, 25).expect("date"),
            61_000.0,
            d("0.1"),
            d("0.001"),
        ),
    ]
}

impl SimState {
    fn publish_market(&self, stream: String, payload: String) {
        let _ = self.frames.send(Frame::Market {
            stream: stream.into(),
            payload: payload.into(),
        });
    }

    /// `payload` on the user stream after `wait` (a delayed-event fault).
    fn publish_user_later(&self, payload: String, wait: Duration) {
        let key = self
            .account
            .lock()
            .expect("account lock")
            .listen_key
            .clone();
        let frames = self.frames.clone();
        if let Some((key, _)) = key {
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = frames.send(Frame::User {
                    listen_key: key.into(),
                    payload: payload.into(),
                });
            });
        }
    }

    /// The server's clock in epoch ms: the configured source plus the injected
    /// offset (and any advance of a fixed clock).
    fn now_ms(&self) -> i64 {
        let base = match self.cfg.clock {
            SimClock::Wall => chrono::Utc::now().timestamp_millis(),
            SimClock::Fixed(epoch) => epoch,
            SimClock::Tokio(epoch) => epoch + self.started.elapsed().as_millis() as i64,
        };
        base + self.clock_offset_ms.load(Relaxed)
    }

    fn publish_user(&self, payload: String) {
        let key = self
            .account
            .lock()
            .expect("account lock")
            .listen_key
            .clone();
        if let Some((key, _)) = key {
            let _ = self.frames.send(Frame::User {
                listen_key: key.into(),
                payload: payload.into(),
            });
        }
    }

    /// Marks of every symbol: the book's mid; an option's model value on it.
    fn mark(&self, symbol: &str) -> Option<Decimal> {
        if let Some(o) = self.option(symbol) {
            let spot = self.spot(&o.underlying)?;
            return Decimal::from_f64(o.value(spot, self.now_ms()).price).map(|d| d.round_dp(3));
        }
        let m = self.market.lock().expect("market lock");
        let i = m.specs.iter().position(|s| s.symbol == symbol)?;
        Some(m.specs[i].price_of(m.books[i].mid))
    }

    /// The notional brackets of a listed futures symbol.
    fn brackets(&self, symbol: &str) -> Option<model::exchange::Brackets> {
        let m = self.market.lock().expect("market lock");
        let spec = m.specs.iter().find(|s| s.symbol == symbol)?;
        Some(if spec.base == "BTC" {
            model::exchange::Brackets::btcusdt()
        } else {
            model::exchange::Brackets::altcoin()
        })
    }

    fn option(&self, symbol: &str) -> Option<&options::OptionSpec> {
        self.options.iter().find(|o| o.symbol == symbol)
    }

    /// The perpetual's mid as a float, the options' underlying price.
    fn spot(&self, perpetual: &str) -> Option<f64> {
        let m = self.market.lock().expect("market lock");
        let i = m.specs.iter().position(|s| s.symbol == perpetual)?;
        m.specs[i].price_of(m.books[i].mid).to_f64()
    }
}

fn depth_payload(spec: &SymbolSpec, d: &Diff, t: i64) -> String {
    let mut s = String::with_capacity(128 + 24 * (d.bids.len() + d.asks.len()));
    s.push_str(&format!(
        r#"{{"e":"depthUpdate","E":{t},"T":{t},"s":"{}","U":{},"u":{},"pu":{},"b":["#,
        spec.symbol, d.first_id, d.last_id, d.prev_last_id
    ));
    let side = |s: &mut String, levels: &[(i64, i64)]| {
        for (i, (p, q)) in levels.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                r#"["{}","{}"]"#,
                spec.price_of(*p),
                spec.qty_of(*q)
            ));
        }
    };
    side(&mut s, &d.bids);
    s.push_str(r#"],"a":["#);
    side(&mut s, &d.asks);
    s.push_str("]}");
    s
}

fn book_ticker_payload(spec: &SymbolSpec, b: &SimBook, t: i64) -> Option<String> {
    let ((bp, bq), (ap, aq)) = b.best()?;
    Some(format!(
        r#"{{"e":"bookTicker","u":{},"E":{t},"T":{t},"s":"{}","b":"{}","B":"{}","a":"{}","A":"{}"}}"#,
        b.last_id,
        spec.symbol,
        spec.price_of(bp),
        spec.qty_of(bq),
        spec.price_of(ap),
        spec.qty_of(aq)
    ))
}

/// Moves every book `events_per_tick` steps and publishes the diffs (all but a
/// swallowed one when a gap is due) and the book tickers; resting orders the market
/// now trades through fill.
fn tick(state: &SimState) {
    let mut fills = orders::Outbox::default();
    {
        let mut m = state.market.lock().expect("market lock");
        if m.paused {
            return;
        }
        let t = state.now_ms();
        let gap = std::mem::take(&mut m.gap_next);
        let Market {
            specs, books, rng, ..
        } = &mut *m;
        for (spec, book) in specs.iter().zip(books.iter_mut()) {
            for n in 0..state.cfg.events_per_tick {
                let diff = book.step(rng);
                state.stats.depth_events.fetch_add(1, Relaxed);
                if gap && n == 0 {
                    state.stats.gaps.fetch_add(1, Relaxed);
                    continue;
                }
                let (stream, payload) = depth_stream(spec, &diff, t);
                state.publish_market(stream, payload);
            }
            if let Some(p) = book_ticker_payload(spec, book, t) {
                let lower = spec.symbol.to_ascii_lowercase();
                state.publish_market(format!("{lower}@bookTicker"), p);
            }
            let mut a = state.account.lock().expect("account lock");
            if !a.open.is_empty() {
                orders::on_book_step(state, &mut a, spec, book, &mut fills);
            }
        }
    }
    fills.publish(state);
    fire_countdowns(state);
}

/// The dead-man switch: a symbol whose countdown ran out loses every open order.
fn fire_countdowns(state: &SimState) {
    let now = state.now_ms();
    let due: Vec<String> = {
        let mut c = state.countdowns.lock().expect("countdowns lock");
        let due: Vec<String> = c
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for s in &due {
            c.remove(s);
        }
        due
    };
    for symbol in due {
        orders::cancel_all(state, &symbol);
    }
}

/// The `<symbol>@depth` stream and payload of one diff.
fn depth_stream(spec: &SymbolSpec, d: &Diff, t: i64) -> (String, String) {
    (
        format!("{}@depth", spec.symbol.to_ascii_lowercase()),
        depth_payload(spec, d, t),
    )
}

/// `<underlying>@optionMarkPrice`: one array per underlying with every option on it.
fn publish_option_marks(state: &SimState, t: i64) {
    let mut by_underlying: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for o in &state.options {
        if let Some(spot) = state.spot(&o.underlying) {
            by_underlying
                .entry(&o.underlying)
                .or_default()
                .push(options::stream_row(o, spot, t));
        }
    }
    for (underlying, rows) in by_underlying {
        state.publish_market(
            format!("{}@optionMarkPrice", underlying.to_ascii_lowercase()),
            serde_json::Value::Array(rows).to_string(),
        );
    }
}

fn publish_marks(state: &SimState) {
    let t = state.now_ms();
    publish_option_marks(state, t);
    algo::on_marks(state);
    orders::auto_liquidate(state);
    let marks: Vec<(String, Decimal)> = {
        let m = state.market.lock().expect("market lock");
        m.specs
            .iter()
            .zip(&m.books)
            .map(|(s, b)| (s.symbol.clone(), s.price_of(b.mid)))
            .collect()
    };
    for (symbol, mark) in marks {
        let next_funding = (t / 28_800_000 + 1) * 28_800_000;
        state.publish_market(
            format!("{}@markPrice", symbol.to_ascii_lowercase()),
            format!(
                r#"{{"e":"markPriceUpdate","E":{t},"s":"{symbol}","p":"{mark}","i":"{mark}","P":"{mark}","r":"0.00010000","T":{next_funding}}}"#
            ),
        );
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
        side_name(leg).is_some_and(|leg| orders::force_close(&self.state, symbol, leg, adl))
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

/// Sets one leg, stamped with the time of the change.
fn store_position(
    state: &SimState,
    symbol: &str,
    side: &'static str,
    amount: Decimal,
    entry: Decimal,
) {
    let mut a = state.account.lock().expect("account lock");
    a.positions.insert(
        (symbol.to_owned(), side),
        Held {
            amount,
            entry,
            update_time: state.now_ms(),
        },
    );
}

fn set_position(
    state: &SimState,
    symbol: &str,
    side: &'static str,
    amount: Decimal,
    entry: Decimal,
    reason: &str,
) {
    store_position(state, symbol, side, amount, entry);
    if state.option(symbol).is_some() {
        // Options report on their own (eapi) user stream, which is not simulated: a
        // client finds the change on its next `/eapi/v1/position` read.
        return;
    }
    let t = state.now_ms();
    let wallet = state.account.lock().expect("account lock").wallet;
    state.publish_user(format!(
        r#"{{"e":"ACCOUNT_UPDATE","E":{t},"T":{t},"a":{{"m":"{reason}","B":[{{"a":"USDT","wb":"{wallet}","cw":"{wallet}","bc":"0"}}],"P":[{{"s":"{symbol}","pa":"{}","ep":"{}","bep":"{}","cr":"0","up":"0","mt":"cross","iw":"0","ps":"{side}"}}]}}}}"#,
        amount.normalize(),
        entry.normalize(),
        entry.normalize()
    ));
}

fn move_price(state: &SimState, symbol: &str, ticks: i64) -> bool {
    let published = {
        let mut m = state.market.lock().expect("market lock");
        let Market {
            specs, books, rng, ..
        } = &mut *m;
        let Some(i) = specs.iter().position(|s| s.symbol == symbol) else {
            return false;
        };
        let diff = books[i].shift(ticks, rng);
        depth_stream(&specs[i], &diff, state.now_ms())
    };
    state.publish_market(published.0, published.1);
    true
}

fn set_level(state: &SimState, symbol: &str, bid: bool, price: Decimal, qty: Decimal) -> bool {
    let published = {
        let mut m = state.market.lock().expect("market lock");
        let Market { specs, books, .. } = &mut *m;
        let Some(i) = specs.iter().position(|s| s.symbol == symbol) else {
            return false;
        };
        let spec = &specs[i];
        let lots = qty / spec.step;
        let (Some(ticks), true) = (
            spec.ticks(price),
            lots.fract().is_zero() && qty >= Decimal::ZERO,
        ) else {
            return false;
        };
        let level = vec![(ticks, lots.to_i64().unwrap_or(0))];
        let diff = if bid {
            books[i].set_levels(level, Vec::new())
        } else {
            books[i].set_levels(Vec::new(), level)
        };
        depth_stream(spec, &diff, state.now_ms())
    };
    state.publish_market(published.0, published.1);
    true
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

/// The streams a subscription name refers to, in the simulator's terms: every
/// depth speed maps to `<sym>@depth`, every mark speed to `<sym>@markPrice`.
fn canonical_stream(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let Some((sym, kind)) = lower.split_once('@') else {
        return lower;
    };
    let kind = if kind.starts_with("depth")
        && !kind.starts_with("depth5")
        && !kind.starts_with("depth10")
        && !kind.starts_with("depth20")
    {
        "depth"
    } else if kind.starts_with("markprice") {
        "markPrice"
    } else if kind == "bookticker" {
        "bookTicker"
    } else if kind == "optionmarkprice" {
        "optionMarkPrice"
    } else {
        kind
    };
    format!("{sym}@{kind}")
}

#[cfg(test)]
mod tests {
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
