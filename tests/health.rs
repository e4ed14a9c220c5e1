//! `/health` of the whole service tells the truth: 503 with reasons while the writer
//! cannot commit or a configured source is silent, 200 again once it can; the same
//! verdict is exported as `greekstream_healthy`.

mod common;

use std::time::Duration;

use database::testing::{TcpProxy, TestDb};
use greekstream::app::App;
use greekstream::config::Config;
use tokio::time::Instant;

use common::{http_get, wait_for_count};

/// Polls `/health` until `pred(status, body)` holds or `limit` passes.
async fn health_until(
    addr: std::net::SocketAddr,
    limit: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let until = Instant::now() + limit;
    loop {
        let (status, body) = http_get(addr, "/health").await;
        if pred(status, &body) || Instant::now() >= until {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn healthy_gauge(addr: std::net::SocketAddr) -> Option<String> {
    let (_, exposition) = http_get(addr, "/metrics").await;
    exposition
        .lines()
        .find(|l| l.starts_with("greekstream_healthy "))
        .map(|l| l["greekstream_healthy ".len()..].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_writer_cannot_commit_and_200_once_it_can() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let url = format!(
        "postgres://postgres:postgres@{}/{}?sslmode=disable",
        proxy.addr, db.name
    );
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_IBKR" | "GS_TASTYTRADE" | "GS_BINANCE" | "GS_POSITION_EVENTS" => Some("false".into()),
        "GS_SYNTHETIC_RATE" => Some("200".into()),
        "GS_HEALTH_WRITER_WINDOW_MS" => Some("1000".into()),
        "GS_WRITER_FLUSH_TIMEOUT_MS" => Some("1000".into()),
        _ => None,
    })
    .unwrap();
    let handle = greekstream::telemetry::install_recorder().unwrap();
    let app = App::start(cfg, handle).await.unwrap();
    let rows = "SELECT least(count(*), 100) FROM greek_snapshots";
    assert_eq!(
        wait_for_count(&db.pool, rows, 100, Duration::from_secs(20)).await,
        100
    );
    let (status, body) =
        health_until(app.control_addr, Duration::from_secs(5), |s, _| s == 200).await;
    assert_eq!(status, 200, "{body}");

    proxy.cut();
    let (status, body) =
        health_until(app.control_addr, Duration::from_secs(20), |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unhealthy");
    let reasons = v["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r["check"] == "writer"
                && r["message"].as_str().unwrap().contains("cannot commit")),
        "{body}"
    );
    assert!(
        reasons
            .iter()
            .all(|r| !r["message"].as_str().unwrap().contains("postgres:")),
        "no credentials in reasons: {body}"
    );
    // The gauge follows within its 1 s tick.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(healthy_gauge(app.metrics_addr).await.as_deref(), Some("0"));

    proxy.restore();
    let (status, body) =
        health_until(app.control_addr, Duration::from_secs(30), |s, _| s == 200).await;
    assert_eq!(status, 200, "healthy again once rows commit: {body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(healthy_gauge(app.metrics_addr).await.as_deref(), Some("1"));
    let report = app.shutdown().await;
    assert_eq!(report.writer.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_source_that_sends_nothing_makes_health_503() {
    let db = TestDb::new().await;
    let url = db.url();
    // Nothing listens on this port: the IBKR source can never deliver.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_TASTYTRADE" | "GS_BINANCE" | "GS_POSITION_EVENTS" => Some("false".into()),
        "GS_IBKR_GATEWAY_URL" => Some(gateway.clone()),
        "GS_IBKR_SILENCE_MS" => Some("1000".into()),
        _ => None,
    })
    .unwrap();
    let handle = greekstream::telemetry::install_recorder().unwrap();
    let app = App::start(cfg, handle).await.unwrap();
    let (status, body) =
        health_until(app.control_addr, Duration::from_secs(20), |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reasons = v["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "only IBKR is at fault: {body}");
    assert_eq!(reasons[0]["check"], "ibkr");
    assert!(
        reasons[0]["message"]
            .as_str()
            .unwrap()
            .contains("no data since start-up"),
        "{body}"
    );
    app.shutdown().await;
}
