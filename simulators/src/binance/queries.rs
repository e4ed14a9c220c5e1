//! What the account asks about its orders and trades, and its leverage.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{error, missing, ok, Params};
use super::state::SimState;

use super::orders::{order_json, trade_json};

pub(super) fn id_param(p: &Params, name: &str) -> Option<u64> {
    p.get(name).and_then(|i| i.parse().ok())
}

/// A history page's `limit`: 500 by default, 1 to 1000.
pub(super) fn page_limit(p: &Params) -> usize {
    p.get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500)
        .clamp(1, 1000)
}

/// `GET /fapi/v1/allOrders`: the symbol's orders, oldest first, from `orderId`.
pub(super) fn all_orders(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let (from, limit) = (id_param(p, "orderId").unwrap_or(0), page_limit(p));
    let a = state.account.lock().expect("account lock");
    let rows: Vec<Value> = a
        .orders
        .range(from..)
        .map(|(_, o)| o)
        .filter(|o| o.symbol == *symbol)
        .take(limit)
        .map(|o| order_json(o, true))
        .collect();
    ok(Value::Array(rows))
}

/// `GET /fapi/v1/userTrades`: the symbol's fills, oldest first, by `orderId`, from
/// `fromId`, or within `startTime`..`endTime` (ms, inclusive).
pub(super) fn user_trades(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let order = id_param(p, "orderId");
    let (from, limit) = (id_param(p, "fromId").unwrap_or(0), page_limit(p));
    let time = |k: &str| p.get(k).and_then(|v| v.parse::<i64>().ok());
    let (start, end) = (
        time("startTime").unwrap_or(i64::MIN),
        time("endTime").unwrap_or(i64::MAX),
    );
    let a = state.account.lock().expect("account lock");
    let rows: Vec<Value> = a
        .trades
        .iter()
        .filter(|t| t.symbol == *symbol && t.id >= from && order.is_none_or(|o| t.order_id == o))
        .filter(|t| (start..=end).contains(&t.time))
        .take(limit)
        .map(trade_json)
        .collect();
    ok(Value::Array(rows))
}

/// `POST /fapi/v1/leverage`: stored per symbol, bounded by its brackets; the stream
/// says so with ACCOUNT_CONFIG_UPDATE.
pub(super) fn set_leverage(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let Some(brackets) = state.brackets(symbol) else {
        return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    };
    let top = brackets.tiers()[0].max_leverage;
    let leverage = match p.get("leverage").and_then(|l| l.parse::<u32>().ok()) {
        Some(l) if (1..=top).contains(&l) => l,
        _ => return error(StatusCode::BAD_REQUEST, -4028, "Leverage is not valid"),
    };
    state
        .account
        .lock()
        .expect("account lock")
        .leverage
        .insert(symbol.clone(), leverage);
    let t = state.now_ms();
    state.publish_user(format!(
        r#"{{"e":"ACCOUNT_CONFIG_UPDATE","E":{t},"T":{t},"ac":{{"s":"{symbol}","l":{leverage}}}}}"#
    ));
    ok(json!({
        "leverage": leverage, "symbol": symbol,
        "maxNotionalValue": brackets.max_notional(leverage).normalize().to_string(),
    }))
}
