//! `greekstream risk value`: one account valued offline with the risk loop's own code
//! — JSON in (balance, positions, marks, rules, mode, the venue's lots), one JSON
//! object out: the margin numbers, each position's PnL and liquidation prices, the
//! tier, and the decision ([`crate::liquidation`]) with what it would close and the
//! ratio after. Pure: the binary reads the input and prints.
//!
//! Input (decimals as strings or numbers):
//! `{"balance", "maintenanceRate"?, "liquidationMode"?, "status"?,
//!   "rules": {"liquidationThreshold"?}?,
//!   "positions": [{"id"?, "symbol", "side": "LONG|SHORT", "quantity", "entryPrice", "leverage"}],
//!   "marks": {"BTCUSDT": "…"}?, "lots": {"BTCUSDT": {"step", "minNotional"}}?}`
//! A position without a mark is valued at its entry price.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::account::{liquidation_price, Marked};
use crate::evaluate::{evaluate, Account, Evaluation, LiquidationMode, OpenPosition, Tier};
use crate::input::{choice, decimal, field, parse, required, text, InputError};
use crate::liquidation::{decide, recheck, Action, Close, Decision, Lot};
use crate::position::{Position, Side};
use crate::risk::{AccountStatus, RiskRules};

/// Values the account given as JSON; the result as one JSON object.
pub fn run(input: &str) -> Result<Value, InputError> {
    let v = parse("the input", input)?;
    let (account, marks, lots) = read(&v)?;
    let mark_of = |s: &str| marks.get(s).copied();
    let lot_of = |s: &str| lots.get(s).copied().unwrap_or_default();
    let valued = evaluate(&account, mark_of);
    let decision = decide(&account, mark_of, lot_of);
    let mut out = valuation_json(&valued);
    out["positions"] = Value::Array(positions_json(&account, &valued));
    out["decision"] = decision_json(&decision);
    // A tier-3 step is followed by a second look at the book it leaves: at these
    // marks, what that look would do.
    if let Action::Reduce { escalate: true } = decision.action {
        let next = recheck(
            &crate::liquidation::after(&account, &decision.closes),
            mark_of,
            lot_of,
        );
        out["decision"]["then"] = decision_json(&next);
    }
    Ok(out)
}

/// The account's numbers as the risk loop publishes them (`margin_update`'s names).
pub fn valuation_json(e: &Evaluation) -> Value {
    let m = &e.metrics;
    json!({
        "balance": m.balance.to_string(),
        "unrealizedPnl": m.unrealized.to_string(),
        "equity": m.equity.to_string(),
        "marginUsed": m.initial_margin.to_string(),
        "totalExposure": m.notional.to_string(),
        "maintenanceMargin": m.maintenance.to_string(),
        "availableMargin": m.available.to_string(),
        "marginRatio": m.margin_ratio.normalize().to_string(),
        "marginUsage": m.margin_usage().normalize().to_string(),
        "accountLiqPrice": e.account_liquidation_price.map(|p| p.normalize().to_string()),
        "tier": tier_name(e.tier),
    })
}

pub const fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Normal => "NORMAL",
        Tier::Warning => "WARNING",
        Tier::Adl2 => "ADL_TIER2",
        Tier::Adl3 => "ADL_TIER3",
        Tier::Insolvent => "INSOLVENT",
    }
}

fn positions_json(account: &Account, valued: &Evaluation) -> Vec<Value> {
    account
        .positions
        .iter()
        .zip(&valued.positions)
        .map(|(p, v)| {
            // At open: the position alone at its entry (js-gateway §9.3, "static").
            let alone = [Marked {
                position: p.position.clone(),
                mark: p.position.entry_price,
            }];
            let at_open = liquidation_price(
                account.balance,
                account.maintenance_rate,
                account.threshold,
                &alone,
                0,
            );
            json!({
                "id": &*p.id,
                "symbol": &*p.symbol,
                "side": p.position.side.as_str(),
                "quantity": p.position.quantity.to_string(),
                "entryPrice": p.position.entry_price.to_string(),
                "mark": v.mark.to_string(),
                "notional": p.position.notional().to_string(),
                "margin": p.position.margin().to_string(),
                "unrealizedPnl": v.unrealized.to_string(),
                "pnlPercent": v.pnl_percent.normalize().to_string(),
                "liquidationPriceAtOpen": at_open.map(|x| x.normalize().to_string()),
                "liquidationPrice": v.liquidation_price.normalize().to_string(),
            })
        })
        .collect()
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::None => "NONE",
        Action::Warn => "WARN",
        Action::Reduce { escalate: false } => "ADL",
        Action::Reduce { escalate: true } => "ADL_THEN_RECHECK",
        Action::Liquidate => "LIQUIDATE",
        Action::TakeOver => "TAKEOVER",
    }
}

