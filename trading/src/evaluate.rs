//! One account valued at the current marks: the margin numbers of [`crate::account`],
//! every position's unrealized PnL and cross-margin liquidation price, the account's
//! liquidation price (that of its largest position by notional, as the JS system
//! reports it), and the account's risk tier. What the risk loop publishes
//! (`pnl_update`, `margin_update`, the `pms:risk:{id}` snapshot) is built from this.
//!
//! The sums are taken once, so valuing n positions costs O(n), not O(n²).

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::account::{Metrics, NO_EQUITY};
use crate::position::{Position, Side};
use crate::risk::AccountStatus;

/// What happens to an account that reaches its liquidation threshold
/// (`sub_accounts.liquidation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiquidationMode {
    Adl30,
    InstantClose,
    Takeover,
}

impl LiquidationMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            LiquidationMode::Adl30 => "ADL_30",
            LiquidationMode::InstantClose => "INSTANT_CLOSE",
            LiquidationMode::Takeover => "TAKEOVER",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ADL_30" => Some(LiquidationMode::Adl30),
            "INSTANT_CLOSE" => Some(LiquidationMode::InstantClose),
            "TAKEOVER" => Some(LiquidationMode::Takeover),
            _ => None,
        }
    }
}

/// An open virtual position as the book holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPosition {
    pub id: Arc<str>,
    pub symbol: Arc<str>,
    pub position: Position,
    pub babysitter_excluded: bool,
    /// Unix milliseconds.
    pub opened_at: i64,
}

/// A sub-account as the risk loop watches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Arc<str>,
    pub status: AccountStatus,
    pub liquidation_mode: LiquidationMode,
    pub balance: Decimal,
    pub maintenance_rate: Decimal,
    /// The rules' liquidation threshold T (margin ratio).
    pub threshold: Decimal,
    pub positions: Vec<OpenPosition>,
}

/// Where an account's margin ratio stands against its threshold T (js-gateway §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Below T − 0.10.
    Normal,
    /// From T − 0.10: warn the owner.
    Warning,
    /// From T: reduce the largest position by 30 % (ADL_30), or liquidate.
    Adl2,
    /// From T + 0.05: reduce, and liquidate if still at T.
    Adl3,
    /// Equity ≤ 0 or margin ratio ≥ 1.
    Insolvent,
}

/// The margin ratio at which an account is insolvent whatever its threshold.
pub const INSOLVENT_RATIO: Decimal = Decimal::ONE;
const WARNING_BAND: Decimal = Decimal::from_parts(10, 0, 0, false, 2);
const TIER3_BAND: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

pub fn tier(equity: Decimal, margin_ratio: Decimal, threshold: Decimal) -> Tier {
    if equity <= Decimal::ZERO || margin_ratio >= INSOLVENT_RATIO {
        Tier::Insolvent
    } else if margin_ratio >= threshold + TIER3_BAND {
        Tier::Adl3
    } else if margin_ratio >= threshold {
        Tier::Adl2
    } else if margin_ratio >= threshold - WARNING_BAND {
        Tier::Warning
    } else {
        Tier::Normal
    }
}

/// One position valued at its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valued {
    pub id: Arc<str>,
    pub symbol: Arc<str>,
    pub side: Side,
    pub entry_price: Decimal,
    pub mark: Decimal,
    pub quantity: Decimal,
    pub notional: Decimal,
    pub leverage: Decimal,
    pub margin: Decimal,
    pub unrealized: Decimal,
    /// unrealized / margin × 100 (0 without margin).
    pub pnl_percent: Decimal,
    /// The mark at which the account reaches T with every other position at its mark.
    pub liquidation_price: Decimal,
    pub babysitter_excluded: bool,
    pub opened_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub account_id: Arc<str>,
    pub status: AccountStatus,
    pub liquidation_mode: LiquidationMode,
    pub threshold: Decimal,
    pub metrics: Metrics,
    /// The liquidation price of the largest position by notional; `None` when flat.
    pub account_liquidation_price: Option<Decimal>,
    pub tier: Tier,
    pub positions: Vec<Valued>,
}

