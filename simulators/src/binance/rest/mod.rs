//! The simulator's REST side. One handler sees every request with its raw query and
//! body, because SIGNED requests must be verified over the exact bytes sent (a
//! router that decodes first would change `%5B` into `[` and break the check).

mod account;
mod control;
mod limits;
mod market;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::batch::{cancel_batch, modify_batch, place_batch};
use super::failures::OrderFault;
use super::orders::{
    cancel, cancel_all, countdown_cancel_all, find, is_open, modify, order_json, place,
};
use super::queries::{all_orders, set_leverage, user_trades};
use super::state::SimState;
use super::{algo, options};
use crate::kit;
use streaming::binance::sign::{split_signature, verify};

pub(crate) use super::reply::{error, missing, ok, Params, Reject};
use account::*;
use control::*;
pub(crate) use limits::roll_window;
use limits::*;
use market::*;

pub(super) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/sim/fault/{name}", post(kit::fault::<SimState>))
        .route("/sim/position", post(position_change))
        .route("/sim/order-fault", post(order_fault))
        .route("/sim/stream-fault", post(stream_fault))
        .route("/sim/clock", post(clock))
        .route("/sim/price", post(price_move))
        .route("/sim/liquidate", post(liquidate))
        .route("/sim/level", post(level))
        .route("/sim/market", post(market_switch))
        .fallback(handle)
        .with_state(state)
}

fn decode(raw: &str, into: &mut Params) {
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        into.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
}

/// Checks the API key and, for SIGNED routes, the signature and timestamp.
fn authenticate(
    state: &SimState,
    headers: &HeaderMap,
    query: &str,
    body: &str,
    params: &Params,
    signed: bool,
) -> Result<(), Box<Response>> {
    let key = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok());
    if key != Some(state.cfg.api_key.as_str()) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )));
    }
    if !signed {
        return Ok(());
    }
    let total = format!("{query}{body}");
    let checked = match split_signature(&total) {
        Some((payload, sig)) => verify(state.cfg.secret.as_bytes(), payload.as_bytes(), sig),
        // The signature in the query and more parameters in the body.
        None => split_signature(query).is_some_and(|(q, sig)| {
            verify(
                state.cfg.secret.as_bytes(),
                format!("{q}{body}").as_bytes(),
                sig,
            )
        }),
    };
    if !checked {
        state.stats.bad_signatures.fetch_add(1, Relaxed);
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            -1022,
            "Signature for this request is not valid.",
        )));
    }
    let Some(ts) = params.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
        )));
    };
    let window = params
        .get("recvWindow")
        .and_then(|w| w.parse::<i64>().ok())
        .unwrap_or(5000)
        .min(60_000);
    let now = state.now_ms();
    if ts >= now + 1000 || now - ts > window {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )));
    }
    Ok(())
}

async fn handle(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.stats.rest_requests.fetch_add(1, Relaxed);
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut params = Params::new();
    decode(&query, &mut params);
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        decode(&body, &mut params);
    }
    if state.maintenance.load(Relaxed) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1001,
            "Service Unavailable.",
        );
    }
    let used = match admit(&state, weight(&method, &path, &params)) {
        Admit::Ok(used) => used,
        Admit::TooMany { retry_after_s } => {
            state.stats.rate_limited.fetch_add(1, Relaxed);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                -1003,
                &format!(
                    "Too many requests; current limit is {} requests per minute. Please use the websocket for live updates to avoid polling the API.",
                    state.cfg.weight_limit
                ),
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after_s));
            return r;
        }
        Admit::Banned { until_ms } => {
            state.stats.banned.fetch_add(1, Relaxed);
            let mut r = error(
                StatusCode::IM_A_TEAPOT,
                -1003,
                &format!("Way too many requests; IP(127.0.0.1) banned until {until_ms}. Please use the websocket for live updates to avoid bans."),
            );
            let secs = ((until_ms - state.now_ms()).max(0) as u64).div_ceil(1000);
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            return r;
        }
    };
    let counted = match order_count(&method, &path).map(|add| count_orders(&state, add)) {
        Some(Err(refused)) => return *refused,
        Some(Ok(c)) => Some(c),
        None => None,
    };
    let fault = fault_for(&state, &method, &path, &params);
    if fault == Some(OrderFault::RejectBeforeEngine) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1001,
            "Service Unavailable.",
        );
    }
    let resp = route(&state, &method, &path, &query, &body, &headers, &params);
    let mut resp = after_engine(&state, fault, resp).await;
    let h = resp.headers_mut();
    h.insert("x-mbx-used-weight-1m", HeaderValue::from(used));
    if let Some((c10, c60)) = counted {
        h.insert("x-mbx-order-count-10s", HeaderValue::from(c10));
        h.insert("x-mbx-order-count-1m", HeaderValue::from(c60));
    }
    resp
}

/// The order fault that applies to this request, if it places orders. A batch is one
/// request: a fault for the next placement hits it whole.
fn fault_for(state: &SimState, method: &Method, path: &str, params: &Params) -> Option<OrderFault> {
    let placement = matches!(path, "/fapi/v1/order" | "/fapi/v1/batchOrders");
    if *method != Method::POST || !placement {
        return None;
    }
    state
        .failures
        .lock()
        .expect("failures lock")
        .order_fault(params.get("newClientOrderId").map(String::as_str))
}

