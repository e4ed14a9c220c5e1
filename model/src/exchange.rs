//! Binance USDⓈ-M formulas, pure and exact: notional brackets (maximum leverage,
//! maintenance margin rate and amount per notional tier) and the liquidation price.
//! One implementation, shared by the venue simulator and the risk code, so the two can
//! never disagree about when a position is liquidated.
//!
//! Maintenance margin of a position of notional N: `MM = N × MMR − cum`, where the
//! bracket is the one whose `[floor, cap)` holds N and `cum` makes MM continuous across
//! brackets: `cum_n = cum_(n−1) + floor_n × (MMR_n − MMR_(n−1))`.
//!
//! Liquidation price (one-way mode, one position; the venue's published formula): the
//! mark price at which margin balance equals maintenance margin,
//! `LP = (WB − TMM₁ + UPNL₁ + cum − S·Q·EP) / (Q·MMR − S·Q)`, with S = +1 long, −1
//! short, Q the absolute size, EP the entry price, WB the wallet (cross) or the
//! isolated wallet, and TMM₁ / UPNL₁ the maintenance margin and unrealized PnL of every
//! *other* position (zero when isolated). The bracket is chosen by the notional at the
//! liquidation price itself, so the result is recomputed until it lands in the bracket
//! it was computed with.

use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BracketError {
    #[error("no brackets")]
    Empty,
    #[error("bracket {0}: the first floor must be 0 and each floor the previous cap")]
    NotContiguous(usize),
    #[error("bracket {0}: cap must exceed floor")]
    EmptyRange(usize),
    #[error("bracket {0}: maintenance rate must be in (0, 1) and not fall as notional grows")]
    BadRate(usize),
    #[error("bracket {0}: maximum leverage must be at least 1 and not grow with notional")]
    BadLeverage(usize),
}

/// One notional tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bracket {
    /// 1-based, as the venue numbers them.
    pub bracket: u32,
    pub floor: Decimal,
    pub cap: Decimal,
    pub max_leverage: u32,
    /// Maintenance margin rate.
    pub mmr: Decimal,
    /// Maintenance amount: keeps MM continuous at the floors.
    pub cum: Decimal,
}

/// A symbol's brackets, checked: contiguous from 0, rates rising, leverage falling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brackets(Vec<Bracket>);

impl Brackets {
    /// From `(cap, max_leverage, mmr)` per tier, lowest first; floors and `cum` derived.
    pub fn new(tiers: &[(Decimal, u32, Decimal)]) -> Result<Self, BracketError> {
        if tiers.is_empty() {
            return Err(BracketError::Empty);
        }
        let mut out: Vec<Bracket> = Vec::with_capacity(tiers.len());
        for (i, &(cap, max_leverage, mmr)) in tiers.iter().enumerate() {
            let (floor, cum) = match out.last() {
                None => (Decimal::ZERO, Decimal::ZERO),
                Some(prev) => {
                    if mmr < prev.mmr {
                        return Err(BracketError::BadRate(i));
                    }
                    if max_leverage > prev.max_leverage {
                        return Err(BracketError::BadLeverage(i));
                    }
                    (prev.cap, prev.cum + prev.cap * (mmr - prev.mmr))
                }
            };
            if cap <= floor {
                return Err(BracketError::EmptyRange(i));
            }
            if mmr <= Decimal::ZERO || mmr >= Decimal::ONE {
                return Err(BracketError::BadRate(i));
            }
            if max_leverage == 0 {
                return Err(BracketError::BadLeverage(i));
            }
            out.push(Bracket {
                bracket: i as u32 + 1,
                floor,
                cap,
                max_leverage,
                mmr,
                cum,
            });
        }
        Ok(Self(out))
    }

    /// Binance's BTCUSDT tiers (notional cap, maximum leverage, maintenance rate).
    pub fn btcusdt() -> Self {
        let d = |s: &str| s.parse::<Decimal>().expect("literal");
        Self::new(&[
            (d("50000"), 125, d("0.004")),
            (d("250000"), 100, d("0.005")),
            (d("3000000"), 50, d("0.01")),
            (d("15000000"), 20, d("0.025")),
            (d("30000000"), 10, d("0.05")),
            (d("80000000"), 5, d("0.1")),
            (d("100000000"), 4, d("0.125")),
            (d("200000000"), 3, d("0.15")),
            (d("300000000"), 2, d("0.25")),
            (d("500000000"), 1, d("0.5")),
        ])
        .expect("valid tiers")
    }

