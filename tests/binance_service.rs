//! The service with its Binance source on the in-process simulator, against its own
//! database and its own Redis key prefix: linear delta rows with Binance-native keys,
//! an ACCOUNT_UPDATE reaching `greek_snapshots` and `positions_current`, and prices
//! in the cache.

mod common;

use std::time::Duration;

use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use rust_decimal::Decimal;

use common::{count, wait_for_count};

fn config(db: &TestDb, prefix: &str) -> Config {
    let url = db.url();
    let prefix = prefix.to_owned();
    Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_TASTYTRADE" => Some("false".into()),
        // Positions must move through the user data stream, not a REST poll.
        "GS_BINANCE_POSITIONS_REFRESH_MS" => Some("600000".into()),
        "GS_REDIS_PREFIX" => Some(prefix.clone()),
        _ => None,
    })
    .unwrap()
}

fn recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_positions_land_as_linear_delta_and_account_updates_move_them() {
    let db = TestDb::new().await;
    let prefix = format!(
        "gs-svc-{}-{}:",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let app = App::start(config(&db, &prefix), recorder()).await.unwrap();
    let sim = app.binance_sim.as_ref().expect("no keys → simulator");
    let pool = &app.pool;
    let priced = "SELECT count(*) FROM positions_current WHERE broker = 'binance'
        AND mark_price > 0 AND underlying_price > 0";
    assert_eq!(
        wait_for_count(pool, priced, 5, Duration::from_secs(30)).await,
        5,
        "every position has a current row with its mark"
    );
    let linear = "SELECT count(*) FROM positions_current WHERE broker = 'binance'
        AND contract_key IN ('BTCUSDT PERP', 'ETHUSDT PERP', 'BTCUSDT 20261225 FUT')
        AND delta = 1 AND gamma = 0 AND position_delta = quantity * multiplier
        AND multiplier = 1 AND greeks_source = 'model' AND account_id = 'binance'";
    assert_eq!(count(pool, linear).await, 3);
    // Options carry the venue's Greeks (Binance sends no rho) and an IV.
    let options = "SELECT count(*) FROM positions_current WHERE broker = 'binance'
        AND greeks_source = 'venue' AND rho IS NULL AND implied_vol > 0 AND (
             (contract_key = 'BTCUSDT 20261225 C 60000' AND delta > 0 AND delta < 1
                AND position_delta = 2 * delta AND gamma > 0 AND theta < 0 AND vega > 0)
          OR (contract_key = 'ETHUSDT 20261225 P 3000' AND delta < 0 AND delta > -1
                AND position_delta = -10 * delta AND position_gamma < 0))";
    assert_eq!(count(pool, options).await, 2);
    for (symbol, amount) in sim.positions() {
        let key = match symbol.as_str() {
            "BTC-261225-60000-C" => "BTCUSDT 20261225 C 60000".to_owned(),
            "ETH-261225-3000-P" => "ETHUSDT 20261225 P 3000".to_owned(),
            s if s.contains('_') => "BTCUSDT 20261225 FUT".to_owned(),
            s => format!("{s} PERP"),
        };
        let q: Decimal = sqlx::query_scalar(
            "SELECT quantity FROM positions_current WHERE broker = 'binance' AND contract_key = $1",
        )
        .bind(&key)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(q, amount, "{key}");
    }
    // An ACCOUNT_UPDATE moves ETHUSDT from -4 to +2.5: a snapshot row with the new
    // delta lands, and the current position follows.
    sim.set_position("ETHUSDT", "2.5".parse().unwrap());
    let moved = "SELECT count(*) FROM positions_current WHERE broker = 'binance'
        AND contract_key = 'ETHUSDT PERP' AND quantity = 2.5 AND position_delta = 2.5";
    assert_eq!(
        wait_for_count(pool, moved, 1, Duration::from_secs(15)).await,
        1
    );
    let rows = "SELECT count(*) FROM greek_snapshots WHERE broker = 'binance'
        AND contract_key = 'ETHUSDT PERP' AND position_delta = 2.5";
    assert!(count(pool, rows).await >= 1);
    assert!(
        app.binance_stats
            .account_updates
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // Prices are cached under this test's prefix.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}price:ETHUSDT");
    let mut mark: Option<String> = None;
    for _ in 0..100 {
        mark = redis::cmd("HGET")
            .arg(&key)
            .arg("mark")
            .query_async(&mut conn)
            .await
            .unwrap();
        if mark.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(mark.is_some_and(|m| m.parse::<f64>().unwrap() > 0.0));
    app.shutdown().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedge_mode_legs_are_two_positions_and_rows_carry_the_time_they_were_observed() {
    let db = TestDb::new().await;
    let prefix = format!(
        "gs-svc-hedge-{}-{}:",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let app = App::start(config(&db, &prefix), recorder()).await.unwrap();
    let sim = app.binance_sim.as_ref().unwrap();
    let pool = &app.pool;
    let priced =
        "SELECT count(*) FROM positions_current WHERE broker = 'binance' AND mark_price > 0";
    assert_eq!(
        wait_for_count(pool, priced, 5, Duration::from_secs(30)).await,
        5
    );
    // The simulator's positions were opened a month ago (their updateTime): rows are
    // stamped when their mark was observed, so none lands in an old partition.
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM greek_snapshots WHERE broker = 'binance'
              AND event_time < now() - interval '1 hour'"
        )
        .await,
        0
    );

    // Hedge mode: BTCUSDT is held long and short at once.
    sim.set_position("BTCUSDT", Decimal::ZERO);
    sim.set_dual_side(true);
    assert!(sim.set_leg("BTCUSDT", "LONG", "0.3".parse().unwrap()));
    assert!(sim.set_leg("BTCUSDT", "SHORT", "-0.1".parse().unwrap()));
    let legs = "SELECT count(*) FROM positions_current WHERE broker = 'binance'
        AND contract_key = 'BTCUSDT PERP'
        AND ((position_side = 'long' AND quantity = 0.3) OR (position_side = 'short' AND quantity = -0.1))";
    assert_eq!(
        wait_for_count(pool, legs, 2, Duration::from_secs(20)).await,
        2,
        "both legs, neither overwriting the other"
    );
    let hub_legs = app.hub.read(|b| {
        b.positions()
            .filter(|p| p.contract.key().as_str() == "BTCUSDT PERP")
            .map(|p| (p.side.as_str(), p.quantity.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
    });
    assert_eq!(
        hub_legs,
        [("long", "0.3".to_owned()), ("short", "-0.1".to_owned())]
            .into_iter()
            .collect()
    );
    // Net delta counts both legs.
    let net: f64 = sqlx::query_scalar(
        "SELECT sum(position_delta) FROM positions_current WHERE broker = 'binance' AND contract_key = 'BTCUSDT PERP'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!((net - 0.2).abs() < 1e-9, "{net}");
    // Closing one leg leaves the other.
    sim.set_leg("BTCUSDT", "SHORT", Decimal::ZERO);
    let open_legs = "SELECT count(*) FROM positions_current WHERE broker = 'binance'
        AND contract_key = 'BTCUSDT PERP' AND quantity <> 0";
    assert_eq!(
        wait_for_count(pool, open_legs, 1, Duration::from_secs(20)).await,
        1
    );
    app.shutdown().await;
}
