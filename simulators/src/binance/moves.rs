//! The market moving: the books stepping on each tick, marks published, resting
//! orders the market trades through filled, and the operator's price moves.

use super::market::{SimBook, SymbolSpec};
use super::state::*;
use super::{algo, liquidation, options, orders};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

pub(crate) fn book_ticker_payload(spec: &SymbolSpec, b: &SimBook, t: i64) -> Option<String> {
    let ((bp, bq), (ap, aq)) = b.best()?;
    Some(format!(
        r#"{{"e":"bookTicker","u":{},"E":{t},"T":{t},"s":"{}","b":"{}","B":"{}","a":"{}","A":"{}"}}"#,
        b.last_id,
        spec.symbol,
        spec.price_of(bp),
        spec.qty_of(bq),
        spec.price_of(ap),
        spec.qty_of(aq)
    ))
}

/// Moves every book `events_per_tick` steps and publishes the diffs (all but a
/// swallowed one when a gap is due) and the book tickers; resting orders the market
/// now trades through fill.
pub(crate) fn tick(state: &SimState) {
    let mut fills = orders::Outbox::default();
    {
        let mut m = state.market.lock().expect("market lock");
        if m.paused {
            return;
        }
        let t = state.now_ms();
        let gap = std::mem::take(&mut m.gap_next);
        let Market {
            specs, books, rng, ..
        } = &mut *m;
        for (spec, book) in specs.iter().zip(books.iter_mut()) {
            for n in 0..state.cfg.events_per_tick {
                let diff = book.step(rng);
                state.stats.depth_events.fetch_add(1, Relaxed);
                if gap && n == 0 {
                    state.stats.gaps.fetch_add(1, Relaxed);
                    continue;
                }
                let (stream, payload) = depth_stream(spec, &diff, t);
                state.publish_market(stream, payload);
            }
            if let Some(p) = book_ticker_payload(spec, book, t) {
                let lower = spec.symbol.to_ascii_lowercase();
                state.publish_market(format!("{lower}@bookTicker"), p);
            }
            let mut a = state.account.lock().expect("account lock");
            if !a.open.is_empty() {
                orders::on_book_step(state, &mut a, spec, book, &mut fills);
            }
        }
    }
    fills.publish(state);
    fire_countdowns(state);
}

/// The dead-man switch: a symbol whose countdown ran out loses every open order.
pub(crate) fn fire_countdowns(state: &SimState) {
    let now = state.now_ms();
    let due: Vec<String> = {
        let mut c = state.countdowns.lock().expect("countdowns lock");
        let due: Vec<String> = c
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for s in &due {
            c.remove(s);
        }
        due
    };
    for symbol in due {
        orders::cancel_all(state, &symbol);
    }
}

/// `<underlying>@optionMarkPrice`: one array per underlying with every option on it.
pub(crate) fn publish_option_marks(state: &SimState, t: i64) {
    let mut by_underlying: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for o in &state.options {
        if let Some(spot) = state.spot(&o.underlying) {
            by_underlying
                .entry(&o.underlying)
                .or_default()
                .push(options::stream_row(o, spot, t));
        }
    }
    for (underlying, rows) in by_underlying {
        state.publish_market(
            format!("{}@optionMarkPrice", underlying.to_ascii_lowercase()),
            serde_json::Value::Array(rows).to_string(),
        );
    }
}

pub(crate) fn publish_marks(state: &SimState) {
    let t = state.now_ms();
    publish_option_marks(state, t);
    algo::on_marks(state);
    liquidation::auto_liquidate(state);
    let marks: Vec<(String, Decimal)> = {
        let m = state.market.lock().expect("market lock");
        m.specs
            .iter()
            .zip(&m.books)
            .map(|(s, b)| (s.symbol.clone(), s.price_of(b.mid)))
            .collect()
    };
    for (symbol, mark) in marks {
        let next_funding = (t / 28_800_000 + 1) * 28_800_000;
        state.publish_market(
            format!("{}@markPrice", symbol.to_ascii_lowercase()),
            format!(
                r#"{{"e":"markPriceUpdate","E":{t},"s":"{symbol}","p":"{mark}","i":"{mark}","P":"{mark}","r":"0.00010000","T":{next_funding}}}"#
            ),
        );
    }
}

pub(crate) fn move_price(state: &SimState, symbol: &str, ticks: i64) -> bool {
    let published = {
        let mut m = state.market.lock().expect("market lock");
        let Market {
            specs, books, rng, ..
        } = &mut *m;
        let Some(i) = specs.iter().position(|s| s.symbol == symbol) else {
            return false;
        };
        let t = state.now_ms();
        let diff = books[i].shift(ticks, rng);
        // As Binance does, the new best bid and ask go out on the book ticker at once.
        let ticker = book_ticker_payload(&specs[i], &books[i], t).map(|p| {
            (
                format!("{}@bookTicker", specs[i].symbol.to_ascii_lowercase()),
                p,
            )
        });
        (depth_stream(&specs[i], &diff, t), ticker)
    };
    let (diff, ticker) = published;
    state.publish_market(diff.0, diff.1);
    if let Some((stream, payload)) = ticker {
        state.publish_market(stream, payload);
    }
    true
}

pub(crate) fn set_level(
    state: &SimState,
    symbol: &str,
    bid: bool,
    price: Decimal,
    qty: Decimal,
) -> bool {
    let published = {
        let mut m = state.market.lock().expect("market lock");
        let Market { specs, books, .. } = &mut *m;
        let Some(i) = specs.iter().position(|s| s.symbol == symbol) else {
            return false;
        };
        let spec = &specs[i];
        let lots = qty / spec.step;
        let (Some(ticks), true) = (
            spec.ticks(price),
            lots.fract().is_zero() && qty >= Decimal::ZERO,
        ) else {
            return false;
        };
        let level = vec![(ticks, lots.to_i64().unwrap_or(0))];
        let diff = if bid {
            books[i].set_levels(level, Vec::new())
        } else {
            books[i].set_levels(Vec::new(), level)
        };
        depth_stream(spec, &diff, state.now_ms())
    };
    state.publish_market(published.0, published.1);
    true
}
