//! The whole service, as `greekstream run` starts it, against its own database:
//! synthetic data flows into greek_snapshots, the listeners answer, and every metric
//! the Grafana dashboard queries is one the service exports.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;

use common::{count, http_get, wait_for_count};

/// Metric names a dashboard's PromQL refers to.
fn dashboard_metrics(json: &serde_json::Value, out: &mut BTreeSet<String>) {
    match json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if let (true, Some(expr)) = (k == "expr", v.as_str()) {
                    let mut rest = expr;
                    while let Some(i) = rest.find("greekstream_") {
                        let name: String = rest[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        rest = &rest[i + name.len()..];
                        out.insert(name);
                    }
                } else {
                    dashboard_metrics(v, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_metrics(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_streams_synthetic_data_and_exports_what_the_dashboard_needs() {
    let db = TestDb::new().await;
    let url = db.url();
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC_RATE" => Some("500".into()),
        // The shared Redis is not this test's to clear (tests/binance_service.rs
        // covers the cache under its own key prefix).
        "GS_PRICE_CACHE" => Some("false".into()),
        _ => None,
    })
    .unwrap();
    let handle = greekstream::telemetry::install_recorder().unwrap();
    let app = App::start(cfg, handle).await.unwrap();

    let rows = "SELECT least(count(*), 300) FROM greek_snapshots";
    assert_eq!(
        wait_for_count(&app.pool, rows, 300, Duration::from_secs(20)).await,
        300
    );
    let (status, body) = http_get(app.control_addr, "/health").await;
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");

    // Partitions were prepared, so rows sit in this month's partition, not the default one.
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM greek_snapshots WHERE tableoid = 'greek_snapshots_default'::regclass").await,
        0
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/grafana/dashboards/greekstream-ingest.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut wanted = BTreeSet::new();
    dashboard_metrics(&dashboard, &mut wanted);
    assert!(
        wanted.len() >= 10,
        "the dashboard queries our metrics: {wanted:?}"
    );
    // A histogram shows once it has a sample (the model's deviation, after the first
    // venue option quote), so look again for a while before calling one missing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let exposition = loop {
        let (status, exposition) = http_get(app.metrics_addr, "/metrics").await;
        assert_eq!(status, 200);
        let exported: BTreeSet<String> = exposition
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|m| !exported.contains(m.as_str()))
            .collect();
        if missing.is_empty() {
            break exposition;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard metrics not exported: {missing:?}\nexported: {exported:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The latency histogram has the synthetic broker's series.
    assert!(exposition.contains("greekstream_ingest_latency_seconds_bucket{broker=\"synthetic\""));

    let pool = app.pool.clone();
    let report = app.shutdown().await;
    let stored = count(&pool, "SELECT count(*) FROM greek_snapshots").await;
    assert_eq!(stored as u64, report.writer.persisted);
    assert_eq!(
        report.writer.persisted, report.processor.forwarded,
        "{report:?}"
    );
    assert!(count(&pool, "SELECT count(*) FROM positions_current").await > 0);
}
