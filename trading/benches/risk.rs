//! What the trading core's hot paths cost: the pre-trade check for an account with
//! 100 open positions (goal ≤ 10 µs p99) — as the engine runs it, on the view its book
//! keeps (`Monitor::view` then `check_view`), and from scratch on an `AccountState`
//! (what `risk what-if` does) — and one mark tick valued across 500
//! positions (100 accounts of 5 positions, all holding the ticking symbol; goal
//! ≤ 50 µs p99). Criterion gives the means; the percentiles are measured per call
//! over 20 000 calls and printed first.
//! Run: `cargo bench -p trading --bench risk`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use rust_decimal::Decimal;
use trading::account::Marked;
use trading::evaluate::{Account, LiquidationMode, OpenPosition};
use trading::monitor::{Config, Monitor};
use trading::position::{OrderSide, Position, Side};
use trading::risk::{
    check, check_view, AccountState, AccountStatus, OrderRequest, RiskRules, VenueFilters,
};

fn position(i: usize) -> Position {
    Position {
        side: if i.is_multiple_of(2) {
            Side::Long
        } else {
            Side::Short
        },
        quantity: Decimal::new(1 + i as i64 % 7, 3),
        entry_price: Decimal::new(6_000_000 + i as i64 * 137, 2),
        leverage: Decimal::from(10 + i as i64 % 5),
    }
}

fn symbol(i: usize) -> String {
    format!("SYM{i}USDT")
}

fn account_state(n: usize) -> AccountState {
    AccountState {
        status: AccountStatus::Active,
        balance: Decimal::from(1_000_000),
        maintenance_rate: Decimal::new(5, 3),
        positions: (0..n)
            .map(|i| {
                let p = position(i);
                let mark = p.entry_price + Decimal::new(i as i64 % 11 - 5, 1);
                (symbol(i), Marked { position: p, mark })
            })
            .collect(),
        realized_today: Decimal::ZERO,
    }
}

fn order() -> OrderRequest {
    OrderRequest {
        symbol: symbol(42),
        side: OrderSide::Buy,
        quantity: Decimal::new(2, 3),
        limit: Some(Decimal::new(6_000_000, 2)),
        leverage: Decimal::from(10),
        reduce_only: false,
    }
}

fn rules() -> RiskRules {
    RiskRules {
        max_notional_per_trade: Decimal::from(1_000_000),
        max_total_exposure: Decimal::from(100_000_000),
        ..RiskRules::default()
    }
}

fn filters() -> VenueFilters {
    VenueFilters {
        tick: Decimal::new(1, 1),
        step: Decimal::new(1, 3),
        min_notional: Decimal::from(5),
        up: Decimal::new(105, 2),
        down: Decimal::new(95, 2),
    }
}

/// The engine's path: one account of 100 positions in the book, marked.
fn book_of_100() -> Monitor {
    let state = account_state(100);
    let mut m = Monitor::new(Config::default());
    m.upsert(
        Account {
            id: "a".into(),
            status: AccountStatus::Active,
            liquidation_mode: LiquidationMode::Adl30,
            balance: state.balance,
            maintenance_rate: state.maintenance_rate,
            threshold: Decimal::new(90, 2),
            positions: state
                .positions
                .iter()
                .enumerate()
                .map(|(i, (s, p))| OpenPosition {
                    id: format!("p{i}").into(),
                    symbol: s.as_str().into(),
                    position: p.position.clone(),
                    babysitter_excluded: false,
                    opened_at: 0,
                })
                .collect(),
        },
        Duration::ZERO,
    );
    for (i, (s, p)) in state.positions.iter().enumerate() {
        m.tick(s, p.mark, Duration::from_millis(i as u64));
    }
    m
}

/// The view the checks read, at the book's marks, then the checks.
fn check_in_book(m: &Monitor, rules: &RiskRules, filters: &VenueFilters, mark: Decimal) -> bool {
    let o = order();
    let view = m.view("a", &o.symbol, Decimal::ZERO).expect("watched");
    check_view(&view, rules, filters, mark, o).is_ok()
}

/// 100 accounts of 5 positions, each holding BTCUSDT.
fn monitor() -> Monitor {
    let mut m = Monitor::new(Config::default());
    for a in 0..100 {
        let positions = (0..5)
            .map(|j| OpenPosition {
                id: format!("p{a}-{j}").into(),
                symbol: if j == 0 {
                    "BTCUSDT".into()
                } else {
                    symbol(j).into()
                },
                position: position(a * 5 + j),
                babysitter_excluded: false,
                opened_at: 0,
            })
            .collect();
        m.upsert(
            Account {
                id: format!("a{a}").into(),
                status: AccountStatus::Active,
                liquidation_mode: LiquidationMode::Adl30,
                balance: Decimal::from(100_000),
                maintenance_rate: Decimal::new(5, 3),
                threshold: Decimal::new(90, 2),
                positions,
            },
            Duration::ZERO,
        );
    }
    m
}

fn percentiles(name: &str, mut f: impl FnMut(u64)) {
    const N: u64 = 20_000;
    for i in 0..1_000 {
        f(i);
    }
    let mut samples: Vec<Duration> = (0..N)
        .map(|i| {
            let t = Instant::now();
            f(1_000 + i);
            t.elapsed()
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((N as f64 * q) as usize).min(N as usize - 1)];
    println!(
        "{name}: p50 {:?} p99 {:?} p99.9 {:?} max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        samples[N as usize - 1]
    );
}

/// Each tick 100 ms after the last, so every account is valued on every tick.
fn tick(m: &mut Monitor, i: u64) -> usize {
    let px = Decimal::new(6_000_000 + (i % 100) as i64, 2);
    m.tick("BTCUSDT", px, Duration::from_millis(100 * (i + 1)))
        .len()
}

fn bench(c: &mut Criterion) {
    let state = account_state(100);
    let (rules, filters, mark) = (rules(), filters(), Decimal::new(6_000_000, 2));
    assert!(check(&state, &rules, &filters, mark, order()).is_ok());
    c.bench_function("pre_trade_check_100_positions_from_scratch", |b| {
        b.iter(|| check(black_box(&state), &rules, &filters, mark, order()))
    });
    let book = book_of_100();
    assert!(check_in_book(&book, &rules, &filters, mark));
    c.bench_function("pre_trade_check_100_positions", |b| {
        b.iter(|| check_in_book(black_box(&book), &rules, &filters, mark))
    });
    let mut m = monitor();
    let mut i = 0;
    assert_eq!(tick(&mut m, 0), 100);
    c.bench_function("mark_tick_500_positions", |b| {
        b.iter(|| {
            i += 1;
            tick(black_box(&mut m), i)
        })
    });
}

criterion_group!(benches, bench);

fn main() {
    let state = account_state(100);
    let (rules, filters, mark) = (rules(), filters(), Decimal::new(6_000_000, 2));
    percentiles("pre_trade_check_100_positions_from_scratch", |_| {
        black_box(check(black_box(&state), &rules, &filters, mark, order()).is_ok());
    });
    let book = book_of_100();
    percentiles("pre_trade_check_100_positions", |_| {
        black_box(check_in_book(black_box(&book), &rules, &filters, mark));
    });
    let mut m = monitor();
    percentiles("mark_tick_500_positions", |i| {
        black_box(tick(&mut m, i));
    });
    benches();
    Criterion::default().configure_from_args().final_summary();
}
