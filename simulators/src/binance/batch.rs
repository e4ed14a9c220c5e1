//! `/fapi/v1/batchOrders`: up to five places, modifies or cancels, answered per slot.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::reply::{error, missing, ok, reject, Params, Reject};
use super::state::SimState;

use super::orders::{find, finish, modify, order_json, place};

/// A parameter by any of its spellings (clients differ in case: `orderIdList`,
/// `orderidlist`).
pub(super) fn param<'a>(p: &'a Params, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| p.get(*n)).map(String::as_str)
}

/// A batch element's value as the string a form parameter would carry: ccxt sends
/// `"reduceOnly": true` and numbers unquoted.
pub(super) fn as_param(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `-4082` for an empty batch or one over the endpoint's limit.
pub(super) fn bad_batch_size(len: usize, max: usize) -> Option<Response> {
    (len == 0 || len > max).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            -4082,
            "Invalid number of batch place orders.",
        )
    })
}

/// The elements of a batch parameter (`batchOrders`), each as form parameters.
pub(super) fn batch_items(p: &Params, max: usize) -> Result<Vec<Params>, Box<Response>> {
    let Some(raw) = param(p, &["batchOrders"]) else {
        return Err(Box::new(missing("batchOrders")));
    };
    let Ok(items) = serde_json::from_str::<Vec<serde_json::Map<String, Value>>>(raw) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            -1130,
            "Data sent for parameter 'batchOrders' is not valid.",
        )));
    };
    if let Some(r) = bad_batch_size(items.len(), max) {
        return Err(Box::new(r));
    }
    Ok(items
        .iter()
        .map(|item| item.iter().map(|(k, v)| (k.clone(), as_param(v))).collect())
        .collect())
}

/// Runs `each` on every element of a `batchOrders` list (at most 5), answering in
/// request order, each slot the result or `{code, msg}`, inside an HTTP 200.
pub(super) fn per_slot(
    state: &SimState,
    p: &Params,
    each: fn(&SimState, &Params) -> Result<Value, Reject>,
) -> Response {
    match batch_items(p, 5) {
        Ok(items) => ok(Value::Array(
            items
                .iter()
                .map(|params| each(state, params).unwrap_or_else(|r| r.json()))
                .collect(),
        )),
        Err(r) => *r,
    }
}

/// `POST /fapi/v1/batchOrders`: up to 5 orders, answered per slot.
pub(super) fn place_batch(state: &SimState, p: &Params) -> Response {
    per_slot(state, p, place)
}

/// `PUT /fapi/v1/batchOrders`: up to 5 modifications, answered per slot.
pub(super) fn modify_batch(state: &SimState, p: &Params) -> Response {
    per_slot(state, p, modify)
}

/// `DELETE /fapi/v1/batchOrders`: up to 10 orders of one symbol by id or client id.
pub(super) fn cancel_batch(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let ids = param(p, &["orderIdList", "orderidlist"]);
    let cids = param(p, &["origClientOrderIdList", "origclientorderidlist"]);
    let keys: Vec<(&str, String)> = match (ids, cids) {
        (Some(raw), _) => match serde_json::from_str::<Vec<u64>>(raw) {
            Ok(v) => v.into_iter().map(|i| ("orderId", i.to_string())).collect(),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    -1130,
                    "Data sent for parameter 'orderIdList' is not valid.",
                )
            }
        },
        (None, Some(raw)) => match serde_json::from_str::<Vec<String>>(raw) {
            Ok(v) => v.into_iter().map(|c| ("origClientOrderId", c)).collect(),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    -1130,
                    "Data sent for parameter 'origClientOrderIdList' is not valid.",
                )
            }
        },
        (None, None) => return missing("orderIdList"),
    };
    if let Some(r) = bad_batch_size(keys.len(), 10) {
        return r;
    }
    let rows = keys
        .into_iter()
        .map(|(k, v)| {
            let one: Params = [(k.to_owned(), v)].into_iter().collect();
            find(state, &one)
                .filter(|o| o.symbol == *symbol)
                .and_then(|o| finish(state, o.id, "CANCELED"))
                .map_or_else(
                    || reject(StatusCode::BAD_REQUEST, -2011, "Unknown order sent.").json(),
                    |o| order_json(&o, false),
                )
        })
        .collect();
    ok(Value::Array(rows))
}