    /// Smaller tiers for less liquid symbols (ETH, SOL, delivery contracts).
    pub fn altcoin() -> Self {
        let d = |s: &str| s.parse::<Decimal>().expect("literal");
        Self::new(&[
            (d("10000"), 75, d("0.005")),
            (d("100000"), 50, d("0.0065")),
            (d("500000"), 25, d("0.01")),
            (d("1000000"), 20, d("0.02")),
            (d("5000000"), 10, d("0.05")),
            (d("10000000"), 5, d("0.1")),
            (d("20000000"), 4, d("0.125")),
            (d("30000000"), 3, d("0.15")),
            (d("50000000"), 2, d("0.25")),
            (d("100000000"), 1, d("0.5")),
        ])
        .expect("valid tiers")
    }

    pub fn tiers(&self) -> &[Bracket] {
        &self.0
    }

    /// The tier holding `notional` (absolute); the last tier above every cap.
    pub fn for_notional(&self, notional: Decimal) -> &Bracket {
        let n = notional.abs();
        self.0
            .iter()
            .find(|b| n < b.cap)
            .unwrap_or_else(|| self.0.last().expect("checked non-empty"))
    }

    /// Maintenance margin of a position of `notional`.
    pub fn maintenance_margin(&self, notional: Decimal) -> Decimal {
        let n = notional.abs();
        let b = self.for_notional(n);
        (n * b.mmr - b.cum).max(Decimal::ZERO)
    }

    /// The highest leverage allowed at `notional`.
    pub fn max_leverage(&self, notional: Decimal) -> u32 {
        self.for_notional(notional).max_leverage
    }

    /// The largest notional a position may reach at `leverage` (`maxNotionalValue`).
    pub fn max_notional(&self, leverage: u32) -> Decimal {
        self.0
            .iter()
            .rev()
            .find(|b| b.max_leverage >= leverage)
            .map_or(Decimal::ZERO, |b| b.cap)
    }
}

/// What the liquidation price depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiquidationInput {
    /// Cross: the cross wallet balance. Isolated: the position's isolated wallet.
    pub wallet: Decimal,
    /// Cross only: maintenance margin of every other position (0 when isolated).
    pub other_maintenance: Decimal,
    /// Cross only: unrealized PnL of every other position (0 when isolated).
    pub other_unrealized: Decimal,
    /// Signed size: negative is short.
    pub amount: Decimal,
    pub entry: Decimal,
}

