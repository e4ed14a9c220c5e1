//! The simulated venue's state: its configuration, books, account, orders, limits
//! and clock, and the frames it publishes.

use super::market::{Diff, SimBook, SymbolSpec};
use super::matching::Side;
use super::{failures, options};
use chrono::NaiveDate;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streaming::rng::SplitMix64;
use tokio::sync::broadcast;

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

/// What the venue publishes to sockets.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
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
    /// When the last order was taken (Unix time, ns): a benchmark in the same process
    /// times what led to it without polling.
    pub last_order_unix_ns: AtomicU64,
}

pub(crate) struct Market {
    pub(crate) specs: Vec<SymbolSpec>,
    pub(crate) books: Vec<SimBook>,
    pub(crate) rng: SplitMix64,
    pub(crate) gap_next: bool,
    pub(crate) paused: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) client_id: String,
    pub(crate) symbol: String,
    pub(crate) side: String,
    /// `BOTH`, or in hedge mode the leg it trades: `LONG` or `SHORT`.
    pub(crate) position_side: &'static str,
    pub(crate) kind: String,
    pub(crate) tif: String,
    pub(crate) qty: Decimal,
    pub(crate) price: Decimal,
    pub(crate) executed: Decimal,
    /// Σ price × quantity over the fills: the average price is this over `executed`.
    pub(crate) cum_quote: Decimal,
    pub(crate) status: &'static str,
    pub(crate) reduce_only: bool,
    pub(crate) time: i64,
    pub(crate) update_time: i64,
}

/// One held position leg.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Held {
    /// Signed: a SHORT leg (or a short one-way position) is negative.
    pub(crate) amount: Decimal,
    pub(crate) entry: Decimal,
    /// When the position last changed (`updateTime`), not when it was read.
    pub(crate) update_time: i64,
}

/// `BOTH` in one-way mode; `LONG` and `SHORT` in hedge (dual-side) mode.
pub(crate) type PositionKey = (String, &'static str);

pub(crate) fn side_name(side: &str) -> Option<&'static str> {
    match side {
        "BOTH" => Some("BOTH"),
        "LONG" => Some("LONG"),
        "SHORT" => Some("SHORT"),
        _ => None,
    }
}

