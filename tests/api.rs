//! The read API: positions and portfolio Greeks against a book of known positions
//! (numbers worked out by hand here), bad parameters, the SSE stream; then the whole
//! service with its three simulators: every broker's positions served, and every
//! update published to Redis with its `seq`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use model::{AccountId, AssetClass, Contract, GreekSnapshot, Greeks, OptionRight};
use processor::position_stream::PositionHub;
use rust_decimal::Decimal;
use serde_json::Value;
use streaming::Broker;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::schema::Schema;

fn snap(
    broker: Broker,
    account: &str,
    c: &Contract,
    qty: i64,
    unit: Greeks,
    und: Option<f64>,
) -> GreekSnapshot {
    let (q, c) = (Decimal::from(qty), Arc::new(c.clone()));
    GreekSnapshot {
        mark_price: Some(1.0),
        underlying_price: und,
        ..GreekSnapshot::with_greeks(
            broker,
            AccountId::new(account).unwrap(),
            c,
            q,
            unit,
            Utc::now(),
        )
    }
}

fn option(u: &str, right: OptionRight, mult: i64) -> Contract {
    let expiry = NaiveDate::from_ymd_opt(2026, 12, 18).unwrap();
    Contract::option(
        u,
        AssetClass::Option,
        expiry,
        right,
        Decimal::from(100),
        Decimal::from(mult),
    )
    .unwrap()
}

fn g(d: f64, gamma: f64, rho: Option<f64>) -> Greeks {
    Greeks {
        delta: Some(d),
        gamma: Some(gamma),
        theta: Some(-0.5),
        vega: Some(0.1),
        rho,
    }
}

async fn serve(hub: PositionHub) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, greekstream::api::router(hub)).await });
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-9
}

