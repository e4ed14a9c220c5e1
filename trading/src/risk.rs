//! Pre-trade validation for every order-placing request (market, limit, each leg of a
//! scale or basket, every algo's child order). The first failing check refuses the
//! order with the JS system's code and the numbers that failed; an order that passes
//! every check becomes an [`Approved`], which only [`check`] can build, so nothing can
//! reach the venue unchecked.
//!
//! Checks, in order: for an order that opens anything, account status; leverage cap;
//! notional per trade; total exposure; exposure per symbol; available margin; margin
//! usage below 98 %; daily loss; then for every order the venue filters (tick, step,
//! minimum notional, percent-price band). Orders that only reduce (reduce-only, or
//! opening nothing) pass every opening gate — status and leverage cap included: they
//! can only shrink risk, and refusing them could keep an account from getting out of
//! trouble (an admin force-closes a frozen or liquidated account; a cap lowered under
//! a position does not lock it in).
//!
//! Deliberate differences from the JS validator (js-gateway §9.2): exposure after the
//! order is the account's real exposure after the fill (the JS subtracted the whole
//! opposite position and added the whole order, overstating a partial reduction);
//! only the part of the order that opens a position needs initial margin; and the
//! opposite position's PnL is counted once (§0 #25).

use rust_decimal::Decimal;

use crate::account::{metrics, Marked};
use crate::position::OrderSide;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Frozen,
    Liquidated,
}

impl AccountStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "ACTIVE",
            AccountStatus::Frozen => "FROZEN",
            AccountStatus::Liquidated => "LIQUIDATED",
        }
    }
}

/// A sub-account's risk rules (its own row, else the global one, else these defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskRules {
    pub max_leverage: Decimal,
    pub max_notional_per_trade: Decimal,
    pub max_total_exposure: Decimal,
    pub max_symbol_exposure: Option<Decimal>,
    pub max_daily_loss: Option<Decimal>,
    pub liquidation_threshold: Decimal,
}

impl Default for RiskRules {
    /// The JS defaults (js-gateway §9.4).
    fn default() -> Self {
        Self {
            max_leverage: Decimal::ONE_HUNDRED,
            max_notional_per_trade: Decimal::from(200),
            max_total_exposure: Decimal::from(500),
            max_symbol_exposure: None,
            max_daily_loss: None,
            liquidation_threshold: Decimal::new(90, 2),
        }
    }
}

/// The venue's filters for the symbol, and its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueFilters {
    pub tick: Decimal,
    pub step: Decimal,
    pub min_notional: Decimal,
    /// PERCENT_PRICE: a BUY at most mark × up, a SELL at least mark × down.
    pub up: Decimal,
    pub down: Decimal,
}

/// What the check reads of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub status: AccountStatus,
    pub balance: Decimal,
    pub maintenance_rate: Decimal,
    /// Open positions by symbol, each at its mark.
    pub positions: Vec<(String, Marked)>,
    /// PnL realized since the day began (UTC).
    pub realized_today: Decimal,
}

/// What the checks need of an account: its totals, and its position in the order's
/// symbol. Built in O(n) from an [`AccountState`] ([`AccountView::of`]), or kept up to
/// date by the engine's book ([`crate::evaluate::Prepared::view`]), after which a
/// check costs the same whatever the number of positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub status: AccountStatus,
    pub balance: Decimal,
    pub maintenance_rate: Decimal,
    pub realized_today: Decimal,
    /// Σ entry notional.
    pub notional: Decimal,
    /// Σ initial margin.
    pub initial_margin: Decimal,
    /// Σ unrealized PnL at the marks.
    pub unrealized: Decimal,
    /// The open position in the order's symbol, at its mark.
    pub here: Option<Marked>,
    /// The account's orders that are resting or in flight and can still open.
    pub pending: Pending,
}

/// One of an account's orders not yet final that can open a position (not
/// reduce-only): what of it may still fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOrder {
    pub symbol: String,
    pub side: OrderSide,
    /// Quantity not yet filled.
    pub remaining: Decimal,
    /// Its limit price; `None` for a market order (valued at the mark).
    pub price: Option<Decimal>,
    pub leverage: Decimal,
}

