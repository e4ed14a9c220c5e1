//! A sub-account's balance changes only through [`apply`]: one delta, floored at zero,
//! with what the floor absorbed recorded beside it, so that for every account
//! `initial + Σ change + Σ absorbed = current` holds at all times (one `balance_logs`
//! row per delta, written in the same transaction as the change).

use rust_decimal::Decimal;

/// Why a balance changed (`balance_logs.reason`, the JS system's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TradePnl,
    Fee,
    Liquidation,
    Adl,
    AdminAdjust,
    Takeover,
    Reconcile,
    DesyncClose,
    Deposit,
    Withdrawal,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::TradePnl => "TRADE_PNL",
            Reason::Fee => "FEE",
            Reason::Liquidation => "LIQUIDATION",
            Reason::Adl => "ADL",
            Reason::AdminAdjust => "ADMIN_ADJUST",
            Reason::Takeover => "ADMIN_TAKEOVER",
            Reason::Reconcile => "RECONCILE",
            Reason::DesyncClose => "DESYNC_CLOSE",
            Reason::Deposit => "DEPOSIT",
            Reason::Withdrawal => "WITHDRAWAL",
        }
    }
}

/// One logged change: the `balance_logs` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceChange {
    pub before: Decimal,
    pub after: Decimal,
    /// The requested delta (what the JS system logs as `change_amount`).
    pub change: Decimal,
    /// What the zero floor took in: `after − (before + change)`, never negative.
    pub absorbed: Decimal,
    pub reason: Reason,
}

/// Decimal places of a balance change (USDT as the venue settles it). PnL computed from
/// an averaged entry price can carry 28 significant digits, and adding that to a
/// balance would round: the identity would hold in `Decimal` but not in PostgreSQL's
/// exact `numeric`. Rounded to this scale first, every sum is exact.
pub const MONEY_DP: u32 = 8;

/// The balance after `change` (rounded to [`MONEY_DP`]), floored at zero, and its
/// log row.
pub fn apply(before: Decimal, change: Decimal, reason: Reason) -> BalanceChange {
    let change = change.round_dp_with_strategy(
        MONEY_DP,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    let raw = before + change;
    let after = raw.max(Decimal::ZERO);
    BalanceChange {
        before,
        after,
        change,
        absorbed: after - raw,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_loss_larger_than_the_balance_floors_at_zero_and_says_how_much_was_absorbed() {
        let c = apply(Decimal::from(100), Decimal::from(-130), Reason::TradePnl);
        assert_eq!((c.after, c.absorbed), (Decimal::ZERO, Decimal::from(30)));
        let c = apply(Decimal::from(100), Decimal::from(-30), Reason::Fee);
        assert_eq!((c.after, c.absorbed), (Decimal::from(70), Decimal::ZERO));
    }

    #[test]
    fn a_change_with_more_digits_than_money_has_is_rounded_so_the_sum_is_exact() {
        // 34.675000000000000000000000003 added to 82.885 does not fit 28 digits:
        // unrounded, `before + change` would itself be rounded.
        let before: Decimal = "82.88500000000000000000000001".parse().unwrap();
        let c = apply(
            before.round_dp(MONEY_DP),
            "34.675000000000000000000000003".parse().unwrap(),
            Reason::TradePnl,
        );
        assert_eq!(c.change, "34.675".parse::<Decimal>().unwrap());
        assert_eq!(c.after, "117.56".parse::<Decimal>().unwrap());
        assert!(c.after.scale() <= MONEY_DP && c.change.scale() <= MONEY_DP);
    }

    proptest! {
        /// Whatever the deltas, the balance never goes negative and the identity
        /// initial + Σ change + Σ absorbed = current holds after every one.
        #[test]
        fn the_balance_identity_always_holds(
            initial in 0i64..1_000_000,
            deltas in proptest::collection::vec(-500_000i64..500_000, 0..200),
        ) {
            let initial = Decimal::new(initial, 2);
            let (mut balance, mut changes, mut absorbed) = (initial, Decimal::ZERO, Decimal::ZERO);
            for d in deltas {
                let c = apply(balance, Decimal::new(d, 2), Reason::TradePnl);
                prop_assert!(c.after >= Decimal::ZERO && c.absorbed >= Decimal::ZERO);
                prop_assert_eq!(c.before, balance);
                balance = c.after;
                changes += c.change;
                absorbed += c.absorbed;
                prop_assert_eq!(initial + changes + absorbed, balance);
            }
        }
    }
}