#[tokio::test]
async fn positions_and_portfolio_greeks_match_the_book() {
    let hub = PositionHub::new(64);
    let spy_c = option("SPY", OptionRight::Call, 100);
    let spy_p = option("SPY", OptionRight::Put, 100);
    let eth_c = option("ETHUSDT", OptionRight::Call, 1);
    let perp = Contract::perpetual("ETHUSDT", Decimal::ONE).unwrap();
    hub.apply(&snap(
        Broker::Ibkr,
        "U1",
        &spy_c,
        2,
        g(0.5, 0.02, Some(0.1)),
        Some(600.0),
    ));
    hub.apply(&snap(
        Broker::Tastytrade,
        "5WT1",
        &spy_p,
        -3,
        g(-0.4, 0.03, Some(-0.1)),
        Some(600.0),
    ));
    hub.apply(&snap(
        Broker::Binance,
        "bn",
        &perp,
        -4,
        Greeks::LINEAR,
        Some(3000.0),
    ));
    hub.apply(&snap(
        Broker::Binance,
        "bn",
        &eth_c,
        10,
        g(0.3, 0.001, None),
        Some(3000.0),
    ));
    hub.apply(&snap(
        Broker::Binance,
        "bn",
        &option("ETHUSDT", OptionRight::Put, 1),
        1,
        Greeks::default(),
        None,
    ));
    let base = serve(hub.clone()).await;
    let schema = Schema::load();

    let (status, all) = get(&format!("{base}/v1/positions")).await;
    assert_eq!(status, 200);
    schema.assert("PositionsResponse", &all);
    assert_eq!(all["seq"], 5);
    assert_eq!(all["positions"].as_array().unwrap().len(), 5);
    let (_, bn) = get(&format!(
        "{base}/v1/positions?broker=binance&underlying=ethusdt"
    ))
    .await;
    schema.assert("PositionsResponse", &bn);
    let rows = bn["positions"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let perp_row = rows
        .iter()
        .find(|r| r["contract_key"] == "ETHUSDT PERP")
        .unwrap();
    assert_eq!(perp_row["quantity"], "-4");
    assert!(close(
        &perp_row["position_greeks"]["dollar_delta"],
        -12_000.0
    ));

    // Total: delta 2·100·0.5 + (−3)·100·(−0.4) − 4 + 10·0.3 = 100 + 120 − 4 + 3 = 219.
    let (_, total) = get(&format!("{base}/v1/portfolio")).await;
    schema.assert("PortfolioResponse", &total);
    let t = &total["groups"][0];
    assert_eq!(t["group"]["kind"], "total");
    assert!(close(&t["delta"], 219.0));
    assert_eq!(t["positions"], 5);
    assert_eq!(t["without_greeks"], 1);
    // rho missing: the ETH call (none sent) and the put with no Greeks.
    assert_eq!(t["missing"]["rho"], 2);
    let (_, by_broker) = get(&format!("{base}/v1/portfolio?by=broker")).await;
    schema.assert("PortfolioResponse", &by_broker);
    let brokers: Vec<&str> = by_broker["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"]["broker"].as_str().unwrap())
        .collect();
    assert_eq!(brokers, ["ibkr", "tastytrade", "binance"]);
    let (_, spy) = get(&format!("{base}/v1/portfolio?by=underlying&underlying=SPY")).await;
    schema.assert("PortfolioResponse", &spy);
    let s = &spy["groups"][0];
    assert_eq!(s["group"]["underlying"], "SPY");
    assert!(close(&s["delta"], 220.0));
    assert!(close(&s["dollar_delta"], 220.0 * 600.0));
    // Filtered by account: the same numbers as the account's own group.
    let (_, acct) = get(&format!(
        "{base}/v1/portfolio?by=account&broker=tastytrade&account=5WT1"
    ))
    .await;
    schema.assert("PortfolioResponse", &acct);
    assert!(close(&acct["groups"][0]["delta"], 120.0));
    assert!(close(&acct["groups"][0]["gamma"], -9.0));

    let (status, err) = get(&format!("{base}/v1/portfolio?by=sector")).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("invalid_group")));
    schema.assert("Error", &err);
    let (status, err) = get(&format!("{base}/v1/positions?broker=kraken")).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_broker"))
    );
    schema.assert("Error", &err);

    // The stream: a snapshot of the (filtered) book, then updates with higher seqs.
    let addr = base.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(
        format!("GET /v1/positions/stream?broker=ibkr HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut lines = BufReader::new(sock).lines();
    let mut next_data = async || loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            return serde_json::from_str::<Value>(d).unwrap();
        }
    };
    let first = next_data().await;
    schema.assert("SnapshotEvent", &first);
    assert_eq!(first["seq"], 5);
    assert_eq!(first["positions"].as_array().unwrap().len(), 1);
    // A Tastytrade change is filtered out; the IBKR one comes through.
    hub.apply(&snap(
        Broker::Tastytrade,
        "5WT1",
        &spy_p,
        -1,
        g(-0.4, 0.03, None),
        None,
    ));
    hub.apply(&snap(
        Broker::Ibkr,
        "U1",
        &spy_c,
        0,
        Greeks::default(),
        None,
    ));
    let update = next_data().await;
    schema.assert("UpdateEvent", &update);
    assert_eq!(update["seq"], 7);
    assert_eq!(update["position"]["quantity"], "0");
    assert_eq!(update["position"]["contract_key"], "SPY 20261218 C 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_every_broker_and_publishes_updates_to_redis() {
    let db = TestDb::new().await;
    let prefix = format!(
        "gs-api-{}-{}:",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(greekstream::position_events::channel(&prefix))
        .await
        .unwrap();
    let url = db.url();
    let p = prefix.clone();
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" => Some("false".into()),
        "GS_REDIS_PREFIX" => Some(p.clone()),
        _ => None,
    })
    .unwrap();
    let app = App::start(
        cfg,
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", app.control_addr);
    let schema = Schema::load();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let brokers = loop {
        let (_, body) = get(&format!("{base}/v1/portfolio?by=broker")).await;
        schema.assert("PortfolioResponse", &body);
        let names: Vec<String> = body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["group"]["broker"].as_str().unwrap().to_owned())
            .collect();
        if names.len() == 3 || tokio::time::Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(brokers, ["ibkr", "tastytrade", "binance"]);
    // The positions the API lists are the book's.
    let (_, listed) = get(&format!("{base}/v1/positions")).await;
    // Real positions of every broker and asset class, in the documented shape.
    schema.assert("PositionsResponse", &listed);
    let keys = |v: &Value| -> Vec<(String, String, String)> {
        let mut k: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["broker"].as_str().unwrap().to_owned(),
                    p["account_id"].as_str().unwrap().to_owned(),
                    p["contract_key"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        k.sort();
        k
    };
    let book: Vec<(String, String, String)> = app.hub.read(|b| {
        let mut k: Vec<_> = b
            .positions()
            .map(|p| {
                (
                    p.broker.as_str().to_owned(),
                    p.account_id.to_string(),
                    p.contract.key().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    });
    assert_eq!(keys(&listed["positions"]), book);
    // Updates reach Redis in seq order.
    let mut stream = pubsub.on_message();
    let mut last = 0;
    for _ in 0..5 {
        let msg = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut stream),
        )
        .await
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        schema.assert("PositionEvent", &v);
        let seq = v["seq"].as_u64().unwrap();
        // Every change once, in order, none skipped (a resync, not expected here,
        // would re-send positions at their own older seqs).
        assert_eq!(v.get("resync"), None, "no resync in this test");
        if last > 0 {
            assert_eq!(seq, last + 1, "seq {seq} after {last}");
        }
        assert!(v["position"]["contract_key"].is_string());
        last = seq;
    }
    assert!(last > 0);
    drop(stream);
    let report = app.shutdown().await;
    // Every venue's option Greeks agree with the local model at the venue's own IV.
    assert!(report.processor.cross_checked > 0, "{report:?}");
    assert_eq!(report.processor.disagreements, 0, "{report:?}");
}

#[test]
fn the_schema_checker_finds_what_is_wrong() {
    let s = Schema::load();
    let ok = serde_json::json!({"code": "invalid_broker", "message": "no"});
    assert!(s.check("Error", &ok).is_empty());
    // A bad enum value, a missing field and an undocumented one.
    let errors = s.check("Error", &serde_json::json!({"code": "nope", "extra": 1}));
    assert_eq!(errors.len(), 3, "{errors:?}");
    let greeks =
        serde_json::json!({"delta": 1.0, "gamma": null, "theta": "x", "vega": 0, "rho": null});
    assert_eq!(s.check("Greeks", &greeks).len(), 1);
    // dollar_delta is documented beside the allOf'd Greeks, and required there.
    let mut pos = serde_json::json!({"delta": 1.0, "gamma": null, "theta": null, "vega": null, "rho": null, "dollar_delta": 5.0});
    let position_greeks = &s.root_def("Position")["properties"]["position_greeks"];
    assert!(s.check_with(position_greeks, &pos).is_empty());
    pos.as_object_mut().unwrap().remove("dollar_delta");
    assert_eq!(s.check_with(position_greeks, &pos).len(), 1);
}
