//! The risk loop on paused time: ticks throttled per account with a trailing
//! valuation, one `margin_warning` per entry into the zone, a snapshot at once after
//! the last position closes, marks read from the in-process prices; and its writes
//! landing in real Redis in `seq` order.

use std::sync::Arc;
use std::time::Duration;

use bus::outbox::{outbox, run_writer, BusWrite, ERRORS};
use bus::RedisLink;
use engine::risk_loop::{run_risk_loop, RiskInput, RiskLoopConfig};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde_json::Value;
use simulators::testkit::unique_prefix;
use streaming::binance::prices::Prices;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::evaluate::{Account, LiquidationMode, OpenPosition};
use trading::position::{Position, Side};
use trading::risk::AccountStatus;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// 10 long at 100, maintenance 0.5 %: MR = 5 / (balance + 10·(mark − 100)).
fn account(id: &str, balance: &str, symbols: &[&str]) -> Account {
    Account {
        id: id.into(),
        status: AccountStatus::Active,
        liquidation_mode: LiquidationMode::Adl30,
        balance: d(balance),
        maintenance_rate: d("0.005"),
        threshold: d("0.9"),
        positions: symbols
            .iter()
            .map(|s| OpenPosition {
                id: format!("{id}-{s}").into(),
                symbol: (*s).into(),
                position: Position {
                    side: Side::Long,
                    quantity: d("10"),
                    entry_price: d("100"),
                    leverage: d("10"),
                },
                babysitter_excluded: false,
                opened_at: 1,
            })
            .collect(),
    }
}

/// A kind of write seen by the test: (event type or "snapshot", JSON).
fn decode(w: BusWrite) -> (String, Value) {
    match w {
        BusWrite::Publish {
            channel, payload, ..
        } => (
            channel.rsplit(':').next().unwrap().to_owned(),
            serde_json::from_str(&payload).unwrap(),
        ),
        BusWrite::Set { key, value, ttl } => {
            assert!(key.starts_with("pms:risk:"), "{key}");
            assert_eq!(ttl, Duration::from_secs(120));
            ("snapshot".into(), serde_json::from_str(&value).unwrap())
        }
    }
}

struct Loop {
    inputs: mpsc::Sender<RiskInput>,
    writes: bus::outbox::Drain,
    cancel: CancellationToken,
}