/// What an account's pending orders add if they fill: counted toward exposure and
/// margin as the venue counts open orders' initial margin, so orders resting one by
/// one within the limits cannot add up past them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Σ notional of every pending order.
    pub notional: Decimal,
    /// Σ initial margin of every pending order.
    pub margin: Decimal,
    /// Σ notional of those in the checked order's symbol.
    pub here: Decimal,
}

impl Pending {
    /// What `orders` add if they fill, per symbol the worse of all the buys filling
    /// and all the sells filling, beyond the position held there (`held(symbol)`,
    /// signed): an order that would only reduce adds nothing. Valued at each order's
    /// limit, or at `mark(symbol)` for a market order (one without a mark is valued at
    /// nothing: it is about to fill and be booked).
    pub fn of(
        orders: &[PendingOrder],
        symbol: &str,
        held: impl Fn(&str) -> Decimal,
        mark: impl Fn(&str) -> Option<Decimal>,
    ) -> Self {
        // Per symbol: Σ buys, Σ sells (quantity and notional), the leverage-weighted margin.
        #[derive(Default)]
        struct Side {
            q: Decimal,
            notional: Decimal,
            margin: Decimal,
        }
        let mut by: std::collections::BTreeMap<&str, (Side, Side)> = Default::default();
        for o in orders {
            let Some(price) = o.price.or_else(|| mark(&o.symbol)) else {
                continue;
            };
            let e = by.entry(o.symbol.as_str()).or_default();
            let s = match o.side {
                OrderSide::Buy => &mut e.0,
                OrderSide::Sell => &mut e.1,
            };
            let notional = o.remaining * price;
            s.q += o.remaining;
            s.notional += notional;
            if o.leverage > Decimal::ZERO {
                s.margin += notional / o.leverage;
            }
        }
        let mut p = Pending::default();
        for (s, (buys, sells)) in by {
            let at = held(s);
            // The part of each side past what it would close of the position.
            let opening = |side: &Side, closable: Decimal| {
                if side.q.is_zero() {
                    return (Decimal::ZERO, Decimal::ZERO);
                }
                let opens = (side.q - closable.max(Decimal::ZERO)).max(Decimal::ZERO);
                (side.notional * opens / side.q, side.margin * opens / side.q)
            };
            let (bn, bm) = opening(&buys, -at);
            let (sn, sm) = opening(&sells, at);
            let (notional, margin) = if bn >= sn { (bn, bm) } else { (sn, sm) };
            p.notional += notional;
            p.margin += margin;
            if s == symbol {
                p.here += notional;
            }
        }
        p
    }
}

