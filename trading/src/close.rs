//! How to close a sub-account's virtual position on the shared exchange account.
//!
//! The exchange holds the net of every sub-account; the engine's book says what that
//! net should be (Σ virtual positions). Closing a position of signed size `v` should
//! move the exchange to `Σ − v`. If the exchange agrees with the book, a market order
//! of `−v` does that. If it does not (a position liquidated outside, a manual trade),
//! sending the order could open a position nobody owns; closing only virtually could
//! leave one. The plan is whichever leaves the exchange nearer the book after the
//! close; on a tie, the order (the venue's state is the one that costs money).
//!
//! This is the JS guard (js-gateway, seed 003 §1a: "no exchange position or the
//! opposite side → virtual-only close") made exact for netting: the JS compared only
//! the exchange's side, so with one sub-account long and another short on a flat
//! exchange it closed virtually and left the exchange short of what the book holds.

use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosePlan {
    /// Send a market order for `−v`; reduce-only when it cannot open anything on
    /// the exchange (the exchange's net is on the position's side and covers it).
    Venue { reduce_only: bool },
    /// Close the virtual position only, at the mark: the exchange does not hold it.
    VirtualOnly,
}

/// `venue`: the venue's net position in the symbol (signed); `house`: the part of it
/// that belongs to no sub-account (the operator's house position); `book`: Σ virtual
/// positions in it (signed, this one included); `position`: this one (signed, ≠ 0).
///
/// Which way to close is judged on the venue less the house, as reconciliation
/// judges sync; whether the order can be reduce-only is judged on the venue as it is,
/// since that is what the venue checks the flag against.
pub fn plan(venue: Decimal, house: Decimal, book: Decimal, position: Decimal) -> ClosePlan {
    let exchange = venue - house;
    let target = book - position;
    let after_order = (exchange - position - target).abs();
    let after_virtual = (exchange - target).abs();
    if after_order <= after_virtual {
        ClosePlan::Venue {
            reduce_only: covers(venue, position),
        }
    } else {
        ClosePlan::VirtualOnly
    }
}

/// Whether `venue` (signed) holds `position`'s side for all of it: an order closing
/// `position` can then be reduce-only on the venue.
pub fn covers(venue: Decimal, position: Decimal) -> bool {
    !venue.is_zero()
        && venue.is_sign_positive() == position.is_sign_positive()
        && venue.abs() >= position.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn in_sync_the_order_goes_to_the_venue() {
        assert_eq!(
            plan(d("1"), d("0"), d("1"), d("1")),
            ClosePlan::Venue { reduce_only: true }
        );
        assert_eq!(
            plan(d("-2"), d("0"), d("-2"), d("-0.5")),
            ClosePlan::Venue { reduce_only: true }
        );
    }

    #[test]
    fn a_long_and_a_short_on_a_flat_exchange_close_on_the_venue_not_virtually() {
        // The JS closed this virtually and left the exchange flat while the book
        // holds the other account's short.
        assert_eq!(
            plan(d("0"), d("0"), d("0"), d("1")),
            ClosePlan::Venue { reduce_only: false }
        );
    }

    #[test]
    fn what_the_exchange_does_not_hold_is_closed_virtually() {
        // The exchange has nothing (liquidated outside): an order would open a short.
        assert_eq!(plan(d("0"), d("0"), d("1"), d("1")), ClosePlan::VirtualOnly);
        // The exchange is on the other side.
        assert_eq!(
            plan(d("-1"), d("0"), d("1"), d("1")),
            ClosePlan::VirtualOnly
        );
    }

    #[test]
    fn a_foreign_position_on_the_venue_does_not_stop_a_close() {
        // 0.5 BTC on the venue belongs to nobody here; ours is 0.002 on top.
        assert_eq!(
            plan(d("0.502"), d("0.5"), d("0.002"), d("0.002")),
            ClosePlan::Venue { reduce_only: true }
        );
    }

    #[test]
    fn the_house_is_not_the_books_a_long_closes_under_a_house_short() {
        // House −4 ETH, one sub-account long 0.01: the venue holds −3.99. The close
        // is a sell on the venue (not reduce-only: the venue is short), never virtual.
        assert_eq!(
            plan(d("-3.99"), d("-4"), d("0.01"), d("0.01")),
            ClosePlan::Venue { reduce_only: false }
        );
        // Without the house the venue looked like the other side: closed virtually,
        // leaving the venue at −3.99.
        assert_eq!(
            plan(d("-3.99"), d("0"), d("0.01"), d("0.01")),
            ClosePlan::VirtualOnly
        );
        // The position the house hides is gone from the venue: virtual.
        assert_eq!(
            plan(d("-4"), d("-4"), d("0.01"), d("0.01")),
            ClosePlan::VirtualOnly
        );
    }
}
