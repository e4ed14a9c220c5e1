//! A command body's fields read and checked (JS-truthy "required", numbers exact),
//! and the bodies shared by several commands (orders, scales, baskets, rules).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::envelope::{visible_id, Rejected};
use super::spec::*;
use crate::evaluate::LiquidationMode;

/// A field that is there but unusable.
pub(super) fn invalid(field: &str, why: &str) -> Rejected {
    Rejected::new("INVALID_FIELD", format!("Invalid {field}: {why}"))
}

/// JS-truthy: absent, `null`, `0`, `""` and `false` count as missing.
pub(super) fn present<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    match m.get(k)? {
        Value::Null | Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        v => Some(v),
    }
}

/// A number or numeric string, exact; `None` when missing (JS-truthy).
pub(super) fn decimal(m: &Map<String, Value>, k: &str) -> Result<Option<Decimal>, Rejected> {
    let Some(v) = present(m, k) else {
        return Ok(None);
    };
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(invalid(k, "must be a number")),
    };
    let d = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| invalid(k, "must be a finite number"))?;
    Ok((!d.is_zero()).then_some(d))
}

pub(super) fn positive(m: &Map<String, Value>, k: &str) -> Result<Option<Decimal>, Rejected> {
    match decimal(m, k)? {
        Some(d) if d.is_sign_negative() => Err(invalid(k, "must be positive")),
        d => Ok(d),
    }
}

pub(super) fn string(m: &Map<String, Value>, k: &str) -> Result<Option<String>, Rejected> {
    match present(m, k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(k, "must be a string")),
    }
}

pub(super) fn boolean(m: &Map<String, Value>, k: &str) -> Result<bool, Rejected> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(k, "must be true or false")),
    }
}

pub(super) fn missing(message: &str) -> Rejected {
    Rejected::new("MISSING_FIELDS", message)
}

/// An id the engine looks up (a position, an order): any short visible string.
pub(super) fn id(m: &Map<String, Value>, k: &str) -> Result<String, Rejected> {
    string(m, k)?
        .filter(|s| visible_id(s))
        .ok_or_else(|| missing(&format!("Missing {k}")))
}

pub(super) const TRADE_FIELDS: &str =
    "Missing required fields: subAccountId, symbol, side, quantity, leverage";

pub(super) fn order_spec(
    m: &Map<String, Value>,
    has_account: bool,
    with_price: bool,
    missing_message: &str,
) -> Result<OrderSpec, Rejected> {
    let symbol = string(m, "symbol")?;
    let side = string(m, "side")?;
    let quantity = positive(m, "quantity")?;
    let leverage = positive(m, "leverage")?;
    let price = positive(m, "price")?;
    let (Some(symbol), Some(side), Some(quantity), Some(leverage), true, true) = (
        symbol,
        side,
        quantity,
        leverage,
        has_account,
        !with_price || price.is_some(),
    ) else {
        return Err(missing(missing_message));
    };
    let side = side_of(&side)
        .ok_or_else(|| Rejected::new("INVALID_SIDE", "side must be LONG or SHORT"))?;
    Ok(OrderSpec {
        symbol: normalize_symbol(&symbol),
        side,
        quantity,
        leverage,
        price: if with_price { price } else { None },
        reduce_only: boolean(m, "reduceOnly")?,
    })
}

