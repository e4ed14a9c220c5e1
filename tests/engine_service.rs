//! The service's risk loop end to end: sub-accounts loaded from the ledger at start,
//! valued at the Binance simulator's marks as the in-process stream brings them, the
//! snapshot and the events landing in Redis under the service's prefix.

use std::time::Duration;

use database::ledger::{self, AccountKind, FillBooking, NewAccount};
use database::testing::TestDb;
use futures_util::StreamExt;
use greekstream::app::App;
use greekstream::config::Config;
use rust_decimal::Decimal;
use serde_json::Value;
use simulators::testkit::unique_prefix;
use trading::evaluate::LiquidationMode;
use trading::position::{Fill, OrderSide};

fn config(db: &TestDb, prefix: &str) -> Config {
    let url = db.url();
    let prefix = prefix.to_owned();
    Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_TASTYTRADE" => Some("false".into()),
        "GS_REDIS_PREFIX" => Some(prefix.clone()),
        // The position below is booked straight into the ledger, not traded on the
        // venue: the executor's reconciliation would rightly close it.
        "GS_ENGINE" => Some("false".into()),
        _ => None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_in_the_ledger_are_valued_at_the_venue_marks_and_published() {
    let db = TestDb::new().await;
    let a = ledger::create_account(
        &db.pool,
        &NewAccount {
            name: "bot-1".into(),
            kind: AccountKind::Bot,
            user_id: None,
            initial_balance: Decimal::from(10_000),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap();
    ledger::book_fill(
        &db.pool,
        &FillBooking {
            sub_account_id: a.id.clone(),
            symbol: "BTCUSDT".into(),
            fill: Fill {
                side: OrderSide::Buy,
                quantity: "0.01".parse().unwrap(),
                price: Decimal::from(50_000),
                leverage: Decimal::from(10),
            },
            fee: Decimal::ZERO,
            exchange_order_id: None,
            client_order_id: None,
            exchange_trade_id: Some("1".into()),
            order_type: "MARKET".into(),
            origin: "BOT".into(),
            close_action: "CLOSE".into(),
            babysitter_excluded: false,
            closes: None,
            reduce_only: false,
        },
    )
    .await
    .unwrap();
    let prefix = unique_prefix("engine");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("Redis (README set-up)");
    pubsub
        .subscribe(format!("{prefix}events:pnl_update"))
        .await
        .unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let app = App::start(config(&db, &prefix), recorder).await.unwrap();

    // A pnl_update at a venue mark (the simulator's BTCUSDT is near 60 000, not the
    // entry of 50 000).
    let mut stream = pubsub.on_message();
    let update: Value = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a pnl_update within 30 s")
            .unwrap();
        let v: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
        if v["markPrice"].as_f64() != Some(50_000.0) {
            break v;
        }
    };
    assert_eq!(update["subAccountId"], a.id.as_str());
    assert_eq!(update["symbol"], "BTCUSDT");
    let mark = update["markPrice"].as_f64().unwrap();
    assert!(mark > 55_000.0, "{update}");
    let upnl = update["unrealizedPnl"].as_f64().unwrap();
    assert!((upnl - (mark - 50_000.0) * 0.01).abs() < 1e-6, "{update}");
    assert!(update["seq"].as_u64().unwrap() > 1_000_000_000_000_000);

    // The snapshot under the service's prefix.
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}risk:{}", a.id);
    let snap: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    let snap: Value = serde_json::from_str(&snap).unwrap();
    assert_eq!(snap["positions"].as_array().unwrap().len(), 1);
    assert_eq!(snap["balance"].as_f64(), Some(10_000.0));
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    app.shutdown().await;
}

/// The service as it runs by default: an order placed through its executor on the
/// built-in simulator is filled, booked, and its account valued by the risk loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_executor_trades_on_the_simulator_and_the_risk_loop_values_it() {
    use database::orders::OrderKind;
    use engine::execution::PlaceOrder;
    use trading::order::OrderState;

    let db = TestDb::new().await;
    let prefix = unique_prefix("engine-exec");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("Redis (README set-up)");
    pubsub
        .psubscribe(format!("{prefix}events:*"))
        .await
        .unwrap();
    pubsub
        .psubscribe(format!("{prefix}engine:*"))
        .await
        .unwrap();
    // Listening from now: what is published before a stream exists is not kept.
    let mut stream = pubsub.into_on_message();
    let url = db.url();
    let p = prefix.clone();
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_TASTYTRADE" => Some("false".into()),
        "GS_REDIS_PREFIX" => Some(p.clone()),
        _ => None,
    })
    .unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let app = App::start(cfg, recorder).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let exec = loop {
        if let Some(e) = app.executor.get() {
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the executor did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a = ledger::create_account(
        &db.pool,
        &NewAccount {
            name: "bot-2".into(),
            kind: AccountKind::Bot,
            user_id: None,
            initial_balance: Decimal::from(10_000),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap();
    let o = exec
        .place(PlaceOrder {
            sub_account_id: a.id.clone(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            kind: OrderKind::Market,
            quantity: "0.002".parse().unwrap(),
            price: None,
            leverage: Decimal::from(10),
            reduce_only: false,
            origin: "BOT".into(),
            request_id: None,
            position_id: None,
            close_reason: None,
        })
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("order_filled")
        && seen.contains("pnl_update")
        && seen.contains("recovery_complete"))
    {
        let m = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"))
            .unwrap();
        let v: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
        let channel = m.get_channel_name().to_owned();
        if v["subAccountId"] == a.id.as_str() || channel.ends_with("engine:recovery_complete") {
            seen.insert(channel.rsplit(':').next().unwrap().to_owned());
        }
    }
    let row = database::orders::by_client_id(&db.pool, &o.client_order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.order.state, OrderState::Filled);
    app.shutdown().await;
}

/// Every metric the trading dashboard queries is one the engine defines.
#[test]
fn the_trading_dashboard_queries_only_metrics_we_export() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard = std::fs::read_to_string(format!(
        "{root}/grafana/dashboards/greekstream-trading.json"
    ))
    .unwrap();
    let mut sources = String::new();
    for dir in [
        "src",
        "streaming/src",
        "processor/src",
        "database/src",
        "bus/src",
        "engine/src",
        "gateway/src",
    ] {
        let mut stack = vec![std::path::PathBuf::from(format!("{root}/{dir}"))];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    sources.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
    }
    let mut names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("greekstream_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 15, "{names:?}");
    for n in names {
        let base = n.trim_end_matches("_bucket");
        assert!(
            sources.contains(&format!("\"{base}\"")),
            "the dashboard queries {n}, which nothing defines"
        );
    }
}
