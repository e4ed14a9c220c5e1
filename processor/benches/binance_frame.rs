//! What a Binance market frame costs: parse a combined-stream `depthUpdate` (5 and 20
//! levels a side, as the 100 ms diff stream carries), a `bookTicker` and a
//! `markPriceUpdate`, and a depth frame parsed and applied to the local book.
//! Run: `cargo bench -p processor --bench binance_frame`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use streaming::binance::book::LocalBook;
use streaming::binance::wire::{parse_market, DepthSnapshot, MarketMessage};

fn depth(levels: usize, first: u64, prev: u64) -> String {
    let side = |base: f64, dir: f64| {
        (0..levels)
            .map(|i| {
                format!(
                    r#"["{:.1}","{:.3}"]"#,
                    base + dir * i as f64 * 0.1,
                    0.5 + i as f64
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1762867543321,"T":1762867543320,"s":"BTCUSDT","U":{first},"u":{},"pu":{prev},"b":[{}],"a":[{}]}}}}"#,
        first + 3,
        side(60_000.0, -1.0),
        side(60_000.1, 1.0)
    )
}

const BOOK_TICKER: &str = r#"{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BTCUSDT","b":"60000.10","B":"31.210","a":"60000.20","A":"40.660"}}"#;
const MARK: &str = r#"{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"60000.15000000","i":"59998.62659091","P":"60001.25641265","r":"0.00038167","T":1562306400000}}"#;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("binance_frame");
    g.throughput(Throughput::Elements(1));
    for levels in [5, 20] {
        let text = depth(levels, 100, 99);
        g.bench_function(format!("parse depthUpdate {levels}x2 levels"), |b| {
            b.iter(|| black_box(parse_market(black_box(&text)).unwrap()))
        });
    }
    g.bench_function("parse bookTicker", |b| {
        b.iter(|| black_box(parse_market(black_box(BOOK_TICKER)).unwrap()))
    });
    g.bench_function("parse markPriceUpdate", |b| {
        b.iter(|| black_box(parse_market(black_box(MARK)).unwrap()))
    });
    // Parse and apply: a chain of diffs, each `pu` the previous `u`.
    let frames: Vec<String> = (0..1000u64)
        .map(|i| depth(5, 1000 + i * 4, if i == 0 { 999 } else { 999 + i * 4 }))
        .collect();
    g.bench_function("parse + apply depthUpdate 5x2 levels", |b| {
        b.iter_batched(
            || {
                let mut book = LocalBook::new();
                let MarketMessage::Depth(first) = parse_market(&frames[0]).unwrap() else {
                    unreachable!()
                };
                book.on_diff(first);
                book.on_snapshot(&DepthSnapshot {
                    last_update_id: 1001,
                    bids: vec![],
                    asks: vec![],
                });
                book
            },
            |mut book| {
                for f in &frames[1..] {
                    let MarketMessage::Depth(d) = parse_market(f).unwrap() else {
                        unreachable!()
                    };
                    book.on_diff(d);
                }
                assert!(book.is_live());
                book
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