#[derive(Debug, Default)]
pub(crate) struct Account {
    pub(crate) positions: BTreeMap<PositionKey, Held>,
    /// Hedge mode (`dualSidePosition`): LONG and SHORT legs per symbol.
    pub(crate) dual_side: bool,
    pub(crate) orders: BTreeMap<u64, Order>,
    /// The ids of open orders, and the latest order per client id: indexes over
    /// `orders`, kept by `Account::store`.
    pub(crate) open: std::collections::BTreeSet<u64>,
    pub(crate) client_ids: std::collections::HashMap<String, u64>,
    pub(crate) next_order_id: u64,
    pub(crate) algos: BTreeMap<u64, AlgoOrder>,
    pub(crate) next_algo_id: u64,
    pub(crate) listen_key: Option<(String, tokio::time::Instant)>,
    pub(crate) wallet: Decimal,
    /// Every fill, oldest first (bounded), for `userTrades`.
    pub(crate) trades: std::collections::VecDeque<Trade>,
    pub(crate) next_trade_id: u64,
    /// Per symbol; 20 until set.
    pub(crate) leverage: BTreeMap<String, u32>,
    /// Symbols in isolated margin mode (cross otherwise).
    pub(crate) isolated: std::collections::BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Limiter {
    pub(crate) window: u64,
    pub(crate) used: u64,
    pub(crate) strikes: u32,
    pub(crate) banned_until_ms: i64,
    /// Until then every request is over the limit (an injected `RateLimit`): a full
    /// window from the injection, not the rest of the current one, so a test's next
    /// requests cannot slip into a fresh window.
    pub(crate) saturated_until_ms: i64,
    /// ORDERS counters per account: (window index, count) for 10 s and 1 min.
    pub(crate) orders_10s: (i64, u64),
    pub(crate) orders_1m: (i64, u64),
}

pub(crate) struct SimState {
    pub(crate) cfg: BinanceSimConfig,
    /// Listed options (eapi); their positions live in `Account::positions` too.
    pub(crate) options: Vec<options::OptionSpec>,
    pub(crate) market: Mutex<Market>,
    pub(crate) account: Mutex<Account>,
    pub(crate) limiter: Mutex<Limiter>,
    pub(crate) frames: broadcast::Sender<Frame>,
    pub(crate) silent: AtomicBool,
    pub(crate) maintenance: AtomicBool,
    pub(crate) failures: Mutex<failures::Failures>,
    /// `countdownCancelAll` deadlines (server ms) per symbol.
    pub(crate) countdowns: Mutex<BTreeMap<String, i64>>,
    /// Added to the server's clock (an injected offset, or a fixed clock's advance).
    pub(crate) clock_offset_ms: std::sync::atomic::AtomicI64,
    pub(crate) started: tokio::time::Instant,
    pub(crate) stats: SimStats,
    pub(crate) next_key: AtomicU64,
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
pub(crate) fn listed() -> Vec<SymbolSpec> {
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
    pub(crate) fn publish_market(&self, stream: String, payload: String) {
        let _ = self.frames.send(Frame::Market {
            stream: stream.into(),
            payload: payload.into(),
        });
    }

    /// `payload` on the user stream after `wait` (a delayed-event fault).
    pub(crate) fn publish_user_later(&self, payload: String, wait: Duration) {
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
    pub(crate) fn now_ms(&self) -> i64 {
        let base = match self.cfg.clock {
            SimClock::Wall => chrono::Utc::now().timestamp_millis(),
            SimClock::Fixed(epoch) => epoch,
            SimClock::Tokio(epoch) => epoch + self.started.elapsed().as_millis() as i64,
        };
        base + self.clock_offset_ms.load(Relaxed)
    }

    pub(crate) fn publish_user(&self, payload: String) {
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
    pub(crate) fn mark(&self, symbol: &str) -> Option<Decimal> {
        if let Some(o) = self.option(symbol) {
            let spot = self.spot(&o.underlying)?;
            return Decimal::from_f64(o.value(spot, self.now_ms()).price).map(|d| d.round_dp(3));
        }
        let m = self.market.lock().expect("market lock");
        let i = m.specs.iter().position(|s| s.symbol == symbol)?;
        Some(m.specs[i].price_of(m.books[i].mid))
    }

    /// The notional brackets of a listed futures symbol.
    pub(crate) fn brackets(&self, symbol: &str) -> Option<model::exchange::Brackets> {
        let m = self.market.lock().expect("market lock");
        let spec = m.specs.iter().find(|s| s.symbol == symbol)?;
        Some(if spec.base == "BTC" {
            model::exchange::Brackets::btcusdt()
        } else {
            model::exchange::Brackets::altcoin()
        })
    }

    pub(crate) fn option(&self, symbol: &str) -> Option<&options::OptionSpec> {
        self.options.iter().find(|o| o.symbol == symbol)
    }

    /// The perpetual's mid as a float, the options' underlying price.
    pub(crate) fn spot(&self, perpetual: &str) -> Option<f64> {
        let m = self.market.lock().expect("market lock");
        let i = m.specs.iter().position(|s| s.symbol == perpetual)?;
        m.specs[i].price_of(m.books[i].mid).to_f64()
    }
}

pub(crate) fn depth_payload(spec: &SymbolSpec, d: &Diff, t: i64) -> String {
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

/// The `<symbol>@depth` stream and payload of one diff.
pub(crate) fn depth_stream(spec: &SymbolSpec, d: &Diff, t: i64) -> (String, String) {
    (
        format!("{}@depth", spec.symbol.to_ascii_lowercase()),
        depth_payload(spec, d, t),
    )
}

/// Sets one leg, stamped with the time of the change.
pub(crate) fn store_position(
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

pub(crate) fn set_position(
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

/// The streams a subscription name refers to, in the simulator's terms: every
/// depth speed maps to `<sym>@depth`, every mark speed to `<sym>@markPrice`.
pub(crate) fn canonical_stream(name: &str) -> String {
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

/// A conditional (algo) order as `/fapi/v1/algoOrder` keeps it.
#[derive(Debug, Clone)]
pub(crate) struct AlgoOrder {
    pub(crate) id: u64,
    pub(crate) client_id: String,
    pub(crate) symbol: String,
    pub(crate) side: String,
    pub(crate) kind: String,
    pub(crate) qty: Decimal,
    pub(crate) trigger: Decimal,
    pub(crate) price: Decimal,
    /// Trailing stops: callback in percent, and the best mark seen since placing.
    pub(crate) callback: Decimal,
    pub(crate) extreme: Decimal,
    pub(crate) tif: String,
    pub(crate) reduce_only: bool,
    pub(crate) working_type: String,
    pub(crate) status: &'static str,
    pub(crate) actual_order_id: Option<u64>,
    pub(crate) time: i64,
    pub(crate) update_time: i64,
    pub(crate) trigger_time: i64,
}

/// One fill, as `userTrades` and ORDER_TRADE_UPDATE report it.
#[derive(Debug, Clone)]
pub(crate) struct Trade {
    pub(crate) id: u64,
    pub(crate) order_id: u64,
    pub(crate) symbol: String,
    pub(crate) side: Side,
    pub(crate) position_side: &'static str,
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
    pub(crate) commission: Decimal,
    pub(crate) realized: Decimal,
    pub(crate) maker: bool,
    pub(crate) time: i64,
}