/// Values `account` at the marks `mark_of` gives; a symbol without a mark is valued
/// at its entry price (no PnL rather than an invented one).
pub fn evaluate(account: &Account, mark_of: impl Fn(&str) -> Option<Decimal>) -> Evaluation {
    let marks: Vec<Decimal> = account
        .positions
        .iter()
        .map(|p| mark_of(&p.symbol).unwrap_or(p.position.entry_price))
        .collect();
    let mut unrealized = Decimal::ZERO;
    let mut notional = Decimal::ZERO;
    let mut initial_margin = Decimal::ZERO;
    for (p, &mark) in account.positions.iter().zip(&marks) {
        unrealized += p.position.unrealized(mark);
        notional += p.position.notional();
        initial_margin += p.position.margin();
    }
    let balance = account.balance;
    let equity = balance + unrealized;
    let maintenance = notional * account.maintenance_rate;
    let ratio = |x: Decimal| {
        if equity <= Decimal::ZERO {
            NO_EQUITY
        } else {
            x / equity
        }
    };
    let metrics = Metrics {
        balance,
        unrealized,
        equity,
        notional,
        initial_margin,
        maintenance,
        available: equity - maintenance,
        margin_ratio: ratio(maintenance),
        margin_usage: ratio(initial_margin),
    };
    // The equity at which maintenance / equity = T.
    let floor = if account.threshold > Decimal::ZERO {
        Some(maintenance / account.threshold)
    } else {
        None
    };
    let mut largest: Option<(Decimal, Decimal)> = None;
    let positions: Vec<Valued> = account
        .positions
        .iter()
        .zip(&marks)
        .map(|(p, &mark)| {
            let pos = &p.position;
            let own = pos.unrealized(mark);
            let liquidation_price = match floor {
                // balance + others + s·(L − entry)·q = floor
                Some(floor) => {
                    let moved = (floor - balance - (unrealized - own)) / pos.quantity;
                    let price = match pos.side {
                        Side::Long => pos.entry_price + moved,
                        Side::Short => pos.entry_price - moved,
                    };
                    price.max(Decimal::ZERO)
                }
                None => pos.entry_price,
            };
            let margin = pos.margin();
            let n = pos.notional();
            if largest.is_none_or(|(m, _)| n > m) {
                largest = Some((n, liquidation_price));
            }
            Valued {
                id: p.id.clone(),
                symbol: p.symbol.clone(),
                side: pos.side,
                entry_price: pos.entry_price,
                mark,
                quantity: pos.quantity,
                notional: n,
                leverage: pos.leverage,
                margin,
                unrealized: own,
                pnl_percent: if margin.is_zero() {
                    Decimal::ZERO
                } else {
                    own / margin * Decimal::ONE_HUNDRED
                },
                liquidation_price,
                babysitter_excluded: p.babysitter_excluded,
                opened_at: p.opened_at,
            }
        })
        .collect();
    Evaluation {
        account_id: account.id.clone(),
        status: account.status,
        liquidation_mode: account.liquidation_mode,
        threshold: account.threshold,
        tier: tier(equity, metrics.margin_ratio, account.threshold),
        account_liquidation_price: largest.map(|(_, l)| l),
        metrics,
        positions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{liquidation_price, metrics, Marked};
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    pub(crate) fn open(id: &str, symbol: &str, side: Side, q: &str, entry: &str) -> OpenPosition {
        OpenPosition {
            id: id.into(),
            symbol: symbol.into(),
            position: Position {
                side,
                quantity: d(q),
                entry_price: d(entry),
                leverage: d("10"),
            },
            babysitter_excluded: false,
            opened_at: 0,
        }
    }

    fn account(balance: &str, positions: Vec<OpenPosition>) -> Account {
        Account {
            id: "a".into(),
            status: AccountStatus::Active,
            liquidation_mode: LiquidationMode::Adl30,
            balance: d(balance),
            maintenance_rate: d("0.005"),
            threshold: d("0.9"),
            positions,
        }
    }

    #[test]
    fn the_tiers_follow_the_threshold() {
        let t = d("0.9");
        let cases = [
            ("100", "0.1", Tier::Normal),
            ("100", "0.79", Tier::Normal),
            ("100", "0.8", Tier::Warning),
            ("100", "0.9", Tier::Adl2),
            ("100", "0.95", Tier::Adl3),
            ("100", "1", Tier::Insolvent),
            ("0", "999", Tier::Insolvent),
        ];
        for (equity, mr, want) in cases {
            assert_eq!(tier(d(equity), d(mr), t), want, "mr {mr}");
        }
    }

    #[test]
    fn the_account_liquidation_price_is_the_largest_positions() {
        let a = account(
            "100",
            vec![
                open("small", "ETHUSDT", Side::Long, "1", "50"),
                open("big", "BTCUSDT", Side::Short, "2", "100"),
            ],
        );
        let e = evaluate(&a, |s| {
            Some(if s == "BTCUSDT" { d("101") } else { d("51") })
        });
        assert_eq!(
            e.account_liquidation_price,
            Some(e.positions[1].liquidation_price)
        );
        assert_eq!(e.positions[1].unrealized, d("-2"));
        assert_eq!(e.positions[0].pnl_percent, d("20"), "+1 on a margin of 5");
        let flat = evaluate(&account("100", vec![]), |_| None);
        assert_eq!(flat.account_liquidation_price, None);
        assert_eq!(flat.metrics.equity, d("100"));
    }

    #[test]
    fn a_symbol_without_a_mark_is_valued_at_its_entry() {
        let a = account("100", vec![open("p", "BTCUSDT", Side::Long, "1", "100")]);
        let e = evaluate(&a, |_| None);
        assert_eq!(
            (e.positions[0].mark, e.metrics.unrealized),
            (d("100"), d("0"))
        );
    }

    proptest! {
        /// The one-pass valuation agrees with the account functions position by
        /// position: same metrics, same liquidation prices.
        #[test]
        fn one_pass_agrees_with_the_account_functions(
            balance in 0i64..10_000,
            book in proptest::collection::vec((any::<bool>(), 1i64..50, 10i64..500, 10i64..500), 0..12),
        ) {
            let positions: Vec<OpenPosition> = book.iter().enumerate().map(|(i, &(long, q, e, _))| {
                let side = if long { Side::Long } else { Side::Short };
                open(&i.to_string(), &format!("S{i}"), side, &q.to_string(), &e.to_string())
            }).collect();
            let a = account(&balance.to_string(), positions.clone());
            let marks: Vec<Decimal> = book.iter().map(|b| Decimal::from(b.3)).collect();
            let e = evaluate(&a, |s| s[1..].parse::<usize>().ok().map(|i| marks[i]));
            let marked: Vec<Marked> = positions.iter().zip(&marks).map(|(p, &mark)| Marked { position: p.position.clone(), mark }).collect();
            prop_assert_eq!(&e.metrics, &metrics(a.balance, a.maintenance_rate, &marked));
            for i in 0..marked.len() {
                let want = liquidation_price(a.balance, a.maintenance_rate, a.threshold, &marked, i).unwrap();
                prop_assert_eq!(e.positions[i].liquidation_price, want);
            }
        }
    }
}