/// What the client gets once the engine has executed the request under `fault`.
async fn after_engine(state: &SimState, fault: Option<OrderFault>, resp: Response) -> Response {
    match fault {
        Some(OrderFault::AcceptThen503) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1000,
            "Unknown error, please check your request or try again later.",
        ),
        Some(OrderFault::AcceptThen1007) => error(
            StatusCode::REQUEST_TIMEOUT,
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        ),
        // A proxy in front of the venue gave up waiting: 408 with its own page, not
        // the venue's JSON; the order is in.
        Some(OrderFault::AcceptThen408) => (
            StatusCode::REQUEST_TIMEOUT,
            [("content-type", "text/html")],
            "<html><body><h1>408 Request Time-out</h1></body></html>",
        )
            .into_response(),
        // The order is in; the answer comes after any client has given up.
        Some(OrderFault::AcceptThenTimeout) => {
            tokio::time::sleep(state.cfg.hang).await;
            resp
        }
        Some(OrderFault::RejectBeforeEngine) | None => resp,
    }
}

#[allow(clippy::too_many_arguments)]
fn route(
    state: &SimState,
    method: &Method,
    path: &str,
    query: &str,
    body: &str,
    headers: &HeaderMap,
    p: &Params,
) -> Response {
    let auth = |signed| authenticate(state, headers, query, body, p, signed);
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/time" | "/api/v3/time") => ok(json!({"serverTime": state.now_ms()})),
        ("GET", "/fapi/v1/ping" | "/api/v3/ping") => ok(json!({})),
        ("GET", "/fapi/v1/exchangeInfo") => ok(exchange_info(state)),
        ("GET", "/eapi/v1/time") => ok(json!({"serverTime": state.now_ms()})),
        ("GET", "/eapi/v1/exchangeInfo") => {
            ok(options::exchange_info(&state.options, state.now_ms()))
        }
        ("GET", "/eapi/v1/mark") => option_marks(state, p),
        ("GET", "/fapi/v1/depth") => depth(state, p),
        ("GET", "/fapi/v1/premiumIndex") => premium_index(state, p),
        ("POST" | "PUT" | "DELETE", "/fapi/v1/listenKey") => match auth(false) {
            Ok(()) => listen_key(state, method),
            Err(r) => *r,
        },
        _ => {
            if let Err(r) = auth(true) {
                return *r;
            }
            signed_route(state, method, path, p)
        }
    }
}

fn signed_route(state: &SimState, method: &Method, path: &str, p: &Params) -> Response {
    match (method.as_str(), path) {
        ("GET", "/fapi/v2/positionRisk") => ok(positions(state, true)),
        ("GET", "/fapi/v3/positionRisk") => ok(positions(state, false)),
        ("GET", "/eapi/v1/position") => ok(option_positions(state, p)),
        ("GET", "/fapi/v2/account" | "/fapi/v3/account") => ok(account(state)),
        ("GET", "/fapi/v2/balance" | "/fapi/v3/balance") => ok(balance(state)),
        ("GET", "/fapi/v1/leverageBracket") => ok(brackets(state, p.get("symbol"))),
        ("POST", "/fapi/v1/leverage") => set_leverage(state, p),
        ("GET", "/fapi/v1/userTrades") => user_trades(state, p),
        ("GET", "/fapi/v1/allOrders") => all_orders(state, p),
        ("POST", "/fapi/v1/marginType") => margin_type(state, p),
        ("PUT", "/fapi/v1/order") => modify(state, p).map_or_else(Reject::response, ok),
        ("PUT", "/fapi/v1/batchOrders") => modify_batch(state, p),
        ("GET", "/fapi/v1/positionSide/dual") => {
            let dual = state.account.lock().expect("account lock").dual_side;
            ok(json!({"dualSidePosition": dual}))
        }
        ("POST", "/fapi/v1/positionSide/dual") => dual_side(state, p),
        ("POST", "/fapi/v1/order") => place(state, p).map_or_else(Reject::response, ok),
        ("GET", "/fapi/v1/order") => match find(state, p) {
            Some(o) => ok(order_json(&o, true)),
            None => error(StatusCode::BAD_REQUEST, -2013, "Order does not exist."),
        },
        ("GET", "/fapi/v1/openOrder") => match find(state, p).filter(is_open) {
            Some(o) => ok(order_json(&o, true)),
            None => error(StatusCode::BAD_REQUEST, -2013, "Order does not exist."),
        },
        ("DELETE", "/fapi/v1/order") => cancel(state, p),
        ("POST", "/fapi/v1/batchOrders") => place_batch(state, p),
        ("DELETE", "/fapi/v1/batchOrders") => cancel_batch(state, p),
        ("POST" | "GET" | "DELETE", "/fapi/v1/algoOrder")
        | ("GET", "/fapi/v1/openAlgoOrders" | "/fapi/v1/allAlgoOrders")
        | ("DELETE", "/fapi/v1/algoOpenOrders") => algo::route(state, method, path, p),
        ("GET", "/fapi/v1/openOrders") => {
            let a = state.account.lock().expect("account lock");
            let rows: Vec<Value> = a
                .open_orders()
                .filter(|o| p.get("symbol").is_none_or(|s| *s == o.symbol))
                .map(|o| order_json(o, true))
                .collect();
            ok(Value::Array(rows))
        }
        ("DELETE", "/fapi/v1/allOpenOrders") => {
            let Some(symbol) = p.get("symbol") else {
                return missing("symbol");
            };
            cancel_all(state, symbol);
            ok(json!({"code": 200, "msg": "The operation of cancel all open order is done."}))
        }
        ("POST", "/fapi/v1/countdownCancelAll") => countdown_cancel_all(state, p),
        _ => error(StatusCode::NOT_FOUND, -5000, "Path not found"),
    }
}
