//! What one IBKR market-data frame costs us before it reaches the writer: parse the
//! text, merge the changed fields into the conid's state, normalize into a
//! snapshot. Run: `cargo bench -p processor --bench ibkr_frame`.

use std::hint::black_box;
use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use processor::normalize::Normalizer;
use rust_decimal::Decimal;
use streaming::ibkr::wire::{parse_frame, ServerFrame};
use streaming::ibkr::{IbkrPosition, IbkrQuote, MdFields};
use streaming::{Broker, BrokerEvent, BrokerPayload};

/// The full frame of the protocol document's sample (§4.4): the first frame of a stream.
const FULL: &str = include_str!("../../streaming/testdata/ibkr/smd_option_sample.json");
/// A typical later frame: only what changed.
const PARTIAL: &str = r#"{"7308":"0.556","7635":"12.41","6119":"q0","server_id":"q0","conidEx":"700000001","conid":700000001,"_updated":1715515200250,"topic":"smd+700000001"}"#;

fn position() -> Arc<IbkrPosition> {
    Arc::new(IbkrPosition {
        account: Arc::from("DU1234567"),
        conid: 700000001,
        asset_class: "OPT".into(),
        position: Decimal::from(-2),
        expiry: Some("20260619".into()),
        put_or_call: Some("C".into()),
        strike: Some(Decimal::from(500)),
        multiplier: Some(Decimal::ONE_HUNDRED),
        und_conid: Some(756733),
        underlying_symbol: Some("SPY".into()),
    })
}

/// Parse → merge → normalize, as the client and the processor do per frame.
fn one_frame(
    text: &str,
    merged: &mut Arc<MdFields>,
    pos: &Arc<IbkrPosition>,
    norm: &mut Normalizer,
) -> f64 {
    let Ok(ServerFrame::MarketData(md)) = parse_frame(text) else {
        panic!("sample is market data")
    };
    Arc::make_mut(merged).merge(&md.fields);
    let event = BrokerEvent {
        broker: Broker::Ibkr,
        account: pos.account.clone(),
        received_at: Utc::now(),
        payload: BrokerPayload::Ibkr(IbkrQuote {
            position: pos.clone(),
            fields: merged.clone(),
            underlying: None,
            updated_ms: md.updated_ms,
        }),
    };
    let out = norm.normalize(event).expect("valid sample");
    out.snapshot.total.delta.unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let pos = position();
    let mut g = c.benchmark_group("ibkr_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_only/full", |b| {
        b.iter(|| parse_frame(black_box(FULL)))
    });
    g.bench_function("parse_only/partial", |b| {
        b.iter(|| parse_frame(black_box(PARTIAL)))
    });
    for (name, text) in [("full", FULL), ("partial", PARTIAL)] {
        let mut merged = Arc::new(MdFields::default());
        let mut norm = Normalizer::new();
        one_frame(FULL, &mut merged, &pos, &mut norm);
        g.bench_function(format!("parse_merge_normalize/{name}"), |b| {
            b.iter(|| one_frame(black_box(text), &mut merged, &pos, &mut norm))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
