//! The local model's throughput: one full valuation (price + five Greeks) per
//! iteration over a spread of strikes, maturities and vols, and one IV solve.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use model::pricing::{implied_vol, value, Inputs, Model};
use model::OptionRight;

fn grid() -> Vec<Inputs> {
    let mut v = Vec::new();
    for (n, k) in [80.0, 95.0, 100.0, 105.0, 120.0].into_iter().enumerate() {
        for t in [0.02, 0.25, 1.0, 2.0] {
            for vol in [0.15, 0.3, 0.6] {
                v.push(Inputs {
                    model: if n % 2 == 0 {
                        Model::Bsm
                    } else {
                        Model::Black76
                    },
                    right: if n % 3 == 0 {
                        OptionRight::Put
                    } else {
                        OptionRight::Call
                    },
                    spot: 100.0,
                    strike: k,
                    years: t,
                    rate: 0.04,
                    dividend: 0.0,
                    vol,
                });
            }
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let inputs = grid();
    let mut g = c.benchmark_group("pricing");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("value_price_and_greeks", |b| {
        b.iter(|| {
            for i in &inputs {
                black_box(value(black_box(i)).unwrap());
            }
        })
    });
    let premiums: Vec<f64> = inputs.iter().map(|i| value(i).unwrap().price).collect();
    g.bench_function("implied_vol", |b| {
        b.iter(|| {
            for (i, p) in inputs.iter().zip(&premiums) {
                black_box(implied_vol(black_box(i), *p).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
