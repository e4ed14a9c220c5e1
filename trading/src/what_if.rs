//! The pre-trade checks on numbers a human supplies (`greekstream risk what-if`), so
//! "why was this refused?" has an answer without a running engine: JSON in, one JSON
//! object out — the verdict, the code and message of a refusal, and the numbers the
//! checks used. Pure: the binary only reads the flags and prints.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::account::Marked;
use crate::input::{decimal, field, parse, required, text, InputError};
use crate::position::{OrderSide, Position, Side};
use crate::risk::{self, AccountState, AccountStatus, OrderRequest, RiskRules, VenueFilters};

/// The check's inputs, as given on the command line (`greekstream risk what-if`):
/// decimals as text, positions, the order, rules and filters as JSON.
#[derive(Debug, Clone)]
pub struct WhatIf {
    pub balance: String,
    pub positions: String,
    pub order: String,
    pub mark: String,
    pub rules: String,
    pub filters: String,
    pub status: String,
    pub maintenance_rate: String,
    pub realized_today: String,
}

fn positions(raw: &str) -> Result<Vec<(String, Marked)>, InputError> {
    let v = parse("--positions", raw)?;
    let Some(items) = v.as_array() else {
        return Err(InputError::Choice("--positions".into(), "a JSON array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let what = format!("positions[{i}]");
            let side = match text(p, &what, "side")? {
                "LONG" => Side::Long,
                "SHORT" => Side::Short,
                _ => return Err(InputError::Choice(format!("{what}.side"), "LONG, SHORT")),
            };
            let position = Position {
                side,
                quantity: required(p, &what, "quantity")?,
                entry_price: required(p, &what, "entryPrice")?,
                leverage: required(p, &what, "leverage")?,
            };
            let mark = required(p, &what, "mark")?;
            Ok((
                text(p, &what, "symbol")?.to_owned(),
                Marked { position, mark },
            ))
        })
        .collect()
}

fn order(raw: &str) -> Result<OrderRequest, InputError> {
    let v = parse("--order", raw)?;
    let side = match text(&v, "order", "side")? {
        "BUY" => OrderSide::Buy,
        "SELL" => OrderSide::Sell,
        _ => return Err(InputError::Choice("order.side".into(), "BUY, SELL")),
    };
    Ok(OrderRequest {
        symbol: text(&v, "order", "symbol")?.to_owned(),
        side,
        quantity: required(&v, "order", "quantity")?,
        limit: field(&v, "order", "price")?,
        leverage: required(&v, "order", "leverage")?,
        reduce_only: v
            .get("reduceOnly")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn rules(raw: &str) -> Result<RiskRules, InputError> {
    let v = parse("--rules", raw)?;
    let d = RiskRules::default();
    Ok(RiskRules {
        max_leverage: field(&v, "rules", "maxLeverage")?.unwrap_or(d.max_leverage),
        max_notional_per_trade: field(&v, "rules", "maxNotionalPerTrade")?
            .unwrap_or(d.max_notional_per_trade),
        max_total_exposure: field(&v, "rules", "maxTotalExposure")?.unwrap_or(d.max_total_exposure),
        max_symbol_exposure: field(&v, "rules", "maxSymbolExposure")?,
        max_daily_loss: field(&v, "rules", "maxDailyLoss")?,
        liquidation_threshold: field(&v, "rules", "liquidationThreshold")?
            .unwrap_or(d.liquidation_threshold),
    })
}

fn filters(raw: &str) -> Result<VenueFilters, InputError> {
    let v = parse("--filters", raw)?;
    let or = |k: &str, default: i64, scale: u32| -> Result<Decimal, InputError> {
        Ok(field(&v, "filters", k)?.unwrap_or(Decimal::new(default, scale)))
    };
    Ok(VenueFilters {
        tick: or("tick", 1, 1)?,
        step: or("step", 1, 3)?,
        min_notional: or("minNotional", 5, 0)?,
        up: or("up", 105, 2)?,
        down: or("down", 95, 2)?,
    })
}

/// Runs the checks; the JSON verdict.
pub fn run(a: &WhatIf) -> Result<Value, InputError> {
    let status = match a.status.as_str() {
        "ACTIVE" => AccountStatus::Active,
        "FROZEN" => AccountStatus::Frozen,
        "LIQUIDATED" => AccountStatus::Liquidated,
        _ => {
            return Err(InputError::Choice(
                "--status".into(),
                "ACTIVE, FROZEN, LIQUIDATED",
            ))
        }
    };
    let account = AccountState {
        status,
        balance: decimal("--balance", &a.balance)?,
        maintenance_rate: decimal("--maintenance-rate", &a.maintenance_rate)?,
        positions: positions(&a.positions)?,
        realized_today: decimal("--realized-today", &a.realized_today)?,
    };
    let order = order(&a.order)?;
    let rules = rules(&a.rules)?;
    let valuation = valuation(&account, rules.liquidation_threshold);
    let view = risk::AccountView::of(&account, &order.symbol);
    let (numbers, verdict) = risk::explain(
        &view,
        &rules,
        &filters(&a.filters)?,
        decimal("--mark", &a.mark)?,
        order,
    );
    let mut out = match verdict {
        Ok(_) => json!({"approved": true}),
        Err(refusal) => json!({
            "approved": false,
            "code": refusal.code(),
            "message": refusal.to_string(),
        }),
    };
    // The numbers the checks used, on a refusal too.
    if let Some(n) = numbers {
        out["numbers"] = json!({
            "price": n.price.to_string(), "notional": n.notional.to_string(),
            "requiredMargin": n.required_margin.to_string(), "equity": n.equity.to_string(),
            "available": n.available.to_string(), "maintenance": n.maintenance.to_string(),
            "exposureBefore": n.exposure_before.to_string(),
            "exposureAfter": n.exposure_after.to_string(),
            "usageAfter": n.usage_after.to_string(),
        });
    }
    out["valuation"] = valuation;
    Ok(out)
}

/// The account before the order, as the risk loop values it (`risk value`'s numbers).
fn valuation(account: &AccountState, threshold: Decimal) -> Value {
    let open = account
        .positions
        .iter()
        .enumerate()
        .map(|(i, (symbol, m))| crate::evaluate::OpenPosition {
            id: format!("{symbol}-{i}").into(),
            symbol: symbol.as_str().into(),
            position: m.position.clone(),
            babysitter_excluded: false,
            opened_at: 0,
        })
        .collect();
    let book = crate::evaluate::Account {
        id: "offline".into(),
        status: account.status,
        liquidation_mode: crate::evaluate::LiquidationMode::Adl30,
        balance: account.balance,
        maintenance_rate: account.maintenance_rate,
        threshold,
        positions: open,
    };
    let marks = &account.positions;
    let valued = crate::evaluate::Prepared::new(book).value(|i| Some(marks[i].1.mark));
    crate::risk_value::valuation_json(&valued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(order: &str) -> WhatIf {
        WhatIf {
            balance: "5".into(),
            positions: r#"[{"symbol":"ETHUSDT","side":"LONG","quantity":"1","entryPrice":"100","leverage":10,"mark":"100"}]"#.into(),
            order: order.into(),
            mark: "100".into(),
            rules: r#"{"maxNotionalPerTrade": 1000}"#.into(),
            filters: "{}".into(),
            status: "ACTIVE".into(),
            maintenance_rate: "0.005".into(),
            realized_today: "0".into(),
        }
    }

    #[test]
    fn a_refusal_says_why_with_its_numbers() {
        let out = run(&args(
            r#"{"symbol":"BTCUSDT","side":"BUY","quantity":"1","leverage":"10"}"#,
        ))
        .unwrap();
        assert_eq!(out["approved"], false);
        assert_eq!(out["code"], "INSUFFICIENT_MARGIN");
        assert_eq!(
            out["message"],
            "Insufficient margin: need $10, available $4.50"
        );
        // The numbers behind the refusal, unrounded: what an operator asks for then.
        let n = &out["numbers"];
        assert_eq!(n["requiredMargin"], "10", "{out}");
        assert_eq!(n["available"], "4.500", "{out}");
        assert_eq!(n["equity"], "5", "{out}");
        assert_eq!(n["exposureAfter"], "200", "{out}");
        assert_eq!(n["exposureBefore"], "100", "{out}");
        assert_eq!(n["maintenance"], "0.500", "{out}");
        assert_eq!(n["usageAfter"], "4", "{out}");
        // Beside the verdict, the account as the risk loop values it.
        let v = &out["valuation"];
        assert_eq!(v["equity"], "5", "{out}");
        assert_eq!(v["maintenanceMargin"], "0.500", "{out}");
        assert_eq!(v["marginRatio"], "0.1", "{out}");
        assert_eq!(v["tier"], "NORMAL", "{out}");
    }

    #[test]
    fn an_approval_shows_the_numbers_used() {
        let a = WhatIf {
            balance: "1000".into(),
            ..args(r#"{"symbol":"BTCUSDT","side":"BUY","quantity":"0.1","leverage":"10"}"#)
        };
        let out = run(&a).unwrap();
        assert_eq!(out["approved"], true, "{out}");
        assert_eq!(out["numbers"]["requiredMargin"], "1.0");
        assert_eq!(out["numbers"]["exposureAfter"], "110.0");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let e = run(&args(
            r#"{"symbol":"BTCUSDT","side":"HOLD","quantity":"1","leverage":"10"}"#,
        ))
        .unwrap_err();
        assert_eq!(e.to_string(), "order.side: expected one of BUY, SELL");
        let e = run(&args("{not json")).unwrap_err();
        assert!(
            e.to_string().starts_with("--order is not valid JSON"),
            "{e}"
        );
        let e = run(&WhatIf {
            balance: "lots".into(),
            ..args("{}")
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--balance: expected a decimal number, got lots"
        );
    }
}
