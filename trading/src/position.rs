//! One sub-account's virtual position in one symbol, and what a fill does to it: open,
//! add (weighted entry), reduce, close, or flip (the old side closed with its PnL
//! realized and its margin released, the rest opened on the other side at the fill
//! price, in one step). At most one open position per account and symbol.
//!
//! Realized PnL here is gross; the fee of every fill is charged separately (the JS
//! system charged fees on closes only). A flip realizes the old side's PnL exactly
//! once (the JS validator counted it twice, js-gateway §0 #25).

use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Long,
    Short,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Long => "LONG",
            Side::Short => "SHORT",
        }
    }

    /// +1 long, −1 short.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Long => Decimal::ONE,
            Side::Short => Decimal::NEGATIVE_ONE,
        }
    }
}

/// The side of an order or a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSide {
    Buy,
    Sell,
}

impl OrderSide {
    /// The position side this order side opens or adds to.
    pub const fn opens(self) -> Side {
        match self {
            OrderSide::Buy => Side::Long,
            OrderSide::Sell => Side::Short,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub side: Side,
    /// Always positive.
    pub quantity: Decimal,
    pub entry_price: Decimal,
    /// The latest opening or adding fill's leverage (as the JS system keeps it).
    pub leverage: Decimal,
}

impl Position {
    /// Entry notional: entry price × quantity.
    pub fn notional(&self) -> Decimal {
        self.entry_price * self.quantity
    }

    /// Initial margin held: notional / leverage.
    pub fn margin(&self) -> Decimal {
        self.notional() / self.leverage
    }

    /// Unrealized PnL at `mark`.
    pub fn unrealized(&self, mark: Decimal) -> Decimal {
        self.side.sign() * (mark - self.entry_price) * self.quantity
    }

    /// Signed quantity: negative short.
    pub fn signed(&self) -> Decimal {
        self.side.sign() * self.quantity
    }
}

/// One execution on the venue, attributed to this sub-account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub side: OrderSide,
    pub quantity: Decimal,
    pub price: Decimal,
    /// The order's leverage, for what this fill opens.
    pub leverage: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("fill quantity {0} must be positive")]
    Quantity(Decimal),
    #[error("fill price {0} must be positive")]
    Price(Decimal),
    #[error("leverage {0} must be at least 1")]
    Leverage(Decimal),
}

/// What a fill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Opened,
    Added,
    Reduced,
    Closed,
    /// The old side closed and the new side opened, in one step.
    Flipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub change: Change,
    /// The position after the fill; `None` when flat.
    pub after: Option<Position>,
    /// Quantity of the old position this fill closed.
    pub closed: Decimal,
    /// Gross PnL realized by the closing part.
    pub realized: Decimal,
    /// Initial margin released by the closing part.
    pub margin_released: Decimal,
}

/// The quantity a `trade` of `q` on `side` sends, as the JS system trades
/// (js-gateway §0 #24, preserved): against an opposite position it closes the whole
/// of it and opens `q` — one order of opposite + `q` (a flip). Reduce-only reduces by
/// `q`, at most what is held, and never flips (§0 #23 fixed). Otherwise `q`.
pub fn trade_quantity(
    held: Option<&Position>,
    side: OrderSide,
    q: Decimal,
    reduce_only: bool,
) -> Decimal {
    match held {
        Some(p) if p.side != side.opens() => {
            if reduce_only {
                q.min(p.quantity)
            } else {
                p.quantity + q
            }
        }
        _ => q,
    }
}