fn close_json(c: &Close) -> Value {
    json!({
        "positionId": &*c.position_id,
        "symbol": &*c.symbol,
        "side": c.side.as_str(),
        "orderSide": match c.order_side() {
            crate::position::OrderSide::Buy => "BUY",
            crate::position::OrderSide::Sell => "SELL",
        },
        "quantity": c.quantity.to_string(),
        "whole": c.whole,
        "mark": c.mark.to_string(),
    })
}

pub fn decision_json(d: &Decision) -> Value {
    json!({
        "action": action_name(d.action),
        "reason": d.reason.map(|r| r.as_str()),
        "marginRatio": d.margin_ratio.normalize().to_string(),
        "closes": d.closes.iter().map(close_json).collect::<Vec<_>>(),
        "ratioAfter": d.ratio_after.normalize().to_string(),
    })
}

type Read = (Account, HashMap<String, Decimal>, HashMap<String, Lot>);

fn read(v: &Value) -> Result<Read, InputError> {
    let rules = RiskRules::default();
    let threshold = match v.get("rules") {
        None | Some(Value::Null) => rules.liquidation_threshold,
        Some(r) => {
            field(r, "rules", "liquidationThreshold")?.unwrap_or(rules.liquidation_threshold)
        }
    };
    if threshold <= Decimal::ZERO {
        return Err(InputError::Number(
            "rules.liquidationThreshold".into(),
            format!("{threshold} (must be positive)"),
        ));
    }
    let mode = match v.get("liquidationMode").and_then(Value::as_str) {
        None => LiquidationMode::Adl30,
        Some(m) => LiquidationMode::parse(m).ok_or_else(|| {
            InputError::Choice("liquidationMode".into(), "ADL_30, INSTANT_CLOSE, TAKEOVER")
        })?,
    };
    let status = match v.get("status").and_then(Value::as_str) {
        None => AccountStatus::Active,
        Some(s) => choice(
            "status",
            s,
            &[
                ("ACTIVE", AccountStatus::Active),
                ("FROZEN", AccountStatus::Frozen),
                ("LIQUIDATED", AccountStatus::Liquidated),
            ],
            "ACTIVE, FROZEN, LIQUIDATED",
        )?,
    };
    let Some(items) = v.get("positions").map(Value::as_array) else {
        return Err(InputError::Missing("positions".into()));
    };
    let Some(items) = items else {
        return Err(InputError::Choice("positions".into(), "a JSON array"));
    };
    let mut positions = Vec::with_capacity(items.len());
    for (i, p) in items.iter().enumerate() {
        let what = format!("positions[{i}]");
        let side = choice(
            &format!("{what}.side"),
            text(p, &what, "side")?,
            &[("LONG", Side::Long), ("SHORT", Side::Short)],
            "LONG, SHORT",
        )?;
        let position = Position {
            side,
            quantity: positive(p, &what, "quantity")?,
            entry_price: positive(p, &what, "entryPrice")?,
            leverage: positive(p, &what, "leverage")?,
        };
        let symbol = text(p, &what, "symbol")?;
        let id = p
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{symbol}-{i}"), str::to_owned);
        positions.push(OpenPosition {
            id: id.into(),
            symbol: symbol.into(),
            position,
            babysitter_excluded: false,
            opened_at: 0,
        });
    }
    let account = Account {
        id: "offline".into(),
        status,
        liquidation_mode: mode,
        balance: required(v, "account", "balance")?,
        maintenance_rate: field(v, "account", "maintenanceRate")?.unwrap_or(Decimal::new(5, 3)),
        threshold,
        positions,
    };
    let mut marks = HashMap::new();
    for (symbol, mark) in object(v, "marks")? {
        let m = decimal(&format!("marks.{symbol}"), &scalar(mark))?;
        if m <= Decimal::ZERO {
            return Err(InputError::Number(format!("marks.{symbol}"), m.to_string()));
        }
        marks.insert(symbol.clone(), m);
    }
    let mut lots = HashMap::new();
    for (symbol, lot) in object(v, "lots")? {
        let what = format!("lots.{symbol}");
        lots.insert(
            symbol.clone(),
            Lot {
                step: field(lot, &what, "step")?.unwrap_or_default(),
                min_notional: field(lot, &what, "minNotional")?.unwrap_or_default(),
            },
        );
    }
    Ok((account, marks, lots))
}

fn positive(v: &Value, what: &str, key: &str) -> Result<Decimal, InputError> {
    let x = required(v, what, key)?;
    if x <= Decimal::ZERO {
        return Err(InputError::Number(
            format!("{what}.{key}"),
            format!("{x} (must be positive)"),
        ));
    }
    Ok(x)
}

fn object<'a>(v: &'a Value, key: &str) -> Result<Vec<(&'a String, &'a Value)>, InputError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match v.get(key) {
        None | Some(Value::Null) => Ok(EMPTY.get_or_init(Map::new).iter().collect()),
        Some(Value::Object(m)) => Ok(m.iter().collect()),
        Some(_) => Err(InputError::Choice(key.into(), "a JSON object")),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
