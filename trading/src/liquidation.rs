//! What the risk loop does to an account past its threshold (js-gateway §9.3,
//! trading-reference §6), decided from its valuation alone: nothing, a warning, an
//! ADL step (30 % of the largest position), closing everything, or moving everything
//! into the house. The engine carries a decision out through the executor; the
//! `risk value` command prints one.
//!
//! - Insolvent (equity ≤ 0 or margin ratio ≥ 1): a `TAKEOVER` account is taken over
//!   (`INSOLVENCY_TAKEOVER`), any other is liquidated (`INSOLVENCY_GUARD`).
//! - Otherwise by mode, at ratio ≥ T: `TAKEOVER` → take over (`VIRTUAL_LIQ`),
//!   `INSTANT_CLOSE` → liquidate (`INSTANT_CLOSE`), `ADL_30` → tier 2 below T + 0.05
//!   (reduce), tier 3 from there (reduce, then [`recheck`]: still ≥ T → liquidate,
//!   `ADL_30_ESCALATED`). From T − 0.10 every mode only warns.
//!
//! The JS documents speak of 30/50/100 % at 0.90/0.925/0.95; its code does the above,
//! and so do we (docs/trading.md, "deliberate differences").
//!
//! Every close is reduce-only: a decision never adds exposure. The largest position is
//! the largest by entry notional, ties broken by symbol then id, so the decision does
//! not depend on the order the book lists positions in.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::evaluate::{evaluate, Account, Evaluation, LiquidationMode, OpenPosition, Tier};
use crate::position::{OrderSide, Side};

/// The part of the largest position an ADL step closes.
pub const ADL_FRACTION: Decimal = Decimal::from_parts(3, 0, 0, false, 1);

/// The venue's quantity rules for a symbol: its step, and the smallest order notional
/// it takes. Zero means no rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lot {
    pub step: Decimal,
    pub min_notional: Decimal,
}

/// What is done to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Below the warning band.
    None,
    /// Tier 1: the owner is warned (`margin_warning`), nothing is closed.
    Warn,
    /// An ADL step: part of the largest position is closed on the venue. `escalate`
    /// (tier 3): once it is booked, the account is checked again ([`recheck`]).
    Reduce { escalate: bool },
    /// Every position is closed on the venue; the account ends `LIQUIDATED`.
    Liquidate,
    /// Every position moves into the house at its mark, no venue order; the account
    /// ends `TAKEN_OVER`.
    TakeOver,
}

/// Why: the `full_liquidation` event's `mode`, or the ADL tier's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    AdlTier2,
    AdlTier3,
    Adl30Escalated,
    InstantClose,
    VirtualLiquidation,
    InsolvencyGuard,
    InsolvencyTakeover,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::AdlTier2 => "ADL_TIER2",
            Reason::AdlTier3 => "ADL_TIER3",
            Reason::Adl30Escalated => "ADL_30_ESCALATED",
            Reason::InstantClose => "INSTANT_CLOSE",
            Reason::VirtualLiquidation => "VIRTUAL_LIQ",
            Reason::InsolvencyGuard => "INSOLVENCY_GUARD",
            Reason::InsolvencyTakeover => "INSOLVENCY_TAKEOVER",
        }
    }
}

/// One position closed (or taken over), wholly or in part, at its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub position_id: Arc<str>,
    pub symbol: Arc<str>,
    /// The position's side; the order closing it is [`Close::order_side`].
    pub side: Side,
    pub quantity: Decimal,
    /// The whole position (its remainder would be under the venue's minimum, or the
    /// decision closes everything).
    pub whole: bool,
    pub mark: Decimal,
}

