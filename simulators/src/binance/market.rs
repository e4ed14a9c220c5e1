//! The simulated venue's order books: integer ticks and lots, a seeded random walk
//! of the mid, and diff events sequenced like the futures feed — one increasing
//! update-id counter per symbol, each event `[U, u]` with `U > pu` (ids may skip)
//! and `pu` = the previous event's `u`. Pure; the server publishes what it returns.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use streaming::rng::SplitMix64;

/// One listed contract.
#[derive(Debug, Clone)]
pub struct SymbolSpec {
    pub symbol: String,
    pub pair: String,
    pub base: String,
    /// PERPETUAL, CURRENT_QUARTER, ...
    pub contract_type: &'static str,
    /// Delivery date (UTC 08:00) of a delivery future.
    pub delivery: Option<NaiveDate>,
    pub price: f64,
    pub tick: Decimal,
    pub step: Decimal,
}

impl SymbolSpec {
    pub fn perpetual(base: &str, price: f64, tick: Decimal, step: Decimal) -> Self {
        let symbol = format!("{base}USDT");
        Self {
            pair: symbol.clone(),
            symbol,
            base: base.to_owned(),
            contract_type: "PERPETUAL",
            delivery: None,
            price,
            tick,
            step,
        }
    }

    pub fn quarterly(
        base: &str,
        delivery: NaiveDate,
        price: f64,
        tick: Decimal,
        step: Decimal,
    ) -> Self {
        let pair = format!("{base}USDT");
        Self {
            symbol: format!("{pair}_{}", delivery.format("%y%m%d")),
            pair,
            base: base.to_owned(),
            contract_type: "CURRENT_QUARTER",
            delivery: Some(delivery),
            price,
            tick,
            step,
        }
    }

    pub fn price_of(&self, ticks: i64) -> Decimal {
        (Decimal::from(ticks) * self.tick).normalize()
    }

    pub fn qty_of(&self, lots: i64) -> Decimal {
        (Decimal::from(lots) * self.step).normalize()
    }

    /// Whole ticks in `price`, if it is on the grid.
    pub fn ticks(&self, price: Decimal) -> Option<i64> {
        use rust_decimal::prelude::ToPrimitive;
        let t = price / self.tick;
        t.fract().is_zero().then(|| t.to_i64()).flatten()
    }
}

/// One diff event, in ticks and lots (absolute sizes; 0 removes the level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub first_id: u64,
    pub last_id: u64,
    pub prev_last_id: u64,
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
}

#[derive(Debug, Clone)]
pub struct SimBook {
    pub bids: BTreeMap<i64, i64>,
    pub asks: BTreeMap<i64, i64>,
    pub last_id: u64,
    /// The mid in ticks: bids sit below it, asks above.
    pub mid: i64,
    depth: i64,
}

impl SimBook {
    /// A book of `depth` levels a side around `price`.
    pub fn new(spec: &SymbolSpec, depth: i64, rng: &mut SplitMix64) -> Self {
        let mid = spec
            .ticks(
                Decimal::try_from(spec.price)
                    .unwrap_or_default()
                    .round_dp(spec.tick.scale()),
            )
            .unwrap_or(1_000_000);
        let mut b = Self {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            last_id: 1_000_000 + rng.below(1000) as u64,
            mid,
            depth,
        };
        for k in 1..=depth {
            b.bids.insert(mid - k, lots(rng));
            b.asks.insert(mid + k, lots(rng));
        }
        b
    }

    pub fn best(&self) -> Option<((i64, i64), (i64, i64))> {
        let (bp, bq) = self.bids.iter().next_back()?;
        let (ap, aq) = self.asks.iter().next()?;
        Some(((*bp, *bq), (*ap, *aq)))
    }

