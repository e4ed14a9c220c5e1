//! The service with its Tastytrade source on the in-process simulator, against its
//! own database: rows with the right keys, signs and units; NaN values stored as
//! missing; an account-streamer position change reflected in the current positions.

mod common;

use std::time::Duration;

use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use simulators::tastytrade::Fault;

use common::{count, wait_for_count};

fn config(db: &TestDb) -> Config {
    let url = db.url();
    Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_BINANCE" => Some("false".into()),
        // Positions must move through the account streamer, not a REST poll.
        "GS_TASTYTRADE_POSITIONS_REFRESH_MS" => Some("600000".into()),
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
async fn tastytrade_greeks_land_with_the_right_keys_signs_and_units() {
    let db = TestDb::new().await;
    let app = App::start(config(&db), recorder()).await.unwrap();
    let sim = app
        .tastytrade_sim
        .as_ref()
        .expect("no credentials → simulator");
    let held = sim.positions();
    let current = "SELECT count(*) FROM positions_current WHERE broker = 'tastytrade'
        AND underlying_price IS NOT NULL AND mark_price IS NOT NULL";
    assert_eq!(
        wait_for_count(
            &app.pool,
            current,
            held.len() as i64,
            Duration::from_secs(30)
        )
        .await,
        held.len() as i64,
        "every position has a current row with prices"
    );
    let pool = &app.pool;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM greek_snapshots WHERE broker <> 'tastytrade'"
        )
        .await,
        0
    );
    // Canonical option keys, venue Greeks, IV as a fraction, rho present.
    let bad_options =
        "SELECT count(*) FROM greek_snapshots WHERE broker = 'tastytrade' AND contract_key ~ ' [CP] '
        AND NOT (contract_key ~ '^(SPY|QQQ|AAPL) [0-9]{8} [CP] [0-9]+(\\.[0-9]+)?$'
                 AND greeks_source = 'venue' AND multiplier = 100 AND rho IS NOT NULL
                 AND implied_vol BETWEEN 0.1 AND 0.4 AND abs(delta) <= 1 AND gamma > 0
                 AND vega > 0 AND mark_price > 0)";
    let offenders: Option<String> = sqlx::query_scalar(&bad_options.replace(
        "SELECT count(*)",
        "SELECT string_agg(concat_ws(' ', contract_key, implied_vol, delta, gamma, theta, vega, rho, mark_price, greeks_source), '; ')",
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(offenders, None);
    let bad_scaling = "SELECT count(*) FROM greek_snapshots WHERE broker = 'tastytrade' AND NOT (
        abs(position_delta - quantity * multiplier * delta) < 1e-6
        AND abs(position_gamma - quantity * multiplier * gamma) < 1e-6
        AND abs(position_theta - quantity * multiplier * theta) < 1e-6
        AND abs(position_vega - quantity * multiplier * vega) < 1e-6
        AND abs(position_rho - quantity * multiplier * rho) < 1e-6)";
    assert_eq!(count(pool, bad_scaling).await, 0);
    let bad_sign = "SELECT count(*) FROM greek_snapshots WHERE broker = 'tastytrade'
        AND ((contract_key ~ ' C ' AND (delta < 0 OR rho < 0)) OR (contract_key ~ ' P ' AND (delta > 0 OR rho > 0)))";
    assert_eq!(count(pool, bad_sign).await, 0);
    let stocks = "SELECT count(*) FROM positions_current WHERE broker = 'tastytrade'
        AND contract_key IN ('SPY', 'QQQ', 'AAPL') AND delta = 1 AND position_delta = quantity
        AND greeks_source = 'model' AND underlying_price > 0";
    assert_eq!(count(pool, stocks).await, 6, "3 stocks × 2 accounts");
    let total: i64 = sqlx::query_scalar(
        "SELECT sum(quantity)::bigint FROM positions_current WHERE broker = 'tastytrade'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        total,
        held.iter().map(|p| p.2).sum::<i64>(),
        "signed quantities: unsigned quantity + direction at the venue"
    );

    // NaN delta and vega from the venue: stored as NULL, the rest of the row kept.
    sim.inject(Fault::NaN(40));
    let nan_rows = "SELECT least(count(*), 40) FROM greek_snapshots WHERE broker = 'tastytrade'
        AND delta IS NULL AND vega IS NULL AND position_delta IS NULL AND gamma IS NOT NULL";
    assert_eq!(
        wait_for_count(pool, nan_rows, 40, Duration::from_secs(10)).await,
        40
    );

    // A position change pushed by the account streamer.
    let (account, symbol, qty) = held
        .iter()
        .find(|p| p.1.len() == 21)
        .cloned()
        .expect("an option");
    let occ = streaming::tastytrade::symbols::parse_occ(&symbol).unwrap();
    let key = format!(
        "{} {} {} {}",
        occ.root,
        occ.expiry.format("%Y%m%d"),
        occ.right,
        occ.strike.normalize()
    );
    assert!(sim.set_position(&account, &symbol, -qty - 3));
    let moved = format!(
        "SELECT count(*) FROM positions_current WHERE broker = 'tastytrade'
         AND account_id = '{account}' AND contract_key = '{key}' AND quantity = {}
         AND position_delta = quantity * 100 * delta",
        -qty - 3
    );
    assert_eq!(
        wait_for_count(pool, &moved, 1, Duration::from_secs(10)).await,
        1,
        "{symbol} moved to {}",
        -qty - 3
    );

    let pool = app.pool.clone();
    let report = app.shutdown().await;
    assert_eq!(report.processor.rejected, 0, "{report:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM greek_snapshots").await as u64,
        report.writer.persisted
    );
}
