//! What a DXLink COMPACT FEED_DATA message costs per event: parse the message, decode
//! the flat value array in FEED_CONFIG order, and normalize each Greeks event into a
//! snapshot. Messages of 1, 10 and 100 Greeks events (dxFeed packs many per message).
//! Run: `cargo bench -p processor --bench dxlink_compact`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use processor::normalize::Normalizer;
use rust_decimal::Decimal;
use serde_json::json;
use streaming::tastytrade::dxlink::{
    parse_feed_data, parse_message, DxEvent, DxMessage, FeedConfig, GREEKS_FIELDS,
};
use streaming::tastytrade::{TtPosition, TtQuote};
use streaming::{Broker, BrokerEvent, BrokerPayload};

fn config() -> FeedConfig {
    FeedConfig {
        compact: true,
        event_fields: HashMap::from([(
            "Greeks".to_owned(),
            GREEKS_FIELDS.iter().map(|f| f.to_string()).collect(),
        )]),
    }
}

/// A COMPACT message with `n` Greeks events, values shaped like the venue's.
fn message(n: usize) -> String {
    let mut flat = Vec::with_capacity(n * GREEKS_FIELDS.len());
    for i in 0..n {
        let strike = 450 + 5 * i;
        flat.extend([
            json!(format!(".SPY260619C{strike}")),
            json!(0),
            json!(0),
            json!(7_402_331_234_567_890_000u64),
            json!(1_718_900_000_000u64),
            json!(0),
            json!(12.34),
            json!(0.2123),
            json!(0.55),
            json!(0.012),
            json!(-0.08),
            json!(0.3),
            json!(0.45),
        ]);
    }
    json!({"type": "FEED_DATA", "channel": 3, "data": ["Greeks", flat]}).to_string()
}

fn position() -> Arc<TtPosition> {
    Arc::new(TtPosition {
        account: Arc::from("5WT00001"),
        symbol: "SPY   260619C00500000".into(),
        instrument_type: "Equity Option".into(),
        underlying_symbol: "SPY".into(),
        quantity: Decimal::from(-2),
        multiplier: Decimal::ONE_HUNDRED,
        streamer_symbol: Some(".SPY260619C500".into()),
        expires_at: NaiveDate::from_ymd_opt(2026, 6, 19),
    })
}

fn decode(text: &str, cfg: &FeedConfig) -> Vec<DxEvent> {
    let Ok(DxMessage::FeedData { data, .. }) = parse_message(text) else {
        panic!("sample is FEED_DATA")
    };
    parse_feed_data(&data, cfg).expect("valid sample").events
}

fn decode_normalize(
    text: &str,
    cfg: &FeedConfig,
    pos: &Arc<TtPosition>,
    norm: &mut Normalizer,
) -> f64 {
    let mut sum = 0.0;
    for e in decode(text, cfg) {
        let DxEvent::Greeks(g) = e else { continue };
        let event = BrokerEvent {
            broker: Broker::Tastytrade,
            account: pos.account.clone(),
            received_at: Utc::now(),
            payload: BrokerPayload::Tastytrade(TtQuote {
                position: pos.clone(),
                greeks: Some(Arc::new(g)),
                quote: None,
                underlying: None,
            }),
        };
        sum += norm
            .normalize(event)
            .expect("valid")
            .snapshot
            .total
            .delta
            .unwrap_or_default();
    }
    sum
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let pos = position();
    let mut g = c.benchmark_group("dxlink_compact");
    for n in [1usize, 10, 100] {
        let text = message(n);
        assert_eq!(decode(&text, &cfg).len(), n);
        // Per event: criterion reports elements/s; time per event = 1 / that.
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("parse/{n}_events"), |b| {
            b.iter(|| decode(black_box(&text), &cfg))
        });
        let mut norm = Normalizer::new();
        g.bench_function(format!("parse_normalize/{n}_events"), |b| {
            b.iter(|| decode_normalize(black_box(&text), &cfg, &pos, &mut norm))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
