//! Matching, pure: what a taker order takes from a book (walking the levels, no worse
//! than its limit), what time-in-force makes of that, when the market trades through a
//! resting order, fees, and what a fill does to a position. Prices and sizes are the
//! book's integer ticks and lots; money is `Decimal`.

use rust_decimal::Decimal;

use super::market::SimBook;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "BUY" => Some(Side::Buy),
            "SELL" => Some(Side::Sell),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }

    /// +1 for a buy, −1 for a sell.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tif {
    Gtc,
    Ioc,
    Fok,
    /// Post-only.
    Gtx,
}

impl Tif {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GTC" | "GTD" => Some(Tif::Gtc),
            "IOC" => Some(Tif::Ioc),
            "FOK" => Some(Tif::Fok),
            "GTX" => Some(Tif::Gtx),
            _ => None,
        }
    }
}

/// The levels a `side` order can take, best first, no worse than `limit` (ticks).
fn takeable(book: &SimBook, side: Side, limit: Option<i64>) -> Vec<(i64, i64)> {
    match side {
        Side::Buy => book
            .asks
            .iter()
            .take_while(|(p, _)| limit.is_none_or(|l| **p <= l))
            .map(|(p, q)| (*p, *q))
            .collect(),
        Side::Sell => book
            .bids
            .iter()
            .rev()
            .take_while(|(p, _)| limit.is_none_or(|l| **p >= l))
            .map(|(p, q)| (*p, *q))
            .collect(),
    }
}

/// Lots a `side` order could take now within `limit`.
pub fn crossing_lots(book: &SimBook, side: Side, limit: Option<i64>) -> i64 {
    takeable(book, side, limit).iter().map(|(_, q)| q).sum()
}

/// What a taker took: fills per level, best first, and the levels it changed (new
/// absolute sizes, 0 = gone) as the book's next diff should carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    pub fills: Vec<(i64, i64)>,
    pub changed: Vec<(i64, i64)>,
}

impl Taken {
    pub fn lots(&self) -> i64 {
        self.fills.iter().map(|(_, q)| q).sum()
    }
}

/// Takes up to `lots` from `book` for a `side` order, walking levels best first and
/// no worse than `limit`. The book is changed in place.
pub fn take(book: &mut SimBook, side: Side, limit: Option<i64>, lots: i64) -> Taken {
    let mut left = lots;
    let mut taken = Taken::default();
    for (price, size) in takeable(book, side, limit) {
        if left == 0 {
            break;
        }
        let q = size.min(left);
        left -= q;
        taken.fills.push((price, q));
        taken.changed.push((price, size - q));
        let levels = match side {
            Side::Buy => &mut book.asks,
            Side::Sell => &mut book.bids,
        };
        if size == q {
            levels.remove(&price);
        } else {
            levels.insert(price, size - q);
        }
    }
    taken
}

/// What an order does on arrival, given the lots it could take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Refused before it exists (the venue records nothing): code and message.
    Reject(i64, &'static str),
    /// Take `take` lots now; then rest the remainder (GTC) or expire it.
    Execute { take: i64, rest: bool },
}

/// `market` orders take what there is and expire the rest; limit orders by TIF: GTC
/// takes what crosses and rests the remainder, IOC expires it, FOK fills all or is
/// refused (-5021), GTX (post-only) is refused if anything crosses (-5022).
pub fn plan(market: bool, tif: Tif, qty: i64, crossing: i64) -> Plan {
    let take = qty.min(crossing);
    if market {
        return Plan::Execute { take, rest: false };
    }
    match tif {
        Tif::Gtc => Plan::Execute { take, rest: true },
        Tif::Ioc => Plan::Execute { take, rest: false },
        Tif::Fok if crossing >= qty => Plan::Execute { take: qty, rest: false },
        Tif::Fok => Plan::Reject(
            -5021,
            "Due to the order could not be filled immediately, the FOK order has been rejected. The order will not be recorded in the order history",
        ),
        Tif::Gtx if crossing > 0 => Plan::Reject(
            -5022,
            "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history",
        ),
        Tif::Gtx => Plan::Execute { take: 0, rest: true },
    }
}