impl AccountView {
    pub fn of(account: &AccountState, symbol: &str) -> Self {
        let m = metrics(
            account.balance,
            account.maintenance_rate,
            &account
                .positions
                .iter()
                .map(|(_, p)| p.clone())
                .collect::<Vec<_>>(),
        );
        Self {
            status: account.status,
            balance: account.balance,
            maintenance_rate: account.maintenance_rate,
            realized_today: account.realized_today,
            notional: m.notional,
            initial_margin: m.initial_margin,
            unrealized: m.unrealized,
            here: account
                .positions
                .iter()
                .find(|(s, _)| s == symbol)
                .map(|(_, m)| m.clone()),
            pending: Pending::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub symbol: String,
    pub side: OrderSide,
    pub quantity: Decimal,
    /// The limit price; `None` for a market order.
    pub limit: Option<Decimal>,
    pub leverage: Decimal,
    pub reduce_only: bool,
}

/// A refused order: the JS code, and the numbers that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Sub-account is {0}")]
    AccountFrozen(&'static str),
    #[error("Leverage {leverage}x exceeds max {max}x")]
    MaxLeverage { leverage: Decimal, max: Decimal },
    #[error("Notional ${notional} exceeds max ${max}")]
    MaxNotional { notional: Decimal, max: Decimal },
    #[error("Total exposure ${exposure} would exceed max ${max}")]
    MaxExposure { exposure: Decimal, max: Decimal },
    #[error("Exposure in {symbol} ${exposure} would exceed max ${max}")]
    MaxSymbolExposure {
        symbol: String,
        exposure: Decimal,
        max: Decimal,
    },
    #[error("Insufficient margin: need ${need}, available ${available}")]
    InsufficientMargin { need: Decimal, available: Decimal },
    #[error("Post-trade margin ratio {usage}% would breach liquidation threshold 98%. Reduce size or leverage.")]
    MarginRatio { usage: Decimal },
    #[error("Daily loss ${loss} has reached the max ${max}")]
    DailyLoss { loss: Decimal, max: Decimal },
    #[error("Price {price} is not a multiple of the tick {tick}")]
    Tick { price: Decimal, tick: Decimal },
    #[error("Quantity {quantity} is not a multiple of the step {step}")]
    Step { quantity: Decimal, step: Decimal },
    #[error("Notional ${notional} is below the minimum ${min}")]
    MinNotional { notional: Decimal, min: Decimal },
    #[error("Price {price} is outside the band {low} to {high}")]
    PriceBand {
        price: Decimal,
        low: Decimal,
        high: Decimal,
    },
    #[error("Invalid order: {0}")]
    Invalid(&'static str),
}

impl Refusal {
    /// The stable code (the JS system's where it has one).
    pub const fn code(&self) -> &'static str {
        match self {
            Refusal::AccountFrozen(_) => "ACCOUNT_FROZEN",
            Refusal::MaxLeverage { .. } => "MAX_LEVERAGE_EXCEEDED",
            Refusal::MaxNotional { .. } => "MAX_NOTIONAL_EXCEEDED",
            Refusal::MaxExposure { .. } => "MAX_EXPOSURE_EXCEEDED",
            Refusal::MaxSymbolExposure { .. } => "MAX_SYMBOL_EXPOSURE_EXCEEDED",
            Refusal::InsufficientMargin { .. } => "INSUFFICIENT_MARGIN",
            Refusal::MarginRatio { .. } => "MARGIN_RATIO_EXCEEDED",
            Refusal::DailyLoss { .. } => "MAX_DAILY_LOSS_EXCEEDED",
            Refusal::Tick { .. } => "EXCHANGE_PRECISION",
            Refusal::Step { .. } => "EXCHANGE_PRECISION",
            Refusal::MinNotional { .. } => "EXCHANGE_MIN_NOTIONAL",
            Refusal::PriceBand { .. } => "EXCHANGE_PRICE_BAND",
            Refusal::Invalid(_) => "INVALID_ORDER",
        }
    }
}

/// The numbers behind an approval, for the result and the what-if tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbers {
    pub price: Decimal,
    pub notional: Decimal,
    /// Initial margin for the part of the order that opens a position.
    pub required_margin: Decimal,
    pub equity: Decimal,
    pub available: Decimal,
    /// Maintenance margin of the positions held now.
    pub maintenance: Decimal,
    /// Exposure now: positions at entry, pending orders at their price.
    pub exposure_before: Decimal,
    pub exposure_after: Decimal,
    pub usage_after: Decimal,
}

/// An order that passed every check. Only [`check`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    request: OrderRequest,
    numbers: Numbers,
}

impl Approved {
    pub fn request(&self) -> &OrderRequest {
        &self.request
    }

    pub fn numbers(&self) -> &Numbers {
        &self.numbers
    }
}

struct Totals {
    equity: Decimal,
    notional: Decimal,
    initial_margin: Decimal,
    unrealized: Decimal,
}

/// Usage at or above this refuses the order.
pub const MAX_USAGE: Decimal = Decimal::from_parts(98, 0, 0, false, 2);

fn multiple(x: Decimal, of: Decimal) -> bool {
    of <= Decimal::ZERO || (x / of).fract().is_zero()
}

