//! Portfolio aggregates on a book of 10 000 positions: one event applied (the
//! position's old contribution out, the new one in, every group updated) and the
//! totals read back — what "aggregates refreshed after an event" costs. Also a full
//! rebuild and a filtered on-the-spot aggregation for comparison.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use model::portfolio::{aggregate, Book, Group, GroupBy};
use model::{AccountId, AssetClass, Broker, Contract, GreekSnapshot, Greeks, OptionRight};
use rust_decimal::Decimal;

const POSITIONS: usize = 10_000;

fn snapshot(i: usize, qty: i64, delta: f64) -> GreekSnapshot {
    let broker = [Broker::Ibkr, Broker::Tastytrade, Broker::Binance][i % 3];
    let contract = Contract::option(
        &format!("U{}", i % 50),
        AssetClass::Option,
        NaiveDate::from_ymd_opt(2026, 12, 18).unwrap(),
        if i.is_multiple_of(2) {
            OptionRight::Call
        } else {
            OptionRight::Put
        },
        Decimal::from(100 + i),
        Decimal::from(100),
    )
    .unwrap();
    let unit = Greeks {
        delta: Some(delta),
        gamma: Some(0.01),
        theta: Some(-0.1),
        vega: Some(0.2),
        rho: (!i.is_multiple_of(10)).then_some(0.05),
    };
    let account = format!("A{}", i % 20);
    let (q, c) = (Decimal::from(qty), Arc::new(contract));
    GreekSnapshot {
        mark_price: Some(1.0),
        underlying_price: Some(100.0),
        implied_vol: Some(0.2),
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

fn bench(c: &mut Criterion) {
    let mut book = Book::new();
    for i in 0..POSITIONS {
        book.apply(&snapshot(i, (i % 7) as i64 - 3 + 10, 0.5));
    }
    let events: Vec<GreekSnapshot> = (0..1000)
        .map(|n| snapshot((n * 7919) % POSITIONS, 5, 0.3 + (n % 10) as f64 * 0.01))
        .collect();
    let mut g = c.benchmark_group("portfolio_10k");
    let mut n = 0;
    g.bench_function("apply_event_and_read_totals", |b| {
        b.iter(|| {
            n = (n + 1) % events.len();
            book.apply(black_box(&events[n]));
            black_box(book.totals(&Group::Total));
            black_box(book.totals(&Group::Underlying("U7".into())));
        })
    });
    g.bench_function("rebuild_all_groups", |b| b.iter(|| book.rebuild()));
    g.bench_function("filtered_aggregate_by_underlying", |b| {
        b.iter(|| {
            black_box(aggregate(
                book.positions().filter(|p| p.broker == Broker::Ibkr),
                GroupBy::Underlying,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