/// The mark price at which the position is liquidated; `None` when flat. Zero when no
/// positive price liquidates it (a long backed by more than its notional, say).
pub fn liquidation_price(brackets: &Brackets, input: &LiquidationInput) -> Option<Decimal> {
    if input.amount.is_zero() {
        return None;
    }
    let q = input.amount.abs();
    let s = if input.amount.is_sign_positive() {
        Decimal::ONE
    } else {
        Decimal::NEGATIVE_ONE
    };
    let base =
        input.wallet - input.other_maintenance + input.other_unrealized - s * q * input.entry;
    let solve = |b: &Bracket| -> Option<Decimal> {
        let denominator = q * b.mmr - s * q;
        if denominator.is_zero() {
            return None;
        }
        (base + b.cum).checked_div(denominator)
    };
    // Start from the tier of the entry notional; move to the tier the answer lands in
    // until it stays put (at most once per tier, so this always ends).
    let mut tier = brackets.for_notional(q * input.entry);
    for _ in 0..brackets.tiers().len() {
        let lp = solve(tier)?;
        if lp <= Decimal::ZERO {
            return Some(Decimal::ZERO);
        }
        let landed = brackets.for_notional(q * lp);
        if landed.bracket == tier.bracket {
            return Some(lp);
        }
        tier = landed;
    }
    // Oscillating between two tiers at a boundary: the lower price is the safer answer
    // for a long, the higher for a short.
    solve(tier).map(|lp| lp.max(Decimal::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn maintenance_amounts_are_derived_and_continuous() {
        let b = Brackets::btcusdt();
        let cums: Vec<Decimal> = b.tiers().iter().take(5).map(|t| t.cum).collect();
        // The venue's published maintenance amounts for BTCUSDT.
        assert_eq!(cums, [d("0"), d("50"), d("1300"), d("46300"), d("421300")]);
        for t in &b.tiers()[1..] {
            let just_below = t.floor - d("0.01");
            let gap = b.maintenance_margin(t.floor) - b.maintenance_margin(just_below);
            assert!(gap.abs() < d("0.01"), "MM jumps at {}: {gap}", t.floor);
        }
        assert_eq!(b.max_leverage(d("10000")), 125);
        assert_eq!(b.max_leverage(d("50000")), 100);
        assert_eq!(b.max_notional(20), d("15000000"));
        assert_eq!(b.max_notional(125), d("50000"));
    }

    #[test]
    fn bad_tiers_are_refused() {
        assert_eq!(Brackets::new(&[]), Err(BracketError::Empty));
        let falling = [(d("10"), 10, d("0.01")), (d("20"), 10, d("0.005"))];
        assert_eq!(Brackets::new(&falling), Err(BracketError::BadRate(1)));
        let empty = [(d("10"), 10, d("0.01")), (d("10"), 5, d("0.02"))];
        assert_eq!(Brackets::new(&empty), Err(BracketError::EmptyRange(1)));
        let rising = [(d("10"), 10, d("0.01")), (d("20"), 20, d("0.02"))];
        assert_eq!(Brackets::new(&rising), Err(BracketError::BadLeverage(1)));
    }

    #[test]
    fn an_isolated_long_at_20x_is_liquidated_about_five_percent_down() {
        // 1 BTC at 60 000 with 3 000 isolated margin (20x), first tier (MMR 0.4 %,
        // notional ≥ 50 000 → second tier: MMR 0.5 %, cum 50).
        let lp = liquidation_price(
            &Brackets::btcusdt(),
            &LiquidationInput {
                wallet: d("3000"),
                other_maintenance: Decimal::ZERO,
                other_unrealized: Decimal::ZERO,
                amount: d("1"),
                entry: d("60000"),
            },
        )
        .unwrap();
        // (3000 + 50 − 60000) / (0.005 − 1) = 57236.18…
        assert_eq!(lp.round_dp(2), d("57236.18"));
    }

    #[test]
    fn a_short_is_liquidated_above_and_a_fully_backed_long_never() {
        let b = Brackets::btcusdt();
        let short = LiquidationInput {
            wallet: d("300"),
            other_maintenance: Decimal::ZERO,
            other_unrealized: Decimal::ZERO,
            amount: d("-0.1"),
            entry: d("60000"),
        };
        let lp = liquidation_price(&b, &short).unwrap();
        assert!(lp > d("60000") && lp < d("63000"), "{lp}");
        let backed = LiquidationInput {
            wallet: d("100000"),
            amount: d("1"),
            ..short
        };
        assert_eq!(liquidation_price(&b, &backed), Some(Decimal::ZERO));
        let flat = LiquidationInput {
            amount: Decimal::ZERO,
            ..short
        };
        assert_eq!(liquidation_price(&b, &flat), None);
    }

    proptest! {
        /// At the liquidation price, margin balance equals maintenance margin, and the
        /// tier used is the tier of the notional there.
        #[test]
        fn at_the_liquidation_price_equity_equals_maintenance(
            qty_lots in 1i64..20_000,
            long in any::<bool>(),
            entry in 1_000i64..100_000,
            leverage in 1u32..=100,
            other_mm in 0i64..2_000,
            other_pnl in -2_000i64..2_000,
        ) {
            let b = Brackets::btcusdt();
            let q = Decimal::new(qty_lots, 3);
            let entry = Decimal::from(entry);
            let wallet = (q * entry / Decimal::from(leverage)).round_dp(2) + Decimal::from(other_mm);
            let input = LiquidationInput {
                wallet,
                other_maintenance: Decimal::from(other_mm),
                other_unrealized: Decimal::from(other_pnl),
                amount: if long { q } else { -q },
                entry,
            };
            let lp = liquidation_price(&b, &input).unwrap();
            prop_assume!(lp > Decimal::ZERO);
            let s = if long { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
            let equity = wallet - input.other_maintenance + input.other_unrealized + s * q * (lp - entry);
            let mm = b.maintenance_margin(q * lp);
            // Exact up to the division's rounding, and the boundary case where the
            // answer sits on a tier floor.
            prop_assert!((equity - mm).abs() < Decimal::new(1, 2) * (Decimal::ONE + q),
                "equity {} vs mm {} at {}", equity, mm, lp);
            // A position healthy at its entry is liquidated on the losing side of it.
            let equity_at_entry = wallet - input.other_maintenance + input.other_unrealized;
            if equity_at_entry > b.maintenance_margin(q * entry) {
                let losing_side = if long { lp < entry } else { lp > entry };
                prop_assert!(losing_side, "{} at entry {}", lp, entry);
            }
        }
    }
}