/// `view` as if the approved `req` had filled at `price` (the symbol marked at
/// `mark`): how the legs of a scale or a basket are checked — each against the account
/// with the legs before it in place, so that legs within the limits one by one cannot
/// add up past them.
pub fn assume_filled(view: &mut AccountView, req: &OrderRequest, price: Decimal, mark: Decimal) {
    let before = view.here.as_ref().map(|m| m.position.clone());
    let fill = crate::position::Fill {
        side: req.side,
        quantity: req.quantity,
        price,
        leverage: req.leverage,
    };
    let Ok(o) = crate::position::apply_fill(before.as_ref(), &fill) else {
        return;
    };
    let sum = |p: Option<&crate::position::Position>,
               f: fn(&crate::position::Position) -> Decimal| {
        p.map_or(Decimal::ZERO, f)
    };
    view.notional +=
        sum(o.after.as_ref(), |p| p.notional()) - sum(before.as_ref(), |p| p.notional());
    view.initial_margin +=
        sum(o.after.as_ref(), |p| p.margin()) - sum(before.as_ref(), |p| p.margin());
    let upnl =
        |p: Option<&crate::position::Position>| p.map_or(Decimal::ZERO, |p| p.unrealized(mark));
    view.unrealized += upnl(o.after.as_ref()) - upnl(before.as_ref());
    view.balance += o.realized;
    view.here = o.after.map(|position| Marked { position, mark });
}

/// Checks `req` against the account at `mark`. See the module documentation.
pub fn check(
    account: &AccountState,
    rules: &RiskRules,
    filters: &VenueFilters,
    mark: Decimal,
    req: OrderRequest,
) -> Result<Approved, Refusal> {
    let view = AccountView::of(account, &req.symbol);
    check_view(&view, rules, filters, mark, req)
}

/// [`check`] on an account's view.
pub fn check_view(
    account: &AccountView,
    rules: &RiskRules,
    filters: &VenueFilters,
    mark: Decimal,
    req: OrderRequest,
) -> Result<Approved, Refusal> {
    explain(account, rules, filters, mark, req).1
}

