//! A sub-account's margin numbers, from its balance, its open positions and their
//! marks. One meaning each, used by the pre-trade checks, the risk loop and the API:
//!
//! - **equity** = balance + Σ unrealized PnL at the marks;
//! - **maintenance** = Σ entry notional × the account's maintenance rate;
//! - **available margin** = equity − maintenance: what can still back new initial
//!   margin before the account reaches its maintenance requirement;
//! - **margin ratio** = maintenance / equity (999 when equity ≤ 0): 1 means insolvent;
//! - **margin usage** = Σ initial margin / equity (999 when equity ≤ 0).

use rust_decimal::Decimal;

use crate::position::{Position, Side};

/// What margin ratios and usages report when equity is zero or negative.
pub const NO_EQUITY: Decimal = Decimal::from_parts(999, 0, 0, false, 0);

/// An open position with the mark it is valued at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub position: Position,
    pub mark: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub balance: Decimal,
    pub unrealized: Decimal,
    pub equity: Decimal,
    pub notional: Decimal,
    pub initial_margin: Decimal,
    pub maintenance: Decimal,
    pub available: Decimal,
    pub margin_ratio: Decimal,
}

impl Metrics {
    /// Σ initial margin / equity (999 when equity ≤ 0). A method, not a field: the
    /// risk loop never reads it, and a Decimal division per account per tick shows.
    pub fn margin_usage(&self) -> Decimal {
        ratio(self.initial_margin, self.equity)
    }
}

fn ratio(numerator: Decimal, equity: Decimal) -> Decimal {
    if equity <= Decimal::ZERO {
        NO_EQUITY
    } else {
        numerator / equity
    }
}

pub fn metrics(balance: Decimal, maintenance_rate: Decimal, positions: &[Marked]) -> Metrics {
    let unrealized: Decimal = positions
        .iter()
        .map(|m| m.position.unrealized(m.mark))
        .sum();
    let notional: Decimal = positions.iter().map(|m| m.position.notional()).sum();
    let initial_margin: Decimal = positions.iter().map(|m| m.position.margin()).sum();
    let equity = balance + unrealized;
    let maintenance = notional * maintenance_rate;
    Metrics {
        balance,
        unrealized,
        equity,
        notional,
        initial_margin,
        maintenance,
        available: equity - maintenance,
        margin_ratio: ratio(maintenance, equity),
    }
}

/// The mark at which `positions[i]` takes the account to its liquidation threshold
/// with every other position at its mark (cross margin): the account is liquidated
/// when maintenance / equity reaches `threshold`, i.e. when equity falls to
/// maintenance / threshold. Clamped at 0; `None` for a bad index or threshold.
pub fn liquidation_price(
    balance: Decimal,
    maintenance_rate: Decimal,
    threshold: Decimal,
    positions: &[Marked],
    i: usize,
) -> Option<Decimal> {
    let target = positions.get(i)?;
    if threshold <= Decimal::ZERO {
        return None;
    }
    let m = metrics(balance, maintenance_rate, positions);
    let floor = m.maintenance / threshold;
    let others = m.unrealized - target.position.unrealized(target.mark);
    let p = &target.position;
    // balance + others + s·(L − entry)·q = floor  ⇒  L = entry + s·(floor − balance − others)/q
    let moved = (floor - balance - others) / p.quantity;
    let price = match p.side {
        Side::Long => p.entry_price + moved,
        Side::Short => p.entry_price - moved,
    };
    Some(price.max(Decimal::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn pos(side: Side, q: &str, entry: &str, lev: &str, mark: &str) -> Marked {
        Marked {
            position: Position {
                side,
                quantity: d(q),
                entry_price: d(entry),
                leverage: d(lev),
            },
            mark: d(mark),
        }
    }

    #[test]
    fn every_number_has_one_meaning() {
        let book = [
            pos(Side::Long, "1", "100", "10", "110"),
            pos(Side::Short, "2", "50", "5", "55"),
        ];
        let m = metrics(d("1000"), d("0.005"), &book);
        assert_eq!(m.unrealized, d("0"), "+10 and −10");
        assert_eq!((m.equity, m.notional), (d("1000"), d("200")));
        assert_eq!((m.initial_margin, m.maintenance), (d("30"), d("1")));
        assert_eq!((m.available, m.margin_ratio), (d("999"), d("0.001")));
        assert_eq!(m.margin_usage(), d("0.03"));
        let broke = metrics(
            d("0"),
            d("0.005"),
            &[pos(Side::Long, "1", "100", "10", "50")],
        );
        assert_eq!(
            (broke.margin_ratio, broke.margin_usage()),
            (NO_EQUITY, NO_EQUITY)
        );
    }

    proptest! {
        /// At a position's liquidation price, maintenance / equity is the threshold.
        #[test]
        fn at_the_liquidation_price_the_ratio_is_the_threshold(
            long in any::<bool>(),
            q in 1i64..100,
            entry in 50i64..150,
            balance in 1i64..200,
            other in proptest::option::of((any::<bool>(), 1i64..100, 50i64..150, 50i64..150)),
        ) {
            let side = if long { Side::Long } else { Side::Short };
            let mut book = vec![Marked {
                position: Position { side, quantity: Decimal::from(q), entry_price: Decimal::from(entry), leverage: Decimal::TEN },
                mark: Decimal::from(entry),
            }];
            if let Some((l, q, e, m)) = other {
                let side = if l { Side::Long } else { Side::Short };
                book.push(Marked {
                    position: Position { side, quantity: Decimal::from(q), entry_price: Decimal::from(e), leverage: Decimal::TEN },
                    mark: Decimal::from(m),
                });
            }
            let (balance, mr, t) = (Decimal::from(balance), d("0.005"), d("0.9"));
            let lp = liquidation_price(balance, mr, t, &book, 0).unwrap();
            prop_assume!(lp > Decimal::ZERO);
            book[0].mark = lp;
            let m = metrics(balance, mr, &book);
            prop_assert!((m.margin_ratio - t).abs() < d("0.000001"), "ratio {} at {}", m.margin_ratio, lp);
        }
    }
}