    /// The next diff: the mid may move (levels crossing it go), a few levels change,
    /// and levels drifting too far out are trimmed. Applied before it is returned.
    pub fn step(&mut self, rng: &mut SplitMix64) -> Diff {
        let mut bids: BTreeMap<i64, i64> = BTreeMap::new();
        let mut asks: BTreeMap<i64, i64> = BTreeMap::new();
        if rng.below(3) == 0 {
            let moved = rng.below(5) as i64 - 2;
            self.mid += moved;
            for (&p, _) in self.asks.range(..=self.mid) {
                asks.insert(p, 0);
            }
            for (&p, _) in self.bids.range(self.mid..) {
                bids.insert(p, 0);
            }
            // Keep the touch populated on both sides.
            bids.insert(self.mid - 1, lots(rng));
            asks.insert(self.mid + 1, lots(rng));
        }
        for _ in 0..1 + rng.below(4) {
            let offset = 1 + rng.below(self.depth as usize) as i64;
            let qty = if rng.below(4) == 0 { 0 } else { lots(rng) };
            if rng.below(2) == 0 {
                bids.insert(self.mid - offset, qty);
            } else {
                asks.insert(self.mid + offset, qty);
            }
        }
        let far = self.depth * 2;
        for (&p, _) in self.bids.range(..self.mid - far) {
            bids.insert(p, 0);
        }
        for (&p, _) in self.asks.range(self.mid + far + 1..) {
            asks.insert(p, 0);
        }
        let diff = Diff {
            first_id: self.last_id + 1 + rng.below(3) as u64,
            last_id: 0,
            prev_last_id: self.last_id,
            bids: bids.into_iter().collect(),
            asks: asks.into_iter().collect(),
        };
        let last_id = diff.first_id + rng.below(4) as u64;
        self.apply(&diff);
        self.last_id = last_id;
        Diff { last_id, ..diff }
    }

    /// Moves the mid by `ticks` at once (a test or demo control): levels the move
    /// crosses go, the new touch is populated, as the next diff.
    pub fn shift(&mut self, ticks: i64, rng: &mut SplitMix64) -> Diff {
        let mut bids: BTreeMap<i64, i64> = BTreeMap::new();
        let mut asks: BTreeMap<i64, i64> = BTreeMap::new();
        self.mid += ticks;
        for (&p, _) in self.asks.range(..=self.mid) {
            asks.insert(p, 0);
        }
        for (&p, _) in self.bids.range(self.mid..) {
            bids.insert(p, 0);
        }
        for k in 1..=self.depth.min(5) {
            bids.insert(self.mid - k, lots(rng));
            asks.insert(self.mid + k, lots(rng));
        }
        self.set_levels(bids.into_iter().collect(), asks.into_iter().collect())
    }

    /// Sets levels directly (a fill taking liquidity), as the next diff.
    pub fn set_levels(&mut self, bids: Vec<(i64, i64)>, asks: Vec<(i64, i64)>) -> Diff {
        let diff = Diff {
            first_id: self.last_id + 1,
            last_id: self.last_id + 1,
            prev_last_id: self.last_id,
            bids,
            asks,
        };
        self.apply(&diff);
        self.last_id = diff.last_id;
        diff
    }

    fn apply(&mut self, d: &Diff) {
        for (side, levels) in [(&mut self.bids, &d.bids), (&mut self.asks, &d.asks)] {
            for &(p, q) in levels {
                if q == 0 {
                    side.remove(&p);
                } else {
                    side.insert(p, q);
                }
            }
        }
    }
}

fn lots(rng: &mut SplitMix64) -> i64 {
    1 + rng.below(5000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SymbolSpec {
        SymbolSpec::perpetual("BTC", 60_000.0, Decimal::new(1, 1), Decimal::new(1, 3))
    }

    #[test]
    fn diffs_chain_by_pu_and_never_cross() {
        let mut rng = SplitMix64::new(5);
        let s = spec();
        let mut b = SimBook::new(&s, 50, &mut rng);
        assert_eq!(b.mid, 600_000);
        let mut prev = b.last_id;
        for _ in 0..20_000 {
            let d = b.step(&mut rng);
            assert_eq!(d.prev_last_id, prev);
            assert!(d.first_id > d.prev_last_id && d.last_id >= d.first_id);
            prev = d.last_id;
            let ((bp, _), (ap, _)) = b.best().unwrap();
            assert!(bp < ap, "crossed book");
            assert!(b.bids.len() <= 201 && b.asks.len() <= 201);
        }
    }

    #[test]
    fn prices_and_quantities_are_on_the_grid() {
        let s = spec();
        assert_eq!(s.price_of(600_001).to_string(), "60000.1");
        assert_eq!(s.qty_of(1500).to_string(), "1.5");
        assert_eq!(s.ticks("60000.1".parse().unwrap()), Some(600_001));
        assert_eq!(s.ticks("60000.15".parse().unwrap()), None);
        let q = SymbolSpec::quarterly(
            "BTC",
            NaiveDate::from_ymd_opt(2026, 12, 25).unwrap(),
            1.0,
            Decimal::ONE,
            Decimal::ONE,
        );
        assert_eq!(q.symbol, "BTCUSDT_261225");
    }
}