/// Applies `fill` to the account's position in that symbol (`None` when flat).
pub fn apply_fill(position: Option<&Position>, fill: &Fill) -> Result<Outcome, FillError> {
    if fill.quantity <= Decimal::ZERO {
        return Err(FillError::Quantity(fill.quantity));
    }
    if fill.price <= Decimal::ZERO {
        return Err(FillError::Price(fill.price));
    }
    if fill.leverage < Decimal::ONE {
        return Err(FillError::Leverage(fill.leverage));
    }
    let opens = fill.side.opens();
    let fresh = |quantity: Decimal| Position {
        side: opens,
        quantity,
        entry_price: fill.price,
        leverage: fill.leverage,
    };
    let Some(p) = position else {
        return Ok(Outcome {
            change: Change::Opened,
            after: Some(fresh(fill.quantity)),
            closed: Decimal::ZERO,
            realized: Decimal::ZERO,
            margin_released: Decimal::ZERO,
        });
    };
    if p.side == opens {
        let quantity = p.quantity + fill.quantity;
        let entry_price = (p.entry_price * p.quantity + fill.price * fill.quantity) / quantity;
        return Ok(Outcome {
            change: Change::Added,
            after: Some(Position {
                side: p.side,
                quantity,
                entry_price,
                leverage: fill.leverage,
            }),
            closed: Decimal::ZERO,
            realized: Decimal::ZERO,
            margin_released: Decimal::ZERO,
        });
    }
    let closed = fill.quantity.min(p.quantity);
    let realized = p.side.sign() * (fill.price - p.entry_price) * closed;
    let margin_released = p.margin() * closed / p.quantity;
    let (change, after) = if fill.quantity < p.quantity {
        let rest = Position {
            quantity: p.quantity - closed,
            ..p.clone()
        };
        (Change::Reduced, Some(rest))
    } else if fill.quantity == p.quantity {
        (Change::Closed, None)
    } else {
        (Change::Flipped, Some(fresh(fill.quantity - closed)))
    };
    Ok(Outcome {
        change,
        after,
        closed,
        realized,
        margin_released,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn fill(side: OrderSide, q: &str, p: &str) -> Fill {
        Fill {
            side,
            quantity: d(q),
            price: d(p),
            leverage: d("10"),
        }
    }

    #[test]
    fn open_add_reduce_close() {
        let o = apply_fill(None, &fill(OrderSide::Buy, "1", "100")).unwrap();
        assert_eq!(o.change, Change::Opened);
        let p = o.after.unwrap();
        assert_eq!((p.side, p.margin()), (Side::Long, d("10")));
        let o = apply_fill(Some(&p), &fill(OrderSide::Buy, "1", "110")).unwrap();
        let p = o.after.unwrap();
        assert_eq!(
            (o.change, p.quantity, p.entry_price),
            (Change::Added, d("2"), d("105"))
        );
        let o = apply_fill(Some(&p), &fill(OrderSide::Sell, "0.5", "115")).unwrap();
        assert_eq!(
            (o.change.clone(), o.realized, o.margin_released),
            (Change::Reduced, d("5"), d("5.25"))
        );
        let p = o.after.unwrap();
        let o = apply_fill(Some(&p), &fill(OrderSide::Sell, "1.5", "95")).unwrap();
        assert_eq!(
            (o.change, o.after, o.realized),
            (Change::Closed, None, d("-15"))
        );
    }

    #[test]
    fn a_flip_realizes_the_old_side_once_and_opens_the_rest_at_the_fill_price() {
        // LONG 1 @100 → SELL 1.5 @110: +10 realized once, SHORT 0.5 @110 with margin 55/L.
        let long = apply_fill(None, &fill(OrderSide::Buy, "1", "100"))
            .unwrap()
            .after
            .unwrap();
        let o = apply_fill(Some(&long), &fill(OrderSide::Sell, "1.5", "110")).unwrap();
        assert_eq!(o.change, Change::Flipped);
        assert_eq!(
            (o.closed, o.realized, o.margin_released),
            (d("1"), d("10"), d("10"))
        );
        let short = o.after.unwrap();
        assert_eq!(
            (short.side, short.quantity, short.entry_price),
            (Side::Short, d("0.5"), d("110"))
        );
        assert_eq!(short.margin(), d("5.5"));
    }

    #[test]
    fn bad_fills_are_errors() {
        assert!(matches!(
            apply_fill(None, &fill(OrderSide::Buy, "0", "1")),
            Err(FillError::Quantity(_))
        ));
        assert!(matches!(
            apply_fill(None, &fill(OrderSide::Buy, "1", "-1")),
            Err(FillError::Price(_))
        ));
        let f = Fill {
            leverage: d("0.5"),
            ..fill(OrderSide::Buy, "1", "1")
        };
        assert!(matches!(apply_fill(None, &f), Err(FillError::Leverage(_))));
    }

    proptest! {
        /// Through any fills: the signed quantity is the sum of signed fills; the
        /// margin held is the open notional over leverage; and once flat again, the
        /// realized PnL equals the cash that flowed (sells in, buys out) — a flip
        /// neither loses nor double-counts anything.
        #[test]
        fn flips_conserve_quantity_margin_and_pnl(
            fills in proptest::collection::vec((any::<bool>(), 1i64..50, 90i64..110, 1i64..20), 1..40),
        ) {
            let (mut pos, mut net, mut realized, mut cash) =
                (None::<Position>, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
            let mut held_margin = Decimal::ZERO;
            for (buy, q, p, lev) in fills {
                let side = if buy { OrderSide::Buy } else { OrderSide::Sell };
                let f = Fill { side, quantity: Decimal::new(q, 1), price: Decimal::from(p), leverage: Decimal::from(lev) };
                let o = apply_fill(pos.as_ref(), &f).unwrap();
                let signed = if buy { f.quantity } else { -f.quantity };
                net += signed;
                cash -= signed * f.price;
                realized += o.realized;
                held_margin -= o.margin_released;
                if matches!(o.change, Change::Opened | Change::Added | Change::Flipped) {
                    // What this fill opened holds margin at its leverage (an add
                    // re-bases the whole position on the latest leverage).
                    held_margin = o.after.as_ref().map_or(Decimal::ZERO, Position::margin);
                }
                pos = o.after;
                prop_assert_eq!(pos.as_ref().map_or(Decimal::ZERO, Position::signed), net);
                let want = pos.as_ref().map_or(Decimal::ZERO, Position::margin);
                prop_assert!((held_margin - want).abs() < Decimal::new(1, 12), "{} vs {}", held_margin, want);
                if pos.is_none() {
                    prop_assert!((realized - cash).abs() < Decimal::new(1, 12), "{} vs {}", realized, cash);
                }
            }
        }
    }

    #[test]
    fn a_counter_side_trade_flips_the_whole_position_and_reduce_only_never_flips() {
        let long = Position {
            side: Side::Long,
            quantity: d("2"),
            entry_price: d("100"),
            leverage: d("10"),
        };
        // Against a long of 2: a sell of 3 sends 5 (close 2, open 3); of 1 sends 3.
        assert_eq!(
            trade_quantity(Some(&long), OrderSide::Sell, d("3"), false),
            d("5")
        );
        assert_eq!(
            trade_quantity(Some(&long), OrderSide::Sell, d("1"), false),
            d("3")
        );
        // Reduce-only: by q, at most what is held.
        assert_eq!(
            trade_quantity(Some(&long), OrderSide::Sell, d("1"), true),
            d("1")
        );
        assert_eq!(
            trade_quantity(Some(&long), OrderSide::Sell, d("3"), true),
            d("2")
        );
        // Same side or flat: q.
        assert_eq!(
            trade_quantity(Some(&long), OrderSide::Buy, d("1"), false),
            d("1")
        );
        assert_eq!(trade_quantity(None, OrderSide::Sell, d("1"), false), d("1"));
    }
}