pub(super) fn scale(m: &Map<String, Value>, has_account: bool) -> Result<ScaleSpec, Rejected> {
    const MISSING: &str = "Missing required fields: subAccountId, symbol, side, leverage, orders[]";
    let symbol = string(m, "symbol")?;
    let side = string(m, "side")?;
    let leverage = decimal(m, "leverage")?;
    let orders = match m.get("orders") {
        Some(Value::Array(a)) if a.len() >= 2 => a,
        Some(Value::Array(_)) | None | Some(Value::Null) => return Err(missing(MISSING)),
        Some(_) => return Err(invalid("orders", "must be an array")),
    };
    let (Some(symbol), Some(side), true) = (symbol, side, has_account) else {
        return Err(missing(MISSING));
    };
    if !(5..=30).contains(&orders.len()) {
        return Err(Rejected::new(
            "SCALE_INVALID_COUNT",
            format!("Order count must be between 5 and 30. Got {}", orders.len()),
        ));
    }
    let side = side_of(&side).ok_or_else(|| {
        Rejected::new(
            "INVALID_SIDE",
            format!("Invalid side '{side}'. Use LONG or SHORT."),
        )
    })?;
    let leverage = match leverage {
        Some(l) if l > Decimal::ZERO && l <= Decimal::from(125) => l,
        l => {
            return Err(Rejected::new(
                "INVALID_LEVERAGE",
                format!(
                    "Invalid leverage {}. Must be 1–125.",
                    l.map_or("0".into(), |l| l.to_string())
                ),
            ))
        }
    };
    let mut out = Vec::with_capacity(orders.len());
    let mut bad = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let n = i + 1;
        let Value::Object(o) = o else {
            bad.push(format!(
                "Order #{n}: must be an object with price and quantity"
            ));
            continue;
        };
        match (positive(o, "price"), positive(o, "quantity")) {
            (Ok(Some(p)), Ok(Some(q))) => {
                if out.iter().any(|(seen, _)| *seen == p) {
                    bad.push(format!("Order #{n}: duplicate price {p}"));
                } else {
                    out.push((p, q));
                }
            }
            (Ok(Some(_)), _) => bad.push(format!("Order #{n}: invalid quantity")),
            _ => bad.push(format!("Order #{n}: invalid price")),
        }
    }
    if !bad.is_empty() {
        let errors: Vec<Value> = bad
            .iter()
            .map(|m| json!({"code": "SCALE_INVALID_ORDER", "message": m}))
            .collect();
        return Err(Rejected {
            status: 400,
            code: "SCALE_INVALID_ORDER",
            body: json!({"error": "Scale order validation failed", "errors": errors}),
        });
    }
    Ok(ScaleSpec {
        symbol: normalize_symbol(&symbol),
        side,
        leverage,
        orders: out,
    })
}

pub(super) fn basket(
    m: &Map<String, Value>,
    has_account: bool,
) -> Result<Vec<OrderSpec>, Rejected> {
    let legs = match m.get("legs") {
        Some(Value::Array(a)) if !a.is_empty() && has_account => a,
        _ => return Err(missing("Missing required fields: subAccountId, legs[]")),
    };
    legs.iter()
        .map(|leg| {
            let Value::Object(l) = leg else {
                return Err(invalid("legs", "each leg must be an object"));
            };
            order_spec(
                l,
                true,
                false,
                &format!(
                    "Invalid leg: each leg needs symbol, side, quantity, leverage. Got: {leg}"
                ),
            )
        })
        .collect()
}

pub(super) fn rules_patch(m: &Map<String, Value>) -> Result<RulesPatch, Rejected> {
    Ok(RulesPatch {
        max_leverage: positive(m, "maxLeverage")?,
        max_notional_per_trade: positive(m, "maxNotionalPerTrade")?,
        max_total_exposure: positive(m, "maxTotalExposure")?,
        max_symbol_exposure: positive(m, "maxSymbolExposure")?,
        max_daily_loss: positive(m, "maxDailyLoss")?,
        liquidation_threshold: match positive(m, "liquidationThreshold")? {
            Some(t) if t > Decimal::ONE => {
                return Err(invalid("liquidationThreshold", "must be at most 1"))
            }
            t => t,
        },
    })
}

pub(super) fn liquidation_mode(
    m: &Map<String, Value>,
) -> Result<Option<LiquidationMode>, Rejected> {
    string(m, "liquidationMode")?
        .map(|s| {
            LiquidationMode::parse(&s).ok_or_else(|| {
                invalid(
                    "liquidationMode",
                    "must be ADL_30, INSTANT_CLOSE or TAKEOVER",
                )
            })
        })
        .transpose()
}