impl Loop {
    fn start(initial: Vec<Account>, prices: Option<Arc<Prices>>) -> Self {
        let (out, writes) = outbox("pms:", 10_000, 1);
        let (inputs, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        tokio::spawn(run_risk_loop(
            RiskLoopConfig::default(),
            initial,
            prices,
            rx,
            out,
            None,
            cancel.clone(),
        ));
        Self {
            inputs,
            writes,
            cancel,
        }
    }

    async fn mark(&self, symbol: &str, price: &str) {
        self.inputs
            .send(RiskInput::Mark {
                symbol: symbol.into(),
                price: d(price),
            })
            .await
            .unwrap();
    }

    /// Lets the loop run for `ms` of paused time and returns what it wrote meanwhile.
    async fn after(&mut self, ms: u64) -> Vec<(String, Value)> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut out = Vec::new();
        while let Some(w) = self.writes.try_recv() {
            out.push(decode(w));
        }
        out
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn count(writes: &[(String, Value)], kind: &str) -> usize {
    writes.iter().filter(|(k, _)| k == kind).count()
}

#[tokio::test(start_paused = true)]
async fn ticks_inside_the_window_are_valued_once_at_its_end_with_the_last_price() {
    let mut l = Loop::start(vec![account("a", "1000", &["BTCUSDT"])], None);
    let boot = l.after(1).await;
    assert_eq!(
        (count(&boot, "margin_update"), count(&boot, "snapshot")),
        (1, 1)
    );
    l.after(200).await;
    for px in ["101", "102", "103", "104", "105"] {
        l.mark("BTCUSDT", px).await;
    }
    let burst = l.after(10).await;
    assert_eq!(count(&burst, "margin_update"), 1, "the first tick only");
    let trailing = l.after(100).await;
    let margins: Vec<&Value> = trailing
        .iter()
        .filter(|(k, _)| k == "margin_update")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(margins.len(), 1);
    assert_eq!(margins[0]["unrealizedPnl"], 50.0, "the last price, 105");
    let pnl = trailing.iter().find(|(k, _)| k == "pnl_update").unwrap();
    assert_eq!(
        (pnl.1["markPrice"].as_f64(), pnl.1["positionId"].as_str()),
        (Some(105.0), Some("a-BTCUSDT"))
    );
    // The snapshot, throttled to one a second, is written once more, with the last
    // price; then nothing more is owed and quiet time writes nothing.
    let quiet = l.after(5_000).await;
    assert_eq!(quiet.len(), 1, "{quiet:?}");
    assert_eq!(
        (quiet[0].0.as_str(), quiet[0].1["unrealizedPnl"].as_f64()),
        ("snapshot", Some(50.0))
    );
    assert!(l.after(5_000).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_warning_per_entry_into_the_zone() {
    let mut l = Loop::start(vec![account("a", "7", &["BTCUSDT"])], None);
    l.after(1).await;
    let mut warnings = Vec::new();
    // 30 s inside the zone (MR 0.83 at 99.9), a tick every 200 ms.
    for _ in 0..150 {
        l.mark("BTCUSDT", "99.9").await;
        warnings.extend(
            l.after(200)
                .await
                .into_iter()
                .filter(|(k, _)| k == "margin_warning"),
        );
    }
    assert_eq!(warnings.len(), 1);
    let w = &warnings[0].1;
    assert_eq!(w["subAccountId"], "a");
    assert_eq!(w["message"], "Margin ratio 83.3% — approaching liquidation");
    assert!(w["seq"].as_u64().is_some() && w["ts"].as_i64().is_some());
    // Out, then back in after the gap: warned again.
    l.mark("BTCUSDT", "101").await;
    assert_eq!(count(&l.after(200).await, "margin_warning"), 0);
    l.mark("BTCUSDT", "99.9").await;
    assert_eq!(count(&l.after(200).await, "margin_warning"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_last_close_writes_an_empty_snapshot_at_once() {
    let mut l = Loop::start(vec![account("a", "1000", &["BTCUSDT"])], None);
    l.after(1).await;
    l.mark("BTCUSDT", "110").await;
    l.after(1).await;
    // The position closed with +100 realized: the book says so.
    l.inputs
        .send(RiskInput::Book(account("a", "1100", &[])))
        .await
        .unwrap();
    let w = l.after(1).await;
    let snap = &w
        .iter()
        .find(|(k, _)| k == "snapshot")
        .expect("a snapshot at once")
        .1;
    assert_eq!(snap["positions"], serde_json::json!([]));
    assert_eq!(
        (snap["positionCount"].as_u64(), snap["balance"].as_f64()),
        (Some(0), Some(1100.0))
    );
    assert_eq!(snap["accountLiqPrice"], Value::Null);
    for field in [
        "subAccountId",
        "timestamp",
        "status",
        "liquidationMode",
        "liquidationThreshold",
        "equity",
        "equityRaw",
        "unrealizedPnl",
        "marginUsed",
        "availableMargin",
        "totalExposure",
        "maintenanceMargin",
        "marginRatio",
    ] {
        assert!(snap.get(field).is_some(), "snapshot lacks {field}");
    }
    // The closed symbol no longer values the account.
    l.mark("BTCUSDT", "120").await;
    assert!(l.after(2_000).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn marks_are_read_from_the_in_process_prices() {
    let prices = Arc::new(Prices::default());
    let mut l = Loop::start(
        vec![account("a", "1000", &["ETHUSDT"])],
        Some(prices.clone()),
    );
    l.after(1).await;
    prices.update("ETHUSDT", |e| {
        e.mark = Some(d("101"));
        e.mark_time = 1_000;
    });
    let w = l.after(100).await;
    let m = &w
        .iter()
        .find(|(k, _)| k == "margin_update")
        .expect("valued")
        .1;
    assert_eq!(m["unrealizedPnl"], 10.0);
    // A newer book mid replaces the mark, as the JS did; an unchanged entry is not re-read.
    prices.update("ETHUSDT", |e| {
        e.bid = Some(d("101.9"));
        e.ask = Some(d("102.1"));
        e.book_time = 2_000;
    });
    let w = l.after(200).await;
    let m = &w
        .iter()
        .find(|(k, _)| k == "margin_update")
        .expect("valued")
        .1;
    assert_eq!(m["unrealizedPnl"], 20.0);
    assert!(l.after(2_000).await.iter().all(|(k, _)| k == "snapshot"));
}

#[tokio::test]
async fn the_writer_publishes_in_seq_order_and_sets_the_snapshot() {
    let prefix = unique_prefix("riskloop");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("Redis (README set-up)");
    pubsub
        .psubscribe(format!("{prefix}events:*"))
        .await
        .unwrap();
    let (out, rx) = outbox(&prefix, 1000, 42);
    let cancel = CancellationToken::new();
    let link = RedisLink::open("redis://127.0.0.1:6379", "engine bus", ERRORS).unwrap();
    tokio::spawn(run_writer(link, rx, cancel.clone()));
    for i in 0..20 {
        out.event(
            "pnl_update",
            serde_json::json!({"subAccountId": "a", "i": i}),
            7,
        );
    }
    out.set(
        "risk:a",
        &serde_json::json!({"subAccountId": "a"}),
        Duration::from_secs(120),
    );
    let mut stream = pubsub.on_message();
    let mut seqs = Vec::new();
    for _ in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.get_channel_name(), format!("{prefix}events:pnl_update"));
        let v: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs[0], 42_001);
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}risk:a");
    // Set after the last publish, on the same connection: present by now or soon.
    let mut ttl: i64 = -2;
    for _ in 0..100 {
        ttl = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        if ttl > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ttl > 0, "the snapshot was set");
    assert!(ttl <= 120);
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    cancel.cancel();
}
