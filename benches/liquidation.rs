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
//!
//! `-- --soak 1000 [--pace-ms 100]`: that many accounts are liquidated one after another as the price
//! falls through their thresholds, every other one raced by a manual close sent the
//! moment its threshold is crossed; then counted: positions closed by more than one
//! order (goal: none), closed quantity beyond a position's, the venue's net against
//! the house.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use rust_decimal::Decimal;
use simulators::binance::BinanceSim;
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

/// The thresholds' arithmetic: account k (0-based) holds a long `q` at `entry` on
/// `first + step·k`, maintenance `rate` of its entry notional, and crosses T = 0.9 at
/// `cross(k)`.
struct Ladder {
    entry: Decimal,
    q: Decimal,
    rate: Decimal,
    first: Decimal,
    step: Decimal,
}

impl Ladder {
    fn cross(&self, k: usize) -> Decimal {
        let balance = self.first + self.step * Decimal::from(k as u64);
        let maintenance = self.q * self.entry * self.rate;
        self.entry + (maintenance / Decimal::new(9, 1) - balance) / self.q
    }
}

fn mid(sim: &BinanceSim) -> Decimal {
    let (bids, asks, _) = sim.book("BTCUSDT").unwrap();
    (bids.iter().next_back().unwrap().0 + asks.iter().next().unwrap().0) / Decimal::TWO
}

/// Moves BTCUSDT's book to 1 USDT past account `k`'s threshold (the next account's is
/// 9 USDT further).
fn past(sim: &BinanceSim, ladder: &Ladder, k: usize) {
    let ticks: i64 = ((ladder.cross(k) - Decimal::ONE - mid(sim)) / Decimal::new(1, 1))
        .round()
        .try_into()
        .unwrap();
    assert!(sim.move_price("BTCUSDT", ticks));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let soak = args
        .iter()
        .any(|a| a == "--soak")
        .then(|| arg(&args, "--soak", 1000));
    let holders = arg(&args, "--accounts", 500);
    let rounds = arg(&args, "--rounds", 100);
    // Between two accounts of the soak: 100 ms keeps its orders (one per account, one
    // more for every other) under the venue's 1 200 a minute.
    let pace_ms = arg(&args, "--pace-ms", 100);
    let db = TestDb::new().await;
    let (url, prefix) = (db.url(), unique_prefix("bench-liq"));
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_TASTYTRADE" => Some("false".into()),
        "GS_REDIS_PREFIX" => Some(prefix.clone()),
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
    // The shared account can carry every sub-account's loss: the venue's own
    // liquidation of it is another test's subject.
    sim.set_wallet(Decimal::from(100_000_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ladder = Ladder {
        entry: mid(sim).round_dp(1),
        q: Decimal::new(1, 2),
        rate: Decimal::new(5, 3),
        first: Decimal::from(40),
        step: Decimal::new(1, 1),
    };
    let n = soak.unwrap_or(holders + rounds);
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
    .bind(ladder.first)
    .bind(ladder.step)
    .bind(ladder.rate)
    .bind(ladder.entry)
    .bind(ladder.q)
    .execute(&app.pool)
    .await
    .expect("seed");
    let house = sim.positions().get("BTCUSDT").copied().unwrap_or_default();
    sim.set_position_quietly("BTCUSDT", house + ladder.q * Decimal::from(n as u64));
    let accounts: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.id::text, p.id::text FROM sub_accounts a JOIN virtual_positions p ON p.sub_account_id = a.id
          WHERE a.name LIKE 'liq-%' ORDER BY a.name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (id, _) in &accounts {
        exec.book_changed(id).await;
    }
    println!(
        "{n} accounts holding BTCUSDT seeded and watched in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    match soak {
        None => latency(sim, &ladder, holders, rounds).await,
        Some(n) => {
            let started = std::time::Instant::now();
            for (k, (account, position)) in accounts.iter().enumerate().take(n) {
                past(sim, &ladder, k);
                if k % 2 == 0 {
                    let (exec, account, position) =
                        (exec.clone(), account.clone(), position.clone());
                    tokio::spawn(async move { exec.close(&account, &position).await });
                }
                tokio::time::sleep(Duration::from_millis(pace_ms as u64)).await;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM virtual_positions WHERE status = 'OPEN'",
                )
                .fetch_one(&app.pool)
                .await
                .unwrap();
                if open == 0 || tokio::time::Instant::now() > deadline {
                    println!(
                        "soak: {n} accounts in {:.1} s, {open} positions left open",
                        started.elapsed().as_secs_f64()
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (doubles, over, closes): (i64, i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE orders > 1), count(*) FILTER (WHERE closed > held),
                        coalesce(sum(orders), 0)::bigint
                   FROM (SELECT p.id, p.quantity AS held,
                                count(DISTINCT t.client_order_id) AS orders,
                                coalesce(sum(t.quantity), 0) AS closed
                           FROM virtual_positions p
                           LEFT JOIN trade_executions t ON t.position_id = p.id AND t.action <> 'OPEN'
                          GROUP BY p.id, p.quantity) s",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let by_origin: Vec<(String, i64)> = sqlx::query_as(
                "SELECT origin || ' ' || state || coalesce(' ' || reject_code, ''), count(*)
                   FROM orders WHERE reduce_only GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(&app.pool)
            .await
            .unwrap();
            let (virtual_closes, taken): (i64, Decimal) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM trade_executions WHERE type = 'VIRTUAL'),
                        (SELECT coalesce(sum(quantity), 0) FROM house_log WHERE symbol = 'BTCUSDT')",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let detail: Vec<(String, i64, Decimal)> = sqlx::query_as(
                "SELECT 'house ' || reason, count(*), sum(quantity) FROM house_log GROUP BY reason
                 UNION ALL
                 SELECT 'book ' || action, count(*), sum(quantity) FROM trade_executions
                  WHERE type = 'VIRTUAL' GROUP BY action",
            )
            .fetch_all(&app.pool)
            .await
            .unwrap();
            println!(
                "soak: {detail:?}; requests the venue refused for its rate limits {}",
                sim.stats().rate_limited.load(Relaxed)
            );
            println!(
                "soak: positions closed by more than one order {doubles}, closed beyond what they held {over}; \
                 close orders booked {closes}, closes in the book {virtual_closes}; \
                 reduce-only orders by origin {by_origin:?}; venue BTCUSDT {} = house {house} + taken on {taken} \
                 + book 0",
                sim.positions().get("BTCUSDT").copied().unwrap_or_default()
            );
        }
    }
    app.shutdown().await;
}

async fn latency(sim: &BinanceSim, ladder: &Ladder, holders: usize, rounds: usize) {
    let mut samples = Vec::with_capacity(rounds);
    let mut missed = 0;
    for k in 0..rounds {
        let before = sim.stats().orders.load(Relaxed);
        let t0 = unix_ns();
        past(sim, ladder, k);
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
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "mark → forced order on the venue, µs ({holders}+ accounts holding the symbol): \
         n {} p50 {} p95 {} p99 {} max {}; rounds without an order {missed}",
        samples.len(),
        at(0.5),
        at(0.95),
        at(0.99),
        samples[samples.len() - 1]
    );
}
