//! A new order checked as the venue checks it: its parameters parsed, the symbol's
//! filters, the account's open-order cap and margin.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use rust_decimal::Decimal;

use super::market::{SimBook, SymbolSpec};
use super::matching::{self, Plan, Side, Tif};
use super::reply::{reject, Params, Reject};
use super::state::{side_name, Account, Market};

/// Open orders per symbol (`MAX_NUM_ORDERS`).
pub(super) const MAX_OPEN_ORDERS: usize = 200;

/// The `MIN_NOTIONAL` filter, in USDT.
pub(super) const MIN_NOTIONAL: i64 = 5;

/// The latest mark of every futures symbol: its book's mid.
pub(super) fn marks(m: &Market) -> BTreeMap<String, Decimal> {
    m.specs
        .iter()
        .zip(&m.books)
        .map(|(s, b)| (s.symbol.clone(), s.price_of(b.mid)))
        .collect()
}

/// Margin free for new positions: wallet + unrealized − initial margin of positions
/// and open orders, at each symbol's leverage.
pub(super) fn available(a: &Account, marks: &BTreeMap<String, Decimal>) -> Decimal {
    let lev = |s: &str| Decimal::from(a.leverage_of(s));
    let mut free = a.wallet;
    for ((s, _), h) in &a.positions {
        let Some(&mark) = marks.get(s) else { continue };
        free += (mark - h.entry) * h.amount;
        free -= (mark * h.amount).abs() / lev(s);
    }
    for o in a.open_orders() {
        let price = if o.price.is_zero() {
            marks.get(&o.symbol).copied().unwrap_or_default()
        } else {
            o.price
        };
        free -= price * (o.qty - o.executed) / lev(&o.symbol);
    }
    free
}

/// A new order's parameters, checked against what needs no venue state.
#[derive(Debug)]
pub(super) struct NewOrder {
    pub(super) symbol: String,
    pub(super) side: Side,
    pub(super) market: bool,
    pub(super) tif: Tif,
    pub(super) qty: Decimal,
    pub(super) price: Decimal,
    pub(super) reduce_only: bool,
    pub(super) position_side: Option<&'static str>,
    pub(super) client_id: Option<String>,
    pub(super) result: bool,
}

pub(super) fn bad(code: i64, msg: &str) -> Reject {
    reject(StatusCode::BAD_REQUEST, code, msg)
}

pub(super) fn mandatory(name: &str) -> Reject {
    bad(
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

/// `^[\.A-Z\:/a-z0-9_-]{1,36}$`, the venue's client order id rule.
pub(super) fn valid_client_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/_-".contains(&b))
}

pub(super) fn parse_new_order(p: &Params) -> Result<NewOrder, Reject> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let symbol = get("symbol").ok_or_else(|| mandatory("symbol"))?;
    let side = get("side").ok_or_else(|| mandatory("side"))?;
    let kind = get("type").ok_or_else(|| mandatory("type"))?;
    let side = Side::parse(side).ok_or_else(|| bad(-1117, "Invalid side."))?;
    let market = match kind {
        "MARKET" => true,
        "LIMIT" => false,
        k if k.starts_with("STOP")
            || k.starts_with("TAKE_PROFIT")
            || k == "TRAILING_STOP_MARKET" =>
        {
            return Err(bad(-4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."));
        }
        _ => return Err(bad(-1116, "Invalid orderType.")),
    };
    let qty = get("quantity")
        .and_then(|q| q.parse::<Decimal>().ok())
        .ok_or_else(|| mandatory("quantity"))?;
    if qty <= Decimal::ZERO {
        return Err(bad(-4003, "Quantity less than or equal to zero."));
    }
    let (tif, price) = if market {
        (Tif::Gtc, Decimal::ZERO)
    } else {
        let price = get("price")
            .and_then(|q| q.parse::<Decimal>().ok())
            .ok_or_else(|| mandatory("price"))?;
        let tif = get("timeInForce").ok_or_else(|| mandatory("timeInForce"))?;
        let tif = Tif::parse(tif).ok_or_else(|| bad(-1115, "Invalid timeInForce."))?;
        if price <= Decimal::ZERO {
            return Err(bad(-4001, "Price less than 0."));
        }
        (tif, price)
    };
    let client_id = get("newClientOrderId").map(str::to_owned);
    if client_id.as_deref().is_some_and(|c| !valid_client_id(c)) {
        return Err(bad(-4015, "Client order id is not valid."));
    }
    let position_side = match get("positionSide") {
        None => None,
        Some(s) => Some(side_name(s).ok_or_else(|| bad(-4006, "Invalid position side."))?),
    };
    let reduce_only = match get("reduceOnly") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(bad(
                -1130,
                "Data sent for parameter 'reduceOnly' is not valid.",
            ))
        }
    };
    let result = match get("newOrderRespType") {
        None | Some("ACK") => false,
        Some("RESULT") => true,
        Some(_) => {
            return Err(bad(
                -1130,
                "Data sent for parameter 'newOrderRespType' is not valid.",
            ))
        }
    };
    Ok(NewOrder {
        symbol: symbol.to_owned(),
        side,
        market,
        tif,
        qty,
        price,
        reduce_only,
        position_side,
        client_id,
        result,
    })
}