/// [`check_view`] with the numbers it judged by, on a refusal too (`None` only when
/// the order is refused before there are any: a non-positive quantity or price, a
/// leverage under 1, a reduce-only order that would open): "why was this refused?"
/// needs them most then.
pub fn explain(
    account: &AccountView,
    rules: &RiskRules,
    filters: &VenueFilters,
    mark: Decimal,
    req: OrderRequest,
) -> (Option<Numbers>, Result<Approved, Refusal>) {
    if req.quantity <= Decimal::ZERO {
        return (None, Err(Refusal::Invalid("quantity must be positive")));
    }
    if mark <= Decimal::ZERO || req.limit.is_some_and(|p| p <= Decimal::ZERO) {
        return (None, Err(Refusal::Invalid("price must be positive")));
    }
    if req.leverage < Decimal::ONE {
        return (
            None,
            Err(Refusal::MaxLeverage {
                leverage: req.leverage,
                max: rules.max_leverage,
            }),
        );
    }
    let price = req.limit.unwrap_or(mark);
    let notional = req.quantity * price;
    // The symbol's position now (at most one), and what the order leaves of it.
    let here = account.here.as_ref();
    let opens = req.side.opens();
    let (closing, opening) = match here {
        Some(m) if m.position.side != opens => {
            let closing = req.quantity.min(m.position.quantity);
            (closing, req.quantity - closing)
        }
        _ => (Decimal::ZERO, req.quantity),
    };
    if req.reduce_only && (closing.is_zero() || !opening.is_zero()) {
        return (
            None,
            Err(Refusal::Invalid("reduce-only order would not only reduce")),
        );
    }
    let m = Totals {
        equity: account.balance + account.unrealized,
        notional: account.notional,
        initial_margin: account.initial_margin,
        unrealized: account.unrealized,
    };
    let pending = &account.pending;
    let symbol_after = pending.here
        + match here {
            Some(h) if h.position.side == opens => h.position.notional() + notional,
            Some(h) => (h.position.quantity - closing) * h.position.entry_price + opening * price,
            None => notional,
        };
    let exposure_after = m.notional + pending.notional
        - pending.here
        - here.map_or(Decimal::ZERO, |h| h.position.notional())
        + symbol_after;
    let required_margin = opening * price / req.leverage;
    let kept_margin = m.initial_margin + pending.margin
        - here.map_or(Decimal::ZERO, |h| {
            h.position.margin() * closing / h.position.quantity
        });
    let usage_after = if m.equity <= Decimal::ZERO {
        crate::account::NO_EQUITY
    } else {
        (kept_margin + required_margin) / m.equity
    };
    let available = m.equity
        - pending.margin
        - (m.notional - here.map_or(Decimal::ZERO, |h| h.position.entry_price * closing))
            * account.maintenance_rate;
    let numbers = Numbers {
        price,
        notional,
        required_margin,
        equity: m.equity,
        available,
        maintenance: m.notional * account.maintenance_rate,
        exposure_before: m.notional + pending.notional,
        exposure_after,
        usage_after,
    };
    let verdict = (|| {
        // The gates on opening: an order that only reduces passes them all, so a
        // frozen or liquidated account, or one whose leverage cap was lowered under its
        // positions, can still be closed.
        if !opening.is_zero() {
            if account.status != AccountStatus::Active {
                return Err(Refusal::AccountFrozen(account.status.as_str()));
            }
            if req.leverage > rules.max_leverage {
                return Err(Refusal::MaxLeverage {
                    leverage: req.leverage,
                    max: rules.max_leverage,
                });
            }
            // The per-trade cap counts what the order opens (a flip's closing part only
            // takes risk off).
            let opening_notional = opening * price;
            if opening_notional > rules.max_notional_per_trade {
                return Err(Refusal::MaxNotional {
                    notional: opening_notional,
                    max: rules.max_notional_per_trade,
                });
            }
            if exposure_after > rules.max_total_exposure {
                return Err(Refusal::MaxExposure {
                    exposure: exposure_after,
                    max: rules.max_total_exposure,
                });
            }
            if let Some(max) = rules.max_symbol_exposure {
                if symbol_after > max {
                    return Err(Refusal::MaxSymbolExposure {
                        symbol: req.symbol.clone(),
                        exposure: symbol_after,
                        max,
                    });
                }
            }
            if required_margin > available {
                return Err(Refusal::InsufficientMargin {
                    need: required_margin.round_dp(2),
                    available: available.round_dp(2),
                });
            }
            if usage_after >= MAX_USAGE {
                return Err(Refusal::MarginRatio {
                    usage: (usage_after * Decimal::ONE_HUNDRED).round_dp(2),
                });
            }
            if let Some(max) = rules.max_daily_loss {
                let loss = -(account.realized_today + m.unrealized);
                if loss >= max {
                    return Err(Refusal::DailyLoss { loss, max });
                }
            }
        }
        if let Some(p) = req.limit {
            if !multiple(p, filters.tick) {
                return Err(Refusal::Tick {
                    price: p,
                    tick: filters.tick,
                });
            }
            let (low, high) = (mark * filters.down, mark * filters.up);
            let outside = match req.side {
                OrderSide::Buy => p > high,
                OrderSide::Sell => p < low,
            };
            if outside {
                return Err(Refusal::PriceBand {
                    price: p,
                    low,
                    high,
                });
            }
        }
        if !multiple(req.quantity, filters.step) {
            return Err(Refusal::Step {
                quantity: req.quantity,
                step: filters.step,
            });
        }
        if !req.reduce_only && notional < filters.min_notional {
            return Err(Refusal::MinNotional {
                notional,
                min: filters.min_notional,
            });
        }
        Ok(())
    })();
    match verdict {
        Ok(()) => (
            Some(numbers.clone()),
            Ok(Approved {
                request: req,
                numbers,
            }),
        ),
        Err(r) => (Some(numbers), Err(r)),
    }
}

#[cfg(test)]
mod tests;
