//! What execution costs, measured beside the simulator (not a pass/fail test): the
//! executor places `--orders` market orders one after another on the in-process
//! Binance simulator, its user stream feeding the fills back, against a scratch
//! database (`database::testing::TestDb`, `DATABASE_URL`'s server). Reported, in µs:
//!
//! - overhead: command accepted → request on the wire (account, rules and price
//!   reads, the pre-trade checks, the order journaled first) — goal ≤ 1 ms p99;
//! - row (beside): the order row's commit, written while the request is out;
//! - ack: request on the wire → the venue's reply (the simulator and loopback);
//! - fill booking: a fill's user-stream frame → booked and its events queued — goal
//!   ≤ 20 ms p95.
//!
//! `cargo bench --bench execution -- [--orders 1000] [--rate N]`: `--rate` paces the
//! orders (per second; Binance takes at most 300 per 10 s and 1 200 per minute on an
//! account, so 20/s is the most it sustains); without it they go flat out. `--sync
//! always|background`: the journal's durability (`engine::journal::JournalSync`).

use std::sync::Arc;
use std::time::Duration;

use bus::outbox::outbox;
use database::ledger::{self, AccountKind, NewAccount};
use database::orders::OrderKind;
use database::testing::TestDb;
use engine::execution::{ExecutionConfig, Executor, PlaceOrder};
use engine::journal::JournalSync;
use engine::prices::{PriceChain, PriceChainConfig};
use simulators::binance::{BinanceSim, BinanceSimConfig};
use streaming::binance::prices::Prices;
use streaming::binance::rest::{Keys, Rest};
use streaming::binance::{run_binance, BinanceConfig, BinanceStats};
use streaming::secret::Secret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::evaluate::LiquidationMode;
use trading::position::OrderSide;

fn percentiles(name: &str, v: &[u32]) {
    let mut v = v.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        println!("{name}: no samples");
        return;
    }
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "{name:>13} µs: n {} p50 {} p95 {} p99 {} max {}",
        v.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        v[v.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let orders: usize = args
        .iter()
        .position(|a| a == "--orders")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let sync: JournalSync = args
        .iter()
        .position(|a| a == "--sync")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--sync always|background"))
        .unwrap_or_default();
    let journal_dir = std::env::temp_dir().join(format!("gs-bench-journal-{}", std::process::id()));
    // Orders per second; none: one after another, flat out.
    let rate: Option<f64> = args
        .iter()
        .position(|a| a == "--rate")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let sim = BinanceSim::bind(
        BinanceSimConfig {
            orders_per_10s: 1_000_000,
            orders_per_minute: 1_000_000,
            weight_limit: 10_000_000,
            ..BinanceSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let keys = Keys {
        api_key: Secret::new(sim.config().api_key.clone()),
        secret: Secret::new(sim.config().secret.clone()),
    };
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO risk_rules (is_global, max_notional_per_trade, max_total_exposure) VALUES (true, 1000000, 1000000000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let account = ledger::create_account(
        &db.pool,
        &NewAccount {
            name: "bench".into(),
            kind: AccountKind::Bot,
            user_id: None,
            initial_balance: 1_000_000.into(),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap()
    .id;
    let cancel = CancellationToken::new();
    let (feed_tx, feed_rx) = mpsc::channel(4096);
    let stats = Arc::new(BinanceStats::default());
    let mut cfg = BinanceConfig::new(sim.rest_url(), sim.ws_url(), keys.clone());
    cfg.orders = Some(feed_tx);
    cfg.symbols = vec!["BTCUSDT".into()];
    let (tx, mut rx) = mpsc::channel(4096);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tokio::spawn(run_binance(cfg, tx, stats.clone(), cancel.clone()));
    let prices: Arc<Prices> = stats.prices.clone();
    let chain = PriceChain::new(PriceChainConfig::default())
        .with_stream(prices.clone())
        .with_rest(reqwest::Client::new(), &sim.rest_url());
    let (out, mut events) = outbox("bench:", 1_000_000, 1);
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    // The simulator's own positions belong to no sub-account.
    let house = sim
        .positions()
        .into_iter()
        .filter(|(s, _)| !s.contains('-'))
        .collect();
    let exec = Executor::start(
        ExecutionConfig {
            house,
            journal_sync: sync,
            journal_dir: journal_dir.clone(),
            ..ExecutionConfig::default()
        },
        db.pool.clone(),
        Rest::new(&sim.rest_url(), keys, Duration::from_secs(5)).unwrap(),
        chain,
        Some(prices),
        out,
        None,
        cancel.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(exec.clone().run_feed(feed_rx));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    let mut pace = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    for n in 0..orders {
        if let Some(t) = pace.as_mut() {
            t.tick().await;
        }
        exec.place(PlaceOrder {
            sub_account_id: account.clone(),
            symbol: "BTCUSDT".into(),
            side: if n % 2 == 0 {
                OrderSide::Buy
            } else {
                OrderSide::Sell
            },
            kind: OrderKind::Market,
            quantity: "0.002".parse().unwrap(),
            price: None,
            leverage: 10.into(),
            reduce_only: false,
            origin: "BOT".into(),
            request_id: None,
            position_id: None,
            close_reason: None,
        })
        .await
        .unwrap();
    }
    let elapsed = started.elapsed();
    let s = exec.stats();
    let booked_by_then = s.fills_booked.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut l = s.latencies.lock().unwrap();
    println!(
        "execution bench ({sync:?}): {orders} orders in {:.2} s ({:.0} orders/s), {} fills booked ({booked_by_then} by the last order)",
        elapsed.as_secs_f64(),
        orders as f64 / elapsed.as_secs_f64(),
        s.fills_booked.load(std::sync::atomic::Ordering::Relaxed)
    );
    percentiles("overhead", l.overhead_us.make_contiguous());
    percentiles("  checks", l.checks_us.make_contiguous());
    percentiles("  journal", l.write_us.make_contiguous());
    percentiles("row (beside)", l.row_us.make_contiguous());
    percentiles("ack", l.ack_us.make_contiguous());
    percentiles("fill booking", l.fill_booking_us.make_contiguous());
    percentiles("  its tx", l.booking_tx_us.make_contiguous());
    percentiles("  after it", l.booking_after_us.make_contiguous());
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&journal_dir);
    if std::env::var_os("GS_BENCH_KEEP_DB").is_some() {
        // Left for EXPLAIN: the database as the run left it.
        println!("database kept: {}", db.name);
        std::mem::forget(db);
    }
}
