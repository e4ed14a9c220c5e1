//! One account valued at the current marks: the margin numbers of [`crate::account`],
//! every position's unrealized PnL and cross-margin liquidation price, the account's
//! liquidation price (that of its largest position by notional, as the JS system
//! reports it), and the account's risk tier. What the risk loop publishes
//! (`pnl_update`, `margin_update`, the `pms:risk:{id}` snapshot) is built from this.
//!
//! The sums are taken once, so valuing n positions costs O(n), not O(n²); and what
//! changes only with the book is computed once per book change ([`Prepared`]).

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::account::{Marked, Metrics, NO_EQUITY};
use crate::position::{Position, Side};
use crate::risk::{AccountStatus, AccountView};

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
    Bounds::of(threshold).tier(equity, margin_ratio)
}

/// The margin ratios where the tiers begin, for one threshold.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    warning: Decimal,
    adl2: Decimal,
    adl3: Decimal,
}

impl Bounds {
    fn of(threshold: Decimal) -> Self {
        Self {
            warning: threshold - WARNING_BAND,
            adl2: threshold,
            adl3: threshold + TIER3_BAND,
        }
    }

    fn tier(&self, equity: Decimal, margin_ratio: Decimal) -> Tier {
        // Most accounts are Normal: one comparison (no equity gives a ratio of 999).
        if margin_ratio < self.warning && equity > Decimal::ZERO {
            Tier::Normal
        } else if equity <= Decimal::ZERO || margin_ratio >= INSOLVENT_RATIO {
            Tier::Insolvent
        } else if margin_ratio >= self.adl3 {
            Tier::Adl3
        } else if margin_ratio >= self.adl2 {
            Tier::Adl2
        } else {
            Tier::Warning
        }
    }
}

/// One position valued at its mark (the position itself is the account's, same index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionValue {
    pub mark: Decimal,
    pub unrealized: Decimal,
    /// unrealized / margin × 100 (0 without margin).
    pub pnl_percent: Decimal,
    /// The mark at which the account reaches T with every other position at its mark.
    pub liquidation_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub account: Arc<Account>,
    pub metrics: Metrics,
    /// The liquidation price of the largest position by notional; `None` when flat.
    pub account_liquidation_price: Option<Decimal>,
    pub tier: Tier,
    /// In the order of `account.positions`.
    pub positions: Vec<PositionValue>,
}

/// Significant digits of the per-unit factors, and decimal places of the equity
/// floor. A product of two 28-digit decimals overflows the 96-bit mantissa and is
/// rescaled by division, ten times the cost of a multiplication; at these sizes the
/// products fit. The factors feed only liquidation prices and PnL percentages
/// (estimates shown to people, never money): relative error below 1e-12.
const FACTOR_SF: u32 = 13;
const FLOOR_DP: u32 = 10;

fn factor(x: Decimal) -> Decimal {
    x.round_sf(FACTOR_SF).unwrap_or(x)
}

/// A position's numbers that change only when the book does.
#[derive(Debug, Clone)]
struct Leg {
    long: bool,
    /// 1 / quantity, so a tick multiplies instead of dividing.
    per_unit: Decimal,
    /// 100 / margin (0 without margin).
    percent_of_margin: Decimal,
}

/// An account with everything that changes only when its book does computed once:
/// the totals of notional, initial margin and maintenance, the equity floor of its
/// threshold, its largest position, and each position's per-unit factors. Valuing it
/// at new marks is then multiplications and additions, and two divisions for the
/// account's ratios (Decimal division costs ten multiplications).
#[derive(Debug, Clone)]
pub struct Prepared {
    account: Arc<Account>,
    legs: Vec<Leg>,
    notional: Decimal,
    initial_margin: Decimal,
    maintenance: Decimal,
    /// The equity at which maintenance / equity = T; `None` for a threshold ≤ 0.
    floor: Option<Decimal>,
    largest: Option<usize>,
    bounds: Bounds,
}