impl Close {
    pub const fn order_side(&self) -> OrderSide {
        match self.side {
            Side::Long => OrderSide::Sell,
            Side::Short => OrderSide::Buy,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub tier: Tier,
    pub action: Action,
    pub reason: Option<Reason>,
    /// The account's margin ratio as valued.
    pub margin_ratio: Decimal,
    pub closes: Vec<Close>,
    /// The margin ratio once `closes` are booked at their marks (fees aside): the book
    /// recomputed, not an estimate.
    pub ratio_after: Decimal,
}

/// Decides for `account` at the marks `mark_of` gives (a position without a mark is
/// valued at its entry price); `lot_of` gives each symbol's quantity rules.
pub fn decide(
    account: &Account,
    mark_of: impl Fn(&str) -> Option<Decimal>,
    lot_of: impl Fn(&str) -> Lot,
) -> Decision {
    let valued = evaluate(account, &mark_of);
    let (action, reason) = match (valued.tier, account.liquidation_mode) {
        (Tier::Normal, _) => (Action::None, None),
        (Tier::Warning, _) => (Action::Warn, None),
        (Tier::Insolvent, LiquidationMode::Takeover) => {
            (Action::TakeOver, Some(Reason::InsolvencyTakeover))
        }
        (Tier::Insolvent, LiquidationMode::Adl30 | LiquidationMode::InstantClose) => {
            (Action::Liquidate, Some(Reason::InsolvencyGuard))
        }
        (Tier::Adl2 | Tier::Adl3, LiquidationMode::Takeover) => {
            (Action::TakeOver, Some(Reason::VirtualLiquidation))
        }
        (Tier::Adl2 | Tier::Adl3, LiquidationMode::InstantClose) => {
            (Action::Liquidate, Some(Reason::InstantClose))
        }
        (Tier::Adl2, LiquidationMode::Adl30) => {
            (Action::Reduce { escalate: false }, Some(Reason::AdlTier2))
        }
        (Tier::Adl3, LiquidationMode::Adl30) => {
            (Action::Reduce { escalate: true }, Some(Reason::AdlTier3))
        }
    };
    let closes = match action {
        Action::None | Action::Warn => Vec::new(),
        Action::Reduce { .. } => largest(account)
            .map(|i| reduce(&account.positions[i], &valued, i, lot_of))
            .into_iter()
            .collect(),
        Action::Liquidate | Action::TakeOver => everything(account, &valued),
    };
    finish(account, &mark_of, valued, action, reason, closes)
}

/// After a tier-3 step is booked: `account` as it now stands, at fresh marks. Still at
/// or past T (or insolvent) → everything is closed (`ADL_30_ESCALATED`, or the
/// insolvency guard); below T → a warning at most, never a second step.
pub fn recheck(
    account: &Account,
    mark_of: impl Fn(&str) -> Option<Decimal>,
    lot_of: impl Fn(&str) -> Lot,
) -> Decision {
    let d = decide(account, &mark_of, lot_of);
    match d.action {
        Action::None | Action::Warn | Action::Liquidate | Action::TakeOver => d,
        Action::Reduce { .. } => {
            let valued = evaluate(account, &mark_of);
            let closes = everything(account, &valued);
            finish(
                account,
                &mark_of,
                valued,
                Action::Liquidate,
                Some(Reason::Adl30Escalated),
                closes,
            )
        }
    }
}

/// An account already marked `LIQUIDATED` that still holds positions (a liquidation
/// stopped half-way): everything left goes, taken over for a `TAKEOVER` account and
/// closed for any other, whatever its ratio now.
pub fn resume(account: &Account, mark_of: impl Fn(&str) -> Option<Decimal>) -> Decision {
    let valued = evaluate(account, &mark_of);
    let closes = everything(account, &valued);
    let action = match account.liquidation_mode {
        LiquidationMode::Takeover => Action::TakeOver,
        LiquidationMode::Adl30 | LiquidationMode::InstantClose => Action::Liquidate,
    };
    let action = if closes.is_empty() {
        Action::None
    } else {
        action
    };
    finish(account, &mark_of, valued, action, None, closes)
}

fn finish(
    account: &Account,
    mark_of: &impl Fn(&str) -> Option<Decimal>,
    valued: Evaluation,
    action: Action,
    reason: Option<Reason>,
    closes: Vec<Close>,
) -> Decision {
    let ratio_after = if closes.is_empty() {
        valued.metrics.margin_ratio
    } else {
        evaluate(&after(account, &closes), mark_of)
            .metrics
            .margin_ratio
    };
    Decision {
        tier: valued.tier,
        action,
        reason,
        margin_ratio: valued.metrics.margin_ratio,
        closes,
        ratio_after,
    }
}

/// The index of the largest position by entry notional; ties by symbol, then id.
fn largest(account: &Account) -> Option<usize> {
    (0..account.positions.len()).max_by(|&a, &b| {
        let (p, q) = (&account.positions[a], &account.positions[b]);
        p.position
            .notional()
            .cmp(&q.position.notional())
            .then_with(|| q.symbol.cmp(&p.symbol))
            .then_with(|| q.id.cmp(&p.id))
    })
}

/// The ADL part of position `i`: [`ADL_FRACTION`] of it, rounded down to the step.
/// A part that rounds to nothing, or one that would leave less than a step or less
/// than the minimum notional at the mark, closes the position whole.
fn reduce(p: &OpenPosition, valued: &Evaluation, i: usize, lot_of: impl Fn(&str) -> Lot) -> Close {
    let mark = valued.positions[i].mark;
    let lot = lot_of(&p.symbol);
    let total = p.position.quantity;
    let part = step_down(total * ADL_FRACTION, lot.step);
    let rest = total - part;
    let whole = part <= Decimal::ZERO
        || rest <= Decimal::ZERO
        || rest < lot.step
        || rest * mark < lot.min_notional;
    Close {
        position_id: p.id.clone(),
        symbol: p.symbol.clone(),
        side: p.position.side,
        quantity: if whole { total } else { part },
        whole,
        mark,
    }
}

fn step_down(q: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO {
        return q;
    }
    (q / step).floor() * step
}

/// Every position, whole, in a fixed order (largest first, as `largest` ranks).
fn everything(account: &Account, valued: &Evaluation) -> Vec<Close> {
    let mut order: Vec<usize> = (0..account.positions.len()).collect();
    order.sort_by(|&a, &b| {
        let (p, q) = (&account.positions[a], &account.positions[b]);
        q.position
            .notional()
            .cmp(&p.position.notional())
            .then_with(|| p.symbol.cmp(&q.symbol))
            .then_with(|| p.id.cmp(&q.id))
    });
    order
        .into_iter()
        .map(|i| {
            let p = &account.positions[i];
            Close {
                position_id: p.id.clone(),
                symbol: p.symbol.clone(),
                side: p.position.side,
                quantity: p.position.quantity,
                whole: true,
                mark: valued.positions[i].mark,
            }
        })
        .collect()
}

/// The account once `closes` are booked at their marks: each position reduced or
/// gone, and its realized PnL in the balance (floored at zero, as every balance
/// change is). Fees are left out: the venue's fee is not known before the fill.
pub fn after(account: &Account, closes: &[Close]) -> Account {
    let mut next = account.clone();
    for c in closes {
        let Some(k) = next.positions.iter().position(|p| p.id == c.position_id) else {
            continue;
        };
        let p = &mut next.positions[k];
        let q = c.quantity.min(p.position.quantity);
        let realized = (c.mark - p.position.entry_price) * q * p.position.side.sign();
        next.balance = (next.balance + realized).max(Decimal::ZERO);
        if q >= p.position.quantity {
            next.positions.remove(k);
        } else {
            p.position.quantity -= q;
        }
    }
    next
}

/// A sub-account's position on the side the venue itself closed (its liquidation or
/// ADL of the shared account), with what the venue ranks it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub position_id: Arc<str>,
    pub quantity: Decimal,
    pub pnl_percent: Decimal,
    pub margin_ratio: Decimal,
}

/// The venue closed `quantity` of the shared account's position on one side: the
/// sub-accounts' positions on that side take it by the venue's own ranking (PnL % ×
/// margin ratio, highest first; ties by id), each up to what it holds. The shares, and
/// what is left over for the house.
pub fn share_venue_close(
    holders: &[Holder],
    quantity: Decimal,
) -> (Vec<(Arc<str>, Decimal)>, Decimal) {
    let mut ranked: Vec<&Holder> = holders
        .iter()
        .filter(|h| h.quantity > Decimal::ZERO)
        .collect();
    ranked.sort_by(|a, b| {
        (b.pnl_percent * b.margin_ratio)
            .cmp(&(a.pnl_percent * a.margin_ratio))
            .then_with(|| a.position_id.cmp(&b.position_id))
    });
    let mut left = quantity.max(Decimal::ZERO);
    let mut shares = Vec::new();
    for h in ranked {
        if left.is_zero() {
            break;
        }
        let q = h.quantity.min(left);
        shares.push((h.position_id.clone(), q));
        left -= q;
    }
    (shares, left)
}

/// The order origin of a forced close (`orders.origin`): what its fills are booked as.
pub const fn origin(reason: Reason) -> &'static str {
    match reason {
        Reason::AdlTier2 => "ADL_TIER2",
        Reason::AdlTier3 => "ADL_TIER3",
        Reason::Adl30Escalated
        | Reason::InstantClose
        | Reason::VirtualLiquidation
        | Reason::InsolvencyGuard
        | Reason::InsolvencyTakeover => "LIQUIDATION",
    }
}

/// What a fill of an order from `origin` that closes or reduces a position is booked
/// as (`trade_executions.action`, the reason of `position_closed`/`position_reduced`):
/// `LIQUIDATE` for a liquidation's, the tier for an ADL step's, `CLOSE` otherwise.
pub fn close_action(origin: &str) -> &'static str {
    match origin {
        "LIQUIDATION" => "LIQUIDATE",
        "ADL_TIER2" => "ADL_TIER2",
        "ADL_TIER3" => "ADL_TIER3",
        _ => "CLOSE",
    }
}

/// The balance reason of what a close booked as `close_action` realizes.
pub fn realized_reason(close_action: &str) -> crate::balance::Reason {
    match close_action {
        "LIQUIDATE" => crate::balance::Reason::Liquidation,
        "ADL_TIER2" | "ADL_TIER3" => crate::balance::Reason::Adl,
        _ => crate::balance::Reason::TradePnl,
    }
}

#[cfg(test)]
mod tests;