/// Lots a resting `side` order at `limit` gets when the market trades through it: the
/// opposite side's size at or through the limit, at most `liquidity` per tick.
pub fn resting_fill(book: &SimBook, side: Side, limit: i64, remaining: i64, liquidity: i64) -> i64 {
    // The aggressor is the opposite side of the book: a resting buy fills when asks
    // come down to it.
    crossing_lots(book, side, Some(limit))
        .min(liquidity)
        .min(remaining)
        .max(0)
}

/// A position leg: signed amount (negative short) and average entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leg {
    pub amount: Decimal,
    pub entry: Decimal,
}

/// The leg after a fill of `signed` at `price`, and the PnL the fill realized (before
/// fees). Adding averages the entry; reducing realizes `(price − entry) × closed` in
/// the position's direction; crossing zero closes the old side and opens the rest at
/// `price` (a flip).
pub fn apply_fill(leg: Leg, signed: Decimal, price: Decimal) -> (Leg, Decimal) {
    let Leg { amount, entry } = leg;
    let after = amount + signed;
    if amount.is_zero() || amount.is_sign_positive() == signed.is_sign_positive() {
        let entry = if after.is_zero() {
            Decimal::ZERO
        } else {
            ((entry * amount + price * signed) / after).round_dp(8)
        };
        return (
            Leg {
                amount: after,
                entry,
            },
            Decimal::ZERO,
        );
    }
    let closed = signed.abs().min(amount.abs());
    let direction = if amount.is_sign_positive() {
        Decimal::ONE
    } else {
        Decimal::NEGATIVE_ONE
    };
    let realized = ((price - entry) * closed * direction).round_dp(8);
    let leg = if after.is_zero() {
        Leg::default()
    } else if after.is_sign_positive() == amount.is_sign_positive() {
        Leg {
            amount: after,
            entry,
        }
    } else {
        Leg {
            amount: after,
            entry: price,
        }
    };
    (leg, realized)
}

