//! The service with its IBKR source on the in-process gateway simulator, against its
//! own database: rows with the right keys, signs and units; and one broker failing
//! does not stop another.

mod common;

use std::time::Duration;

use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use simulators::ibkr::{Fault, IbkrSim, IbkrSimConfig};

use common::{count, wait_for_count};

fn config(db: &TestDb, extra: &[(&str, &str)]) -> Config {
    let url = db.url();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_IBKR_POSITIONS_REFRESH_MS" => Some("1000".into()),
        "GS_TASTYTRADE" | "GS_BINANCE" => Some("false".into()),
        _ => extra
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone()),
    })
    .unwrap()
}

fn recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ibkr_greeks_land_with_the_right_keys_signs_and_units() {
    let db = TestDb::new().await;
    let app = App::start(config(&db, &[("GS_SYNTHETIC", "false")]), recorder())
        .await
        .unwrap();
    let sim = app
        .ibkr_sim
        .as_ref()
        .expect("no gateway configured → simulator");
    let positions = sim.position_count() as i64;
    let held = "SELECT count(*) FROM positions_current WHERE broker = 'ibkr' AND underlying_price IS NOT NULL";
    assert_eq!(
        wait_for_count(&app.pool, held, positions, Duration::from_secs(30)).await,
        positions,
        "every position has a current row with its underlying's price"
    );
    let pool = &app.pool;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM greek_snapshots WHERE broker <> 'ibkr'"
        )
        .await,
        0
    );
    // Option keys in the canonical form, Greeks from the venue, IV as a fraction, no rho;
    // theta is negative except for deep in-the-money (European) puts.
    let bad_options =
        "SELECT count(*) FROM greek_snapshots WHERE broker = 'ibkr' AND contract_key ~ ' [CP] '
        AND NOT (contract_key ~ '^(SPY|QQQ|AAPL) [0-9]{8} [CP] [0-9]+(\\.[0-9]+)?$'
                 AND greeks_source = 'venue' AND multiplier = 100 AND rho IS NULL
                 AND implied_vol BETWEEN 0.05 AND 1.0 AND abs(delta) <= 1 AND gamma >= 0
                 AND (theta < 0 OR contract_key ~ ' P ') AND vega > 0 AND mark_price > 0)";
    let offenders: Option<String> = sqlx::query_scalar(&bad_options.replace(
        "SELECT count(*)",
        "SELECT string_agg(concat_ws(' ', contract_key, implied_vol, delta, gamma, theta, vega, mark_price, greeks_source), '; ')",
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(offenders, None);
    // Position Greeks = signed quantity × multiplier × unit Greek, on every row.
    let bad_scaling = "SELECT count(*) FROM greek_snapshots WHERE broker = 'ibkr' AND NOT (
        abs(position_delta - quantity * multiplier * delta) < 1e-6
        AND abs(position_theta - quantity * multiplier * theta) < 1e-6
        AND abs(position_vega - quantity * multiplier * vega) < 1e-6)";
    assert_eq!(count(pool, bad_scaling).await, 0);
    // Calls have positive delta, puts negative.
    let bad_sign = "SELECT count(*) FROM greek_snapshots WHERE broker = 'ibkr'
        AND ((contract_key ~ ' C ' AND delta < 0) OR (contract_key ~ ' P ' AND delta > 0))";
    assert_eq!(count(pool, bad_sign).await, 0);
    // Stocks: delta 1 per share by definition, labelled as the model's.
    let stocks = "SELECT count(*) FROM positions_current WHERE broker = 'ibkr'
        AND contract_key IN ('SPY', 'QQQ', 'AAPL') AND delta = 1 AND position_delta = quantity
        AND greeks_source = 'model' AND underlying_price > 0";
    assert_eq!(count(pool, stocks).await, 6, "3 stocks × 2 accounts");
    let total: i64 = sqlx::query_scalar(
        "SELECT sum(quantity)::bigint FROM positions_current WHERE broker = 'ibkr'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        total,
        sim.total_quantity(),
        "signed quantities as the gateway reports them"
    );

    // A dropped socket: rows keep coming after it.
    let before = count(pool, "SELECT count(*) FROM greek_snapshots").await;
    sim.inject(Fault::Drop);
    let after = format!(
        "SELECT least(count(*), {}) FROM greek_snapshots",
        before + 200
    );
    assert_eq!(
        wait_for_count(pool, &after, before + 200, Duration::from_secs(10)).await,
        before + 200
    );
    let pool = app.pool.clone();
    let report = app.shutdown().await;
    assert_eq!(report.processor.rejected, 0, "{report:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM greek_snapshots").await as u64,
        report.writer.persisted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_does_not_stop_the_other_sources() {
    let db = TestDb::new().await;
    // Port 9 (discard) on loopback: connection refused, over and over.
    let cfg = config(
        &db,
        &[
            ("GS_IBKR_GATEWAY_URL", "http://127.0.0.1:9"),
            // A real venue is configured: the synthetic source runs only when asked.
            ("GS_SYNTHETIC", "true"),
            ("GS_SYNTHETIC_RATE", "200"),
        ],
    );
    let app = App::start(cfg, recorder()).await.unwrap();
    assert!(app.ibkr_sim.is_none());
    let rows = "SELECT least(count(*), 200) FROM greek_snapshots WHERE broker = 'synthetic'";
    assert_eq!(
        wait_for_count(&app.pool, rows, 200, Duration::from_secs(20)).await,
        200
    );
    assert_eq!(app.ibkr_stats.ws.connects(), 0);
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM greek_snapshots WHERE broker = 'ibkr'"
        )
        .await,
        0
    );
    // Shutdown is not held up by the failing source's retries.
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("shutdown while the gateway is unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_without_venue_greeks_get_model_greeks_labelled_as_such() {
    let db = TestDb::new().await;
    // QQQ options come with prices only; SPY and AAPL options keep the venue's Greeks.
    let sim = IbkrSim::bind(
        IbkrSimConfig {
            no_option_analytics: vec!["QQQ".into()],
            tick_interval: Duration::from_millis(100),
            ..IbkrSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let url = sim.url();
    let app = App::start(
        config(
            &db,
            &[("GS_SYNTHETIC", "false"), ("GS_IBKR_GATEWAY_URL", &url)],
        ),
        recorder(),
    )
    .await
    .unwrap();
    let pool = app.pool.clone();
    // 6 QQQ options × 2 accounts, each with its model Greeks.
    let modelled = "SELECT count(*) FROM positions_current WHERE broker = 'ibkr'
        AND underlying = 'QQQ' AND contract_key ~ ' [CP] ' AND greeks_source = 'model'";
    assert_eq!(
        wait_for_count(&pool, modelled, 12, Duration::from_secs(30)).await,
        12
    );
    // key, iv, delta, gamma, theta, vega, rho, position delta's error
    type Row = (String, f64, f64, f64, f64, f64, f64, f64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT contract_key, implied_vol, delta, gamma, theta, vega, rho,
                position_delta - quantity * multiplier * delta
         FROM positions_current WHERE broker = 'ibkr' AND underlying = 'QQQ'
           AND contract_key ~ ' [CP] '",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 12);
    for (key, iv, delta, gamma, theta, vega, rho, scaling) in rows {
        // "QQQ 20261221 C 510"
        let parts: Vec<&str> = key.split(' ').collect();
        let expiry = chrono::NaiveDate::parse_from_str(parts[1], "%Y%m%d").unwrap();
        let right = parts[2].chars().next().unwrap();
        let strike: f64 = parts[3].parse().unwrap();
        let truth = sim.option_vol("QQQ", expiry, right, strike).unwrap();
        // The IV is solved from a mark rounded to the cent and an underlying price
        // that may be one tick older than the option's: close, not exact.
        assert!((iv - truth).abs() < 0.01, "{key}: iv {iv} vs {truth}");
        let call = right == 'C';
        assert!(
            if call {
                (0.0..=1.0).contains(&delta)
            } else {
                (-1.0..=0.0).contains(&delta)
            },
            "{key}: delta {delta}"
        );
        assert!(
            gamma > 0.0 && vega > 0.0,
            "{key}: gamma {gamma} vega {vega}"
        );
        assert!(!call || theta < 0.0, "{key}: theta {theta}");
        assert!(if call { rho > 0.0 } else { rho < 0.0 }, "{key}: rho {rho}");
        assert!(
            scaling.abs() < 1e-6,
            "{key}: position delta off by {scaling}"
        );
    }
    // The venue's Greeks are never overwritten by the model.
    let venue_only = "SELECT count(*) FROM greek_snapshots WHERE broker = 'ibkr'
        AND contract_key ~ ' [CP] ' AND underlying <> 'QQQ' AND greeks_source IS DISTINCT FROM 'venue'";
    assert_eq!(count(&pool, venue_only).await, 0);
    let report = app.shutdown().await;
    // Every model-labelled option row is one the processor counted as filled in.
    let labelled = count(
        &pool,
        "SELECT count(*) FROM greek_snapshots WHERE contract_key ~ ' [CP] ' AND greeks_source = 'model'",
    )
    .await as u64;
    assert_eq!(labelled, report.processor.model_greeks, "{report:?}");
    assert!(labelled >= 12);
    // The SPY and AAPL options' venue Greeks were cross-checked, and agree with the
    // model (the simulator prices with BSM too).
    assert!(report.processor.cross_checked > 0, "{report:?}");
    assert_eq!(report.processor.disagreements, 0, "{report:?}");
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_seen_only_by_the_rest_read_closes_the_position_in_every_current_view() {
    let db = TestDb::new().await;
    let app = App::start(
        config(
            &db,
            &[
                ("GS_SYNTHETIC", "false"),
                ("GS_POSITIONS_INTERVAL_MS", "100"),
            ],
        ),
        recorder(),
    )
    .await
    .unwrap();
    let sim = app.ibkr_sim.as_ref().unwrap();
    let held = sim.position_count() as i64;
    let open = "SELECT count(*) FROM positions_current WHERE broker = 'ibkr' AND quantity <> 0";
    assert_eq!(
        wait_for_count(&app.pool, open, held, Duration::from_secs(30)).await,
        held
    );
    let in_hub = || app.hub.read(|b| b.len()) as i64;
    assert_eq!(in_hub(), held);

    // Closed at the venue, as an operator or a trade would: only the next REST read
    // of the positions can see it (market data just stops mentioning it).
    let (account, conid, _) = sim
        .holdings()
        .into_iter()
        .find(|(_, _, q)| *q != 0)
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/position/{account}", sim.url()))
        .json(&serde_json::json!({"conid": conid, "quantity": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        wait_for_count(&app.pool, open, held - 1, Duration::from_secs(20)).await,
        held - 1,
        "positions_current shows the close"
    );
    assert_eq!(
        in_hub(),
        held - 1,
        "the book (and so /v1/positions, /v1/portfolio) drops it"
    );
    let total: i64 = sqlx::query_scalar(
        "SELECT sum(quantity)::bigint FROM positions_current WHERE broker = 'ibkr'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(total, sim.total_quantity());
    assert_eq!(
        count(
            &app.pool,
            "SELECT positions FROM portfolio_greeks WHERE group_kind = 'total'"
        )
        .await,
        held - 1
    );
    // A bad control request is refused with a clear error, and changes nothing.
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/position/{account}", sim.url()))
        .json(&serde_json::json!({"conid": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    app.shutdown().await;
}