impl Prepared {
    pub fn new(account: Account) -> Self {
        let mut notional = Decimal::ZERO;
        let mut initial_margin = Decimal::ZERO;
        let mut largest: Option<(usize, Decimal)> = None;
        let legs = account
            .positions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = p.position.notional();
                let margin = p.position.margin();
                notional += n;
                initial_margin += margin;
                if largest.is_none_or(|(_, m)| n > m) {
                    largest = Some((i, n));
                }
                Leg {
                    long: p.position.side == Side::Long,
                    per_unit: factor(Decimal::ONE / p.position.quantity),
                    percent_of_margin: if margin.is_zero() {
                        Decimal::ZERO
                    } else {
                        factor(Decimal::ONE_HUNDRED / margin)
                    },
                }
            })
            .collect();
        let maintenance = notional * account.maintenance_rate;
        let floor = (account.threshold > Decimal::ZERO)
            .then(|| (maintenance / account.threshold).round_dp(FLOOR_DP));
        let bounds = Bounds::of(account.threshold);
        Self {
            account: Arc::new(account),
            legs,
            notional,
            initial_margin,
            maintenance,
            floor,
            largest: largest.map(|(i, _)| i),
            bounds,
        }
    }

    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    fn unrealized(
        &self,
        marks: &impl Fn(usize) -> Option<Decimal>,
    ) -> (Vec<(Decimal, Decimal)>, Decimal) {
        let mut total = Decimal::ZERO;
        let each = self
            .account
            .positions
            .iter()
            .zip(&self.legs)
            .enumerate()
            .map(|(i, (p, leg))| {
                let mark = marks(i).unwrap_or(p.position.entry_price);
                let own = signed(
                    leg.long,
                    (mark - p.position.entry_price) * p.position.quantity,
                );
                total += own;
                (mark, own)
            })
            .collect();
        (each, total)
    }

    /// Values the account at the marks `marks(i)` gives for its i-th position; a
    /// position without a mark is valued at its entry price (no PnL rather than an
    /// invented one).
    pub fn value(&self, marks: impl Fn(usize) -> Option<Decimal>) -> Evaluation {
        let mut unrealized = Decimal::ZERO;
        let positions: Vec<PositionValue> = (0..self.legs.len())
            .map(|i| {
                let v = self.position_at(i, marks(i));
                unrealized += v.unrealized;
                v
            })
            .collect();
        self.finish(positions, unrealized)
    }

    /// [`Prepared::value`] after a valuation `prev` of the same book, when only the
    /// positions for which `moved(i)` holds can have a new mark: the others keep
    /// their PnL, and only their liquidation prices (which depend on the whole
    /// account) are recomputed. The result equals a full valuation's (the sums are
    /// exact: PnL has the scale of price × quantity).
    pub fn revalue(
        &self,
        prev: Evaluation,
        moved: impl Fn(usize) -> bool,
        marks: impl Fn(usize) -> Option<Decimal>,
    ) -> Evaluation {
        if !Arc::ptr_eq(&prev.account, &self.account) {
            return self.value(marks);
        }
        let mut unrealized = prev.metrics.unrealized;
        let mut positions = prev.positions;
        for (i, v) in positions.iter_mut().enumerate() {
            if moved(i) {
                let new = self.position_at(i, marks(i));
                unrealized += new.unrealized - v.unrealized;
                *v = new;
            }
        }
        self.finish(positions, unrealized)
    }

    /// Position `i` at `mark` (its entry without one), liquidation price still to come.
    fn position_at(&self, i: usize, mark: Option<Decimal>) -> PositionValue {
        let (p, leg) = (&self.account.positions[i].position, &self.legs[i]);
        let mark = mark.unwrap_or(p.entry_price);
        let own = signed(leg.long, (mark - p.entry_price) * p.quantity);
        PositionValue {
            mark,
            unrealized: own,
            pnl_percent: own * leg.percent_of_margin,
            liquidation_price: Decimal::ZERO,
        }
    }

    /// The account's numbers, every liquidation price and the tier, from the
    /// positions' values and their PnL sum.
    fn finish(&self, mut positions: Vec<PositionValue>, unrealized: Decimal) -> Evaluation {
        let a = &self.account;
        let balance = a.balance;
        let equity = balance + unrealized;
        let metrics = Metrics {
            balance,
            unrealized,
            equity,
            notional: self.notional,
            initial_margin: self.initial_margin,
            maintenance: self.maintenance,
            available: equity - self.maintenance,
            margin_ratio: if equity <= Decimal::ZERO {
                NO_EQUITY
            } else {
                self.maintenance / equity
            },
        };
        // balance + others + s·(L − entry)·q = floor with others = unrealized − own
        // gives L = entry + s·(room + own)/q, room = floor − balance − unrealized;
        // and s·own/q = mark − entry, so L = mark + s·room/q.
        let room = self.floor.map(|floor| floor - balance - unrealized);
        for ((v, p), leg) in positions.iter_mut().zip(&a.positions).zip(&self.legs) {
            v.liquidation_price = match room {
                Some(room) => {
                    let price = v.mark + signed(leg.long, room * leg.per_unit);
                    if price.is_sign_negative() {
                        Decimal::ZERO
                    } else {
                        price
                    }
                }
                None => p.position.entry_price,
            };
        }
        Evaluation {
            account: a.clone(),
            tier: self.bounds.tier(equity, metrics.margin_ratio),
            account_liquidation_price: self.largest.map(|i| positions[i].liquidation_price),
            metrics,
            positions,
        }
    }

    /// What the pre-trade checks need, at the marks `marks(i)` gives.
    pub fn view(
        &self,
        marks: impl Fn(usize) -> Option<Decimal>,
        symbol: &str,
        realized_today: Decimal,
    ) -> AccountView {
        let a = &self.account;
        let (each, unrealized) = self.unrealized(&marks);
        AccountView {
            status: a.status,
            balance: a.balance,
            maintenance_rate: a.maintenance_rate,
            realized_today,
            notional: self.notional,
            initial_margin: self.initial_margin,
            unrealized,
            here: a
                .positions
                .iter()
                .zip(each)
                .find(|(p, _)| &*p.symbol == symbol)
                .map(|(p, (mark, _))| Marked {
                    position: p.position.clone(),
                    mark,
                }),
            pending: Default::default(),
        }
    }
}