/// The fee for `qty` at `price` and `rate`, in the quote asset.
pub fn commission(price: Decimal, qty: Decimal, rate: Decimal) -> Decimal {
    (price * qty * rate).round_dp(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::market::SymbolSpec;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use streaming::rng::SplitMix64;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn book(seed: u64) -> SimBook {
        let spec = SymbolSpec::perpetual("BTC", 60_000.0, d("0.1"), d("0.001"));
        SimBook::new(&spec, 20, &mut SplitMix64::new(seed))
    }

    #[test]
    fn a_market_buy_walks_the_asks_and_the_average_reflects_depth() {
        let mut b = book(1);
        let levels: Vec<(i64, i64)> = b.asks.iter().take(3).map(|(p, q)| (*p, *q)).collect();
        let want = levels[0].1 + levels[1].1 + 1;
        let t = take(&mut b, Side::Buy, None, want);
        assert_eq!(t.fills, vec![levels[0], levels[1], (levels[2].0, 1)]);
        assert_eq!(t.changed[2], (levels[2].0, levels[2].1 - 1));
        assert!(!b.asks.contains_key(&levels[0].0));
        assert_eq!(b.asks[&levels[2].0], levels[2].1 - 1);
    }

    #[test]
    fn time_in_force_decides_what_rests_expires_or_is_refused() {
        assert_eq!(
            plan(true, Tif::Gtc, 10, 4),
            Plan::Execute {
                take: 4,
                rest: false
            }
        );
        assert_eq!(
            plan(false, Tif::Gtc, 10, 4),
            Plan::Execute {
                take: 4,
                rest: true
            }
        );
        assert_eq!(
            plan(false, Tif::Ioc, 10, 4),
            Plan::Execute {
                take: 4,
                rest: false
            }
        );
        assert_eq!(
            plan(false, Tif::Fok, 10, 10),
            Plan::Execute {
                take: 10,
                rest: false
            }
        );
        assert!(matches!(
            plan(false, Tif::Fok, 10, 9),
            Plan::Reject(-5021, _)
        ));
        assert!(matches!(
            plan(false, Tif::Gtx, 10, 1),
            Plan::Reject(-5022, _)
        ));
        assert_eq!(
            plan(false, Tif::Gtx, 10, 0),
            Plan::Execute {
                take: 0,
                rest: true
            }
        );
    }

    #[test]
    fn adding_averages_reducing_realizes_and_crossing_zero_flips() {
        let long = Leg {
            amount: d("1"),
            entry: d("100"),
        };
        let (added, r) = apply_fill(long, d("1"), d("110"));
        assert_eq!((added.amount, added.entry, r), (d("2"), d("105"), d("0")));
        let (reduced, r) = apply_fill(added, d("-0.5"), d("115"));
        assert_eq!(
            (reduced.amount, reduced.entry, r),
            (d("1.5"), d("105"), d("5"))
        );
        // LONG 1 @100 → sell 1.5 @110: +10 realized once, SHORT 0.5 @110.
        let (flipped, r) = apply_fill(long, d("-1.5"), d("110"));
        assert_eq!(
            (flipped.amount, flipped.entry, r),
            (d("-0.5"), d("110"), d("10"))
        );
        let (flat, r) = apply_fill(flipped, d("0.5"), d("120"));
        assert_eq!((flat, r), (Leg::default(), d("-5")));
    }

    proptest! {
        /// A walk never fills worse than its limit nor more than asked, and what it
        /// filled is exactly what left the book.
        #[test]
        fn walks_respect_the_limit_and_conserve_the_book(
            seed in 0u64..1000,
            buy in any::<bool>(),
            lots in 1i64..40_000,
            offset in -5i64..25,
        ) {
            let mut b = book(seed);
            let side = if buy { Side::Buy } else { Side::Sell };
            let bound = match side {
                Side::Buy => b.mid + offset,
                Side::Sell => b.mid - offset,
            };
            let limit = Some(bound);
            let before: BTreeMap<i64, i64> = match side {
                Side::Buy => b.asks.clone(),
                Side::Sell => b.bids.clone(),
            };
            let t = take(&mut b, side, limit, lots);
            prop_assert!(t.lots() <= lots);
            for (p, _) in &t.fills {
                match side {
                    Side::Buy => prop_assert!(*p <= bound),
                    Side::Sell => prop_assert!(*p >= bound),
                }
            }
            let after = match side {
                Side::Buy => &b.asks,
                Side::Sell => &b.bids,
            };
            let gone: i64 = before.values().sum::<i64>() - after.values().sum::<i64>();
            prop_assert_eq!(gone, t.lots());
            // It stops only when filled or when nothing else is takeable.
            prop_assert!(t.lots() == lots || crossing_lots(&b, side, limit) == 0);
        }

        /// Through any sequence of fills, wallet = initial + realized − fees, and the
        /// position equals the sum of signed fills.
        #[test]
        fn the_wallet_is_initial_plus_realized_minus_fees(
            fills in proptest::collection::vec((-50i64..50, 900i64..1100), 1..60),
        ) {
            let initial = d("10000");
            let rate = d("0.0005");
            let (mut leg, mut wallet, mut realized, mut fees, mut net) =
                (Leg::default(), initial, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
            for (q, p) in fills {
                prop_assume!(q != 0);
                let (qty, price) = (Decimal::new(q, 1), Decimal::from(p));
                let (next, r) = apply_fill(leg, qty, price);
                let fee = commission(price, qty.abs(), rate);
                wallet += r - fee;
                realized += r;
                fees += fee;
                net += qty;
                leg = next;
                prop_assert_eq!(leg.amount, net);
                prop_assert!(leg.amount.is_zero() == leg.entry.is_zero());
            }
            prop_assert_eq!(wallet, initial + realized - fees);
        }
    }
}
