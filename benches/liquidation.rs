//! `cargo bench --bench liquidation -- [--accounts 500] [--rounds 100]`: how long from
//! the venue publishing a price that takes an account past its threshold to the
//! forced close reaching the venue, with `--accounts` accounts holding the ticking
//! symbol all the while (not a pass/fail test). The whole service runs on its
//! built-in simulator and a scratch database; Redis as configured.
//!
//! Each account holds a BTCUSDT long of 0.01 at the same entry, INSTANT_CLOSE, on a
//! balance 0.10 USDT above the previous one: their thresholds lie 10 USDT apart in
//! price. Each round moves the book (the simulator publishes the depth diff at once)
//! to just past the next account's threshold, and times the simulator's own clock from
//! just before the move to the forced order's arrival. The interval contains the
//! venue's side (its market data frame and the order's request over loopback, the
//! close's position read) as well as ours: it bounds ours from above.
//! Goal (issue 27): ≤ 5 ms p99 beyond the venue's latency.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use rust_decimal::Decimal;
use simulators::testkit::unique_prefix;

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let holders = arg(&args, "--accounts", 500);
    let rounds = arg(&args, "--rounds", 100);
    let db = TestDb::new().await;
    let (url, prefix) = (db.url(), unique_prefix("bench-liq"));
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_TASTYTRADE" => Some("false".into()),
        "GS_REDIS_PREFIX" => Some(prefix.clone()),
        "RUST_LOG" => Some("error".into()),
        _ => None,
    })
    .expect("config");
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let app = App::start(cfg, recorder).await.expect("start");
    while app.executor.get().is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exec = app.executor.get().unwrap().clone();
    let sim = app.binance_sim.as_ref().expect("the built-in simulator");
    sim.pause_market(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mid = |sim: &simulators::binance::BinanceSim| {
        let (bids, asks, _) = sim.book("BTCUSDT").unwrap();
        (bids.iter().next_back().unwrap().0 + asks.iter().next().unwrap().0) / Decimal::TWO
    };
    let entry = mid(sim).round_dp(1);
    // Account k (0-based) crosses T = 0.9 at entry + (maintenance / 0.9 − balance_k) / q.
    let (q, rate) = (Decimal::new(1, 2), Decimal::new(5, 3));
    let first_balance = Decimal::from(40);
    let step = Decimal::new(1, 1);
    let n = holders + rounds;
    let seeded = std::time::Instant::now();
    sqlx::query(
        "WITH a AS (
           INSERT INTO sub_accounts (id, name, type, initial_balance, current_balance,
                                     liquidation_mode, maintenance_rate)
           SELECT gen_random_uuid(), 'liq-' || lpad(i::text, 5, '0'), 'USER', b, b, 'INSTANT_CLOSE', $4
             FROM (SELECT i, $2 + $3 * i AS b FROM generate_series(0, $1 - 1) i) s
           RETURNING id, name)
         INSERT INTO virtual_positions (sub_account_id, symbol, side, entry_price, quantity,
                                        notional, leverage, margin)
         SELECT id, 'BTCUSDT', 'LONG', $5, $6, $5 * $6, 20, $5 * $6 / 20 FROM a",
    )
    .bind(n as i64)
    .bind(first_balance)
    .bind(step)
    .bind(rate)
    .bind(entry)
    .bind(q)
    .execute(&app.pool)
    .await
    .expect("seed");
    let house = sim.positions().get("BTCUSDT").copied().unwrap_or_default();
    sim.set_position_quietly("BTCUSDT", house + q * Decimal::from(n as u64));
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM sub_accounts WHERE name LIKE 'liq-%' ORDER BY name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for id in &ids {
        exec.book_changed(id).await;
    }
    println!(
        "{n} accounts holding BTCUSDT seeded and watched in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let threshold = Decimal::new(9, 1);
    let maintenance = q * entry * rate;
    let mut samples = Vec::with_capacity(rounds);
    let mut missed = 0;
    for k in 0..rounds {
        let balance = first_balance + step * Decimal::from(k as u64);
        let cross = entry + (maintenance / threshold - balance) / q;
        // 1 USDT past it: the next account's threshold is 9 USDT further.
        let ticks: i64 = ((cross - Decimal::ONE - mid(sim)) / Decimal::new(1, 1))
            .round()
            .try_into()
            .unwrap();
        let before = sim.stats().orders.load(Relaxed);
        let t0 = unix_ns();
        assert!(sim.move_price("BTCUSDT", ticks));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while sim.stats().orders.load(Relaxed) == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if sim.stats().orders.load(Relaxed) == before {
            missed += 1;
            continue;
        }
        let at = sim.stats().last_order_unix_ns.load(Relaxed);
        samples.push(at.saturating_sub(t0) / 1000);
        // The close's fill booked before the next round.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let liquidated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sub_accounts WHERE name LIKE 'liq-%' AND status = 'LIQUIDATED'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let forced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE origin = 'LIQUIDATION'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "mark → forced order on the venue, µs ({holders}+ accounts holding the symbol): \
         n {} p50 {} p95 {} p99 {} max {}; rounds without an order {missed}; \
         accounts liquidated {liquidated}, forced orders {forced}",
        samples.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        samples[samples.len() - 1]
    );
    app.shutdown().await;
}