/// `x` for a long, `−x` for a short (negation, not a Decimal multiplication).
fn signed(long: bool, x: Decimal) -> Decimal {
    if long {
        x
    } else {
        -x
    }
}

/// Values `account` at the marks `mark_of` gives by symbol (see [`Prepared::value`]).
pub fn evaluate(account: &Account, mark_of: impl Fn(&str) -> Option<Decimal>) -> Evaluation {
    let prepared = Prepared::new(account.clone());
    prepared.value(|i| mark_of(&account.positions[i].symbol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{liquidation_price, metrics};
    use crate::risk::AccountState;
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
                // Within the factors' rounding (FACTOR_SF), relative to the entry and
                // to the value itself (a PnL % of −36 700 carries more digits).
                let scale = Decimal::ONE + marked[i].position.entry_price;
                let close = |x: Decimal, y: Decimal| (x - y).abs() <= d("0.000000001") * (scale + y.abs());
                prop_assert!(close(e.positions[i].liquidation_price, want), "{} vs {}", e.positions[i].liquidation_price, want);
                let pct = if marked[i].position.margin().is_zero() { Decimal::ZERO } else { e.positions[i].unrealized / marked[i].position.margin() * Decimal::ONE_HUNDRED };
                prop_assert!(close(e.positions[i].pnl_percent, pct), "{} vs {}", e.positions[i].pnl_percent, pct);
            }
            // The view the checks read has the same totals as the generic one.
            let state = AccountState {
                status: a.status,
                balance: a.balance,
                maintenance_rate: a.maintenance_rate,
                positions: positions.iter().zip(&marked).map(|(p, m)| (p.symbol.to_string(), m.clone())).collect(),
                realized_today: Decimal::ZERO,
            };
            let prepared = Prepared::new(a.clone());
            let view = prepared.view(|i| Some(marks[i]), "S0", Decimal::ZERO);
            prop_assert_eq!(view, AccountView::of(&state, "S0"));
        }
    }
}