/// An order that passed the venue's checks, and what matching will do with it.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) position_side: &'static str,
    /// The limit in ticks; `None` for a market order.
    pub(super) limit: Option<i64>,
    pub(super) mark: Decimal,
    /// Lots to take now, and whether the remainder rests.
    pub(super) take: i64,
    pub(super) rest: bool,
}

/// The symbol's filters: step and tick, the percent-price band, the minimum notional.
/// Returns the limit in ticks and the price the notional is judged at.
pub(super) fn filters(
    spec: &SymbolSpec,
    mark: Decimal,
    req: &NewOrder,
) -> Result<(Option<i64>, Decimal), Reject> {
    if !(req.qty / spec.step).fract().is_zero() {
        return Err(bad(
            -1111,
            "Precision is over the maximum defined for this asset.",
        ));
    }
    if req.market {
        if !req.reduce_only && req.qty * mark < Decimal::from(MIN_NOTIONAL) {
            return Err(min_notional());
        }
        return Ok((None, mark));
    }
    let limit = spec
        .ticks(req.price)
        .ok_or_else(|| bad(-4014, "Price not increased by tick size."))?;
    let up = (mark * Decimal::new(105, 2)).round_dp(spec.tick.scale());
    let down = (mark * Decimal::new(95, 2)).round_dp(spec.tick.scale());
    if req.side == Side::Buy && req.price > up {
        return Err(bad(
            -4016,
            &format!("Limit price can't be higher than {up}."),
        ));
    }
    if req.side == Side::Sell && req.price < down {
        return Err(bad(
            -4024,
            &format!("Limit price can't be lower than {down}."),
        ));
    }
    if !req.reduce_only && req.qty * req.price < Decimal::from(MIN_NOTIONAL) {
        return Err(min_notional());
    }
    Ok((Some(limit), req.price))
}

pub(super) fn min_notional() -> Reject {
    bad(
        -4164,
        &format!("Order's notional must be no smaller than {MIN_NOTIONAL} (unless you choose reduce only)."),
    )
}

/// The venue's checks, in its order, and the matching plan: the order is refused
/// (nothing recorded) or admitted.
pub(super) fn admit(
    a: &Account,
    spec: &SymbolSpec,
    book: &SimBook,
    marks: &BTreeMap<String, Decimal>,
    req: &NewOrder,
) -> Result<Admitted, Reject> {
    let position_side = match (req.position_side, a.dual_side) {
        (None | Some("BOTH"), false) => "BOTH",
        (Some(leg @ ("LONG" | "SHORT")), true) => leg,
        _ => {
            return Err(bad(
                -4061,
                "Order's position side does not match user's setting.",
            ))
        }
    };
    if req.reduce_only && a.dual_side {
        return Err(bad(-1106, "Parameter 'reduceonly' sent when not required."));
    }
    let mark = marks.get(&spec.symbol).copied().unwrap_or_default();
    let (limit, reference) = filters(spec, mark, req)?;
    if let Some(cid) = &req.client_id {
        if a.open_orders().any(|o| o.client_id == *cid) {
            return Err(bad(-4116, "ClientOrderId is duplicated."));
        }
    }
    if a.open_orders().filter(|o| o.symbol == spec.symbol).count() >= MAX_OPEN_ORDERS {
        return Err(bad(-2025, "Reach max open order limit."));
    }
    let lots = |q: Decimal| (q / spec.step).trunc().try_into().unwrap_or(i64::MAX);
    let held = a
        .positions
        .get(&(spec.symbol.clone(), position_side))
        .copied()
        .unwrap_or_default();
    // Hedge mode: BUY on LONG and SELL on SHORT open; the other way closes, never
    // more than the leg holds (a leg cannot flip).
    let closes_leg = matches!(
        (position_side, req.side),
        ("LONG", Side::Sell) | ("SHORT", Side::Buy)
    );
    if closes_leg && req.qty > held.amount.abs() {
        return Err(bad(-2022, "ReduceOnly Order is rejected."));
    }
    // A reduce-only order may only shrink the position: the opposite side, and never
    // more than is held (what is over expires).
    let cap = if req.reduce_only {
        let reduces =
            !held.amount.is_zero() && held.amount.is_sign_positive() == (req.side == Side::Sell);
        if !reduces {
            return Err(bad(-2022, "ReduceOnly Order is rejected."));
        }
        lots(held.amount.abs())
    } else {
        let need = req.qty * reference / Decimal::from(a.leverage_of(&spec.symbol));
        if !closes_leg && need > available(a, marks) {
            return Err(bad(-2019, "Margin is insufficient."));
        }
        i64::MAX
    };
    let qty_lots = lots(req.qty);
    let crossing = matching::crossing_lots(book, req.side, limit);
    match matching::plan(req.market, req.tif, qty_lots, crossing) {
        Plan::Reject(code, msg) => Err(bad(code, msg)),
        Plan::Execute { take, rest } => Ok(Admitted {
            position_side,
            limit,
            mark,
            take: take.min(cap),
            rest: rest && cap >= qty_lots,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_ids_follow_the_venue_rule() {
        for good in ["gs-1", "a.b:c/d_e-f", &"x".repeat(36)] {
            assert!(valid_client_id(good), "{good}");
        }
        for bad in ["", "has space", "ünï", &"x".repeat(37), "a+b"] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }
}
