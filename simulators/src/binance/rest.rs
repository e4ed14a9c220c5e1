//! The simulator's REST side. One handler sees every request with its raw query and
//! body, because SIGNED requests must be verified over the exact bytes sent (a
//! router that decodes first would change `%5B` into `[` and break the check).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::failures::{OrderFault, Selector, StreamFault};
use super::orders::{
    all_orders, cancel, cancel_all, cancel_batch, countdown_cancel_all, find, is_open, modify,
    modify_batch, order_json, place, place_batch, set_leverage, user_trades,
};
use super::{
    algo, options, set_position, side_name, BinanceSimConfig, Held, Limiter, PositionKey, SimState,
};
use crate::kit;
use streaming::binance::sign::{split_signature, verify};

pub(super) type Params = HashMap<String, String>;

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

/// `POST /sim/position` `{"symbol": "BTCUSDT", "amount": "0.5", "side": "BOTH",
/// "quiet": false}`: opens, changes or (amount 0) closes a futures leg or an option
/// position, as a fill or an expiry would. `side` is `BOTH` (default), `LONG` or
/// `SHORT`; `quiet` skips the ACCOUNT_UPDATE (as if it was lost), so only a REST
/// read finds the change. Options never stream one (their user stream is not
/// simulated): the next `/eapi/v1/position` read shows it.
async fn position_change(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let symbol = body.get("symbol").and_then(Value::as_str);
    let amount = match body.get("amount") {
        Some(Value::String(s)) => s.parse::<Decimal>().ok(),
        Some(Value::Number(n)) => n.to_string().parse::<Decimal>().ok(),
        _ => None,
    };
    let side = side_name(body.get("side").and_then(Value::as_str).unwrap_or("BOTH"));
    let quiet = body.get("quiet").and_then(Value::as_bool).unwrap_or(false);
    let (Some(symbol), Some(amount), Some(side)) = (symbol, amount, side) else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "body must be {\"symbol\": s, \"amount\": decimal, \"side\": BOTH|LONG|SHORT, \"quiet\": bool}",
        );
    };
    if state.mark(symbol).is_none() && state.option(symbol).is_none() {
        return kit::sim_error(StatusCode::NOT_FOUND, "unknown symbol");
    }
    let entry = state.mark(symbol).unwrap_or(Decimal::ONE);
    if quiet {
        super::store_position(&state, symbol, side, amount, entry);
    } else {
        set_position(&state, symbol, side, amount, entry, "ORDER");
    }
    axum::Json(json!({"symbol": symbol, "side": side, "amount": amount.normalize().to_string()}))
        .into_response()
}

/// Which orders a `/sim/` fault applies to: `{"next": n}` (default 1) or
/// `{"client_order_id": "..."}`.
fn selector(body: &Value) -> Selector {
    match body.get("client_order_id").and_then(Value::as_str) {
        Some(c) => Selector::ClientId(c.to_owned()),
        None => Selector::Next(body.get("next").and_then(Value::as_u64).unwrap_or(1) as u32),
    }
}

/// `POST /sim/order-fault` `{"fault": "accept_then_timeout" | "accept_then_503" |
/// "accept_then_1007" | "reject_before_engine", "next": n | "client_order_id": s}`.
async fn order_fault(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Some(fault) = body
        .get("fault")
        .and_then(Value::as_str)
        .and_then(OrderFault::parse)
    else {
        return kit::sim_error(StatusCode::BAD_REQUEST, "fault must be accept_then_timeout, accept_then_503, accept_then_1007, accept_then_408 or reject_before_engine");
    };
    state
        .failures
        .lock()
        .expect("failures lock")
        .add_order_fault(fault, selector(&body));
    (StatusCode::OK, "ok").into_response()
}

/// `POST /sim/stream-fault` `{"fault": "drop" | "duplicate" | "delay" | "reorder",
/// "delay_ms": n, "next": n | "client_order_id": s}`.
async fn stream_fault(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let delay = body.get("delay_ms").and_then(Value::as_u64).unwrap_or(1000);
    let Some(fault) = body
        .get("fault")
        .and_then(Value::as_str)
        .and_then(|f| StreamFault::parse(f, delay))
    else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "fault must be drop, duplicate, delay or reorder",
        );
    };
    state
        .failures
        .lock()
        .expect("failures lock")
        .add_stream_fault(fault, selector(&body));
    (StatusCode::OK, "ok").into_response()
}

/// `POST /sim/clock` `{"offset_ms": n}` puts the server's clock `n` ms off its source;
/// `{"advance_ms": n}` moves it forward (how a fixed clock advances).
async fn clock(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(offset) = body.get("offset_ms").and_then(Value::as_i64) {
        state.clock_offset_ms.store(offset, Relaxed);
    } else if let Some(ms) = body.get("advance_ms").and_then(Value::as_i64) {
        state.clock_offset_ms.fetch_add(ms, Relaxed);
    } else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "body must be {\"offset_ms\": integer} or {\"advance_ms\": integer}",
        );
    }
    (StatusCode::OK, "ok").into_response()
}

/// `POST /sim/price` `{"symbol": "BTCUSDT", "ticks": -30}`: moves the book at once.
async fn price_move(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let (Some(symbol), Some(ticks)) = (
        body.get("symbol").and_then(Value::as_str),
        body.get("ticks").and_then(Value::as_i64),
    ) else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "body must be {\"symbol\": s, \"ticks\": integer}",
        );
    };
    if super::move_price(&state, symbol, ticks) {
        (StatusCode::OK, "ok").into_response()
    } else {
        kit::sim_error(StatusCode::NOT_FOUND, "unknown symbol")
    }
}

/// `POST /sim/level` `{"symbol": "BTCUSDT", "side": "ask", "price": "60010",
/// "qty": "5"}`: adds, resizes or (qty 0) removes one level of liquidity.
async fn level(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let dec = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<Decimal>().ok())
    };
    let bid = match body.get("side").and_then(Value::as_str) {
        Some("bid") => Some(true),
        Some("ask") => Some(false),
        _ => None,
    };
    let (Some(symbol), Some(bid), Some(price), Some(qty)) = (
        body.get("symbol").and_then(Value::as_str),
        bid,
        dec("price"),
        dec("qty"),
    ) else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "body must be {\"symbol\": s, \"side\": bid|ask, \"price\": decimal string, \"qty\": decimal string}",
        );
    };
    if super::set_level(&state, symbol, bid, price, qty) {
        (StatusCode::OK, "ok").into_response()
    } else {
        kit::sim_error(
            StatusCode::BAD_REQUEST,
            "unknown symbol, or price or qty off the grid",
        )
    }
}

/// `POST /sim/market` `{"paused": true}`: pins every book where it is (no walk, no
/// resting fills) until `{"paused": false}`.
async fn market_switch(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Some(paused) = body.get("paused").and_then(Value::as_bool) else {
        return kit::sim_error(StatusCode::BAD_REQUEST, "body must be {\"paused\": bool}");
    };
    state.market.lock().expect("market lock").paused = paused;
    (StatusCode::OK, "ok").into_response()
}

/// `POST /sim/liquidate` `{"symbol": "BTCUSDT", "side": "BOTH", "adl": false}`: the
/// venue closes the leg itself (liquidation, or ADL with `"adl": true`).
async fn liquidate(
    State(state): State<Arc<SimState>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let symbol = body.get("symbol").and_then(Value::as_str);
    let leg = side_name(body.get("side").and_then(Value::as_str).unwrap_or("BOTH"));
    let adl = body.get("adl").and_then(Value::as_bool).unwrap_or(false);
    let (Some(symbol), Some(leg)) = (symbol, leg) else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "body must be {\"symbol\": s, \"side\": BOTH|LONG|SHORT, \"adl\": bool}",
        );
    };
    if super::orders::force_close(&state, symbol, leg, adl) {
        (StatusCode::OK, "ok").into_response()
    } else {
        kit::sim_error(StatusCode::NOT_FOUND, "no position there")
    }
}

/// A Binance error response.
pub(super) fn error(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"code": code, "msg": msg}).to_string(),
    )
        .into_response()
}

pub(super) fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn roll_window(l: &mut Limiter, cfg: &BinanceSimConfig, now: i64) {
    let window = now as u64 / cfg.weight_window.as_millis().max(1) as u64;
    if window != l.window {
        l.window = window;
        l.used = 0;
        // An injected rate limit outlives a window boundary, so its strikes count on.
        if now >= l.saturated_until_ms {
            l.strikes = 0;
        }
    }
    if now < l.saturated_until_ms {
        l.used = l.used.max(cfg.weight_limit);
    }
}

enum Admit {
    Ok(u64),
    TooMany { retry_after_s: u64 },
    Banned { until_ms: i64 },
}

/// What a request adds to the ORDERS counters: (10 s, 1 min). A batch counts 5 on
/// the 10 s limit and 1 on the minute.
fn order_count(method: &Method, path: &str) -> Option<(u64, u64)> {
    match (method.as_str(), path) {
        ("POST" | "PUT", "/fapi/v1/order") => Some((1, 1)),
        ("POST" | "PUT", "/fapi/v1/batchOrders") => Some((5, 1)),
        _ => None,
    }
}

/// Counts an order request; the counters after it, or the -1015 refusal.
fn count_orders(state: &SimState, add: (u64, u64)) -> Result<(u64, u64), Box<Response>> {
    let now = state.now_ms();
    let mut l = state.limiter.lock().expect("limiter lock");
    let (w10, w60) = (now / 10_000, now / 60_000);
    if l.orders_10s.0 != w10 {
        l.orders_10s = (w10, 0);
    }
    if l.orders_1m.0 != w60 {
        l.orders_1m = (w60, 0);
    }
    let (c10, c60) = (l.orders_10s.1 + add.0, l.orders_1m.1 + add.1);
    let refuse = |limit: u64, per: &str| {
        Box::new(error(
            StatusCode::TOO_MANY_REQUESTS,
            -1015,
            &format!("Too many new orders; current limit is {limit} orders per {per}."),
        ))
    };
    if c10 > state.cfg.orders_per_10s {
        return Err(refuse(state.cfg.orders_per_10s, "TEN_SECONDS"));
    }
    if c60 > state.cfg.orders_per_minute {
        return Err(refuse(state.cfg.orders_per_minute, "MINUTE"));
    }
    l.orders_10s.1 = c10;
    l.orders_1m.1 = c60;
    Ok((c10, c60))
}

fn admit(state: &SimState, weight: u64) -> Admit {
    let cfg = &state.cfg;
    let mut l = state.limiter.lock().expect("limiter lock");
    let now = state.now_ms();
    if l.banned_until_ms > now {
        return Admit::Banned {
            until_ms: l.banned_until_ms,
        };
    }
    roll_window(&mut l, cfg, now);
    if l.used + weight > cfg.weight_limit {
        l.strikes += 1;
        if l.strikes > cfg.ban_after {
            l.banned_until_ms = now + cfg.ban_duration.as_millis() as i64;
            return Admit::Banned {
                until_ms: l.banned_until_ms,
            };
        }
        let window_ms = cfg.weight_window.as_millis().max(1) as u64;
        let left =
            (window_ms - (now as u64 % window_ms)).max((l.saturated_until_ms - now).max(0) as u64);
        return Admit::TooMany {
            retry_after_s: left.div_ceil(1000),
        };
    }
    l.used += weight;
    Admit::Ok(l.used)
}

/// Request weight per route, as documented.
fn weight(method: &Method, path: &str, params: &Params) -> u64 {
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/depth") => {
            match params.get("limit").and_then(|l| l.parse::<u32>().ok()) {
                Some(0..=50) => 2,
                Some(51..=100) => 5,
                Some(101..=500) | None => 10,
                Some(_) => 20,
            }
        }
        ("POST", "/fapi/v1/order") => 0,
        ("POST", "/fapi/v1/batchOrders") => 5,
        (_, p) if p.ends_with("/positionRisk") || p.ends_with("/account") => 5,
        ("GET", "/fapi/v1/userTrades" | "/fapi/v1/allOrders") => 5,
        ("GET", "/eapi/v1/mark" | "/eapi/v1/position") => 5,
        ("GET", "/fapi/v1/openOrders") if !params.contains_key("symbol") => 40,
        _ => 1,
    }
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

/// A refused request: its HTTP status and Binance's code and message. Alone it is
/// an error response; inside a batch, one element of the answer array.
#[derive(Debug)]
pub(super) struct Reject(StatusCode, i64, String);

impl Reject {
    pub(super) fn response(self) -> Response {
        error(self.0, self.1, &self.2)
    }

    pub(super) fn json(&self) -> Value {
        json!({"code": self.1, "msg": self.2})
    }
}

pub(super) fn reject(status: StatusCode, code: i64, msg: &str) -> Reject {
    Reject(status, code, msg.to_owned())
}

pub(super) fn missing(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

fn exchange_info(state: &SimState) -> Value {
    let m = state.market.lock().expect("market lock");
    let symbols: Vec<Value> = m
        .specs
        .iter()
        .map(|s| {
            let delivery = s
                .delivery
                .and_then(|d| d.and_hms_opt(8, 0, 0))
                .map_or(4_133_404_800_000, |t| t.and_utc().timestamp_millis());
            let tick = s.tick.normalize();
            let step = s.step.normalize();
            json!({
                "symbol": s.symbol, "pair": s.pair, "contractType": s.contract_type,
                "deliveryDate": delivery, "onboardDate": 1_569_398_400_000i64, "status": "TRADING",
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": s.base, "quoteAsset": "USDT", "marginAsset": "USDT",
                "pricePrecision": tick.scale(), "quantityPrecision": step.scale(),
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
                "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
                "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick.to_string(), "maxPrice": "4529764", "tickSize": tick.to_string()},
                    {"filterType": "LOT_SIZE", "minQty": step.to_string(), "maxQty": "1000", "stepSize": step.to_string()},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": step.to_string(), "maxQty": "120", "stepSize": step.to_string()},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"}
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                "permissionSets": ["GRID", "COPY"]
            })
        })
        .collect();
    let w = state.cfg.weight_limit;
    json!({
        "timezone": "UTC", "serverTime": state.now_ms(), "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": w},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": state.cfg.orders_per_minute},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": state.cfg.orders_per_10s}
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": true, "autoAssetExchange": "-10000"}],
        "symbols": symbols
    })
}

fn depth(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500);
    if ![5, 10, 20, 50, 100, 500, 1000].contains(&limit) {
        return error(StatusCode::BAD_REQUEST, -1100, "Illegal characters found in parameter 'limit'; legal range is '5, 10, 20, 50, 100, 500, 1000'.");
    }
    let m = state.market.lock().expect("market lock");
    let Some(i) = m.specs.iter().position(|s| s.symbol == *symbol) else {
        return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    };
    state.stats.snapshots.fetch_add(1, Relaxed);
    let (spec, b) = (&m.specs[i], &m.books[i]);
    let level =
        |(p, q): (&i64, &i64)| json!([spec.price_of(*p).to_string(), spec.qty_of(*q).to_string()]);
    let t = state.now_ms();
    ok(json!({
        "lastUpdateId": b.last_id, "E": t, "T": t,
        "bids": b.bids.iter().rev().take(limit).map(level).collect::<Vec<_>>(),
        "asks": b.asks.iter().take(limit).map(level).collect::<Vec<_>>(),
    }))
}

/// Mark prices (the book's mid here) with the funding fields Binance sends beside
/// them: one object for `symbol`, else an array of every symbol.
fn premium_index(state: &SimState, p: &Params) -> Response {
    const EIGHT_HOURS: i64 = 8 * 3_600_000;
    let t = state.now_ms();
    let m = state.market.lock().expect("market lock");
    let row = |i: usize| {
        let (spec, b) = (&m.specs[i], &m.books[i]);
        let mark = spec.price_of(b.mid).to_string();
        json!({
            "symbol": spec.symbol, "markPrice": mark, "indexPrice": mark,
            "estimatedSettlePrice": mark, "lastFundingRate": "0.00010000",
            "interestRate": "0.00010000", "nextFundingTime": (t / EIGHT_HOURS + 1) * EIGHT_HOURS,
            "time": t,
        })
    };
    match p.get("symbol") {
        Some(symbol) => match m.specs.iter().position(|s| s.symbol == *symbol) {
            Some(i) => ok(row(i)),
            None => error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol."),
        },
        None => ok(Value::Array((0..m.specs.len()).map(row).collect())),
    }
}

fn listen_key(state: &SimState, method: &Method) -> Response {
    let ttl = state.cfg.listen_key_ttl;
    let mut a = state.account.lock().expect("account lock");
    let deadline = tokio::time::Instant::now() + ttl;
    match method.as_str() {
        "POST" => {
            // One key per account: an active key is returned and extended.
            let key = match a.listen_key.take() {
                Some((k, _)) => k,
                None => {
                    state.stats.listen_keys_created.fetch_add(1, Relaxed);
                    let n = state.next_key.fetch_add(1, Relaxed);
                    format!("simListenKey{n:04}{:x}", state.now_ms())
                }
            };
            a.listen_key = Some((key.clone(), deadline));
            ok(json!({"listenKey": key}))
        }
        "PUT" => match a.listen_key.as_mut() {
            Some((k, at)) => {
                *at = deadline;
                ok(json!({"listenKey": k.clone()}))
            }
            None => error(
                StatusCode::BAD_REQUEST,
                -1125,
                "This listenKey does not exist.",
            ),
        },
        _ => {
            a.listen_key = None;
            ok(json!({}))
        }
    }
}

/// What every row of a positionRisk answer shares: the cross wallet, each leg's
/// maintenance margin and unrealized PnL (for the others' terms of the liquidation
/// price), and the leverage per symbol.
struct Cross {
    wallet: Decimal,
    legs: BTreeMap<PositionKey, (Decimal, Decimal)>,
    leverage: BTreeMap<String, u32>,
    /// Symbols in isolated margin mode.
    isolated: std::collections::BTreeSet<String>,
}

fn cross(state: &SimState, held: &BTreeMap<PositionKey, Held>) -> Cross {
    let (wallet, leverage) = {
        let a = state.account.lock().expect("account lock");
        (a.wallet, a.leverage.clone())
    };
    let isolated = state.account.lock().expect("account lock").isolated.clone();
    let legs = held
        .iter()
        .filter_map(|(k, h)| {
            let brackets = state.brackets(&k.0)?;
            let mark = state.mark(&k.0)?;
            let mm = brackets.maintenance_margin(mark * h.amount);
            Some((k.clone(), (mm, (mark - h.entry) * h.amount)))
        })
        .collect();
    Cross {
        wallet,
        legs,
        leverage,
        isolated,
    }
}

fn position_row(state: &SimState, key: &PositionKey, held: Held, cross: &Cross, v2: bool) -> Value {
    let (symbol, side) = (key.0.as_str(), key.1);
    let Held {
        amount,
        entry,
        update_time,
    } = held;
    let mark = state.mark(symbol).unwrap_or(entry);
    let pnl = ((mark - entry) * amount).round_dp(8);
    let notional = (mark * amount).round_dp(8);
    let leverage = cross.leverage.get(symbol).copied().unwrap_or(20);
    let brackets = state.brackets(symbol);
    // Cross margin: every other leg's maintenance margin and PnL count.
    let (other_mm, other_pnl) = cross
        .legs
        .iter()
        .filter(|(k, _)| *k != key)
        .fold((Decimal::ZERO, Decimal::ZERO), |(m, u), (_, (mm, up))| {
            (m + mm, u + up)
        });
    // Isolated: the position stands alone on the margin it was opened with (the
    // simulator's isolated wallet is the initial margin at the entry).
    let isolated = cross.isolated.contains(symbol);
    let isolated_wallet = if isolated {
        (amount.abs() * entry / Decimal::from(leverage)).round_dp(8)
    } else {
        Decimal::ZERO
    };
    let input = if isolated {
        model::exchange::LiquidationInput {
            wallet: isolated_wallet,
            other_maintenance: Decimal::ZERO,
            other_unrealized: Decimal::ZERO,
            amount,
            entry,
        }
    } else {
        model::exchange::LiquidationInput {
            wallet: cross.wallet,
            other_maintenance: other_mm,
            other_unrealized: other_pnl,
            amount,
            entry,
        }
    };
    let liquidation = brackets
        .as_ref()
        .and_then(|b| model::exchange::liquidation_price(b, &input))
        .unwrap_or_default()
        .round_dp(8);
    // ADL quantile (0–4): the venue ranks profitable positions by PnL ratio × effective
    // leverage against other traders; alone, the simulator scores that product itself.
    let margin = (notional.abs() / Decimal::from(leverage)).max(Decimal::ONE);
    let adl = if pnl <= Decimal::ZERO {
        0
    } else {
        let score = pnl / margin * Decimal::from(leverage);
        1 + (score * Decimal::TWO)
            .floor()
            .min(Decimal::from(3))
            .to_u32()
            .unwrap_or(0)
    };
    let margin_type = if isolated { "isolated" } else { "cross" };
    let mut row = json!({
        "symbol": symbol, "positionSide": side, "positionAmt": amount.normalize().to_string(),
        "entryPrice": entry.normalize().to_string(), "breakEvenPrice": entry.normalize().to_string(),
        "markPrice": mark.to_string(), "unRealizedProfit": pnl.to_string(),
        "liquidationPrice": liquidation.normalize().to_string(),
        "isolatedMargin": (if isolated { isolated_wallet + pnl } else { Decimal::ZERO }).normalize().to_string(),
        "notional": notional.to_string(), "isolatedWallet": isolated_wallet.normalize().to_string(),
        "updateTime": update_time,
    });
    let extra = if v2 {
        let max_notional = brackets
            .as_ref()
            .map_or(Decimal::ZERO, |b| b.max_notional(leverage));
        json!({"leverage": leverage.to_string(), "maxNotionalValue": max_notional.normalize().to_string(),
               "marginType": margin_type, "isAutoAddMargin": "false"})
    } else {
        let im = (notional.abs() / Decimal::from(leverage))
            .round_dp(8)
            .to_string();
        let mm = brackets
            .as_ref()
            .map_or(Decimal::ZERO, |b| b.maintenance_margin(notional))
            .round_dp(8)
            .to_string();
        json!({"marginAsset": "USDT", "initialMargin": im, "maintMargin": mm, "positionInitialMargin": im,
               "openOrderInitialMargin": "0", "adl": adl, "bidNotional": "0", "askNotional": "0"})
    };
    if let (Some(r), Some(e)) = (row.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    row
}

/// (symbol, side) → leg, copied out of the lock, and whether hedge mode is on.
fn held_positions(state: &SimState) -> (BTreeMap<PositionKey, Held>, bool) {
    let a = state.account.lock().expect("account lock");
    (a.positions.clone(), a.dual_side)
}

/// v2: every symbol (both legs in hedge mode); v3: only held legs.
fn positions(state: &SimState, v2: bool) -> Value {
    let symbols: Vec<String> = {
        let m = state.market.lock().expect("market lock");
        m.specs.iter().map(|s| s.symbol.clone()).collect()
    };
    let (held, dual) = held_positions(state);
    let cross = cross(state, &held);
    let sides: &[&'static str] = if dual { &["LONG", "SHORT"] } else { &["BOTH"] };
    let rows = symbols
        .iter()
        .flat_map(|s| sides.iter().map(move |side| (s.clone(), *side)))
        .filter_map(|key| {
            let leg = held.get(&key).copied().unwrap_or_default();
            (v2 || !leg.amount.is_zero()).then(|| position_row(state, &key, leg, &cross, v2))
        })
        .collect();
    Value::Array(rows)
}

/// `POST /fapi/v1/positionSide/dual`: hedge mode on or off, refused while anything
/// is held or open (as the venue does).
fn dual_side(state: &SimState, p: &Params) -> Response {
    let want = match p.get("dualSidePosition").map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => return error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'dualSidePosition' was not sent, was empty/null, or malformed.",
        ),
    };
    let mut a = state.account.lock().expect("account lock");
    if a.dual_side == want {
        return error(
            StatusCode::BAD_REQUEST,
            -4059,
            "No need to change position side.",
        );
    }
    let busy = a.positions.values().any(|h| !h.amount.is_zero()) || !a.open.is_empty();
    if busy {
        return error(
            StatusCode::BAD_REQUEST,
            -4068,
            "Position side cannot be changed if there exists position.",
        );
    }
    a.dual_side = want;
    ok(json!({"code": 200, "msg": "success"}))
}

/// `POST /fapi/v1/marginType` (`ISOLATED` | `CROSSED`): refused while the symbol has a
/// position or open orders, as the venue does.
fn margin_type(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let want = match p.get("marginType").map(String::as_str) {
        Some("ISOLATED") => true,
        Some("CROSSED") => false,
        _ => return missing("marginType"),
    };
    if state.brackets(symbol).is_none() {
        return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    }
    let mut a = state.account.lock().expect("account lock");
    if a.isolated.contains(symbol) == want {
        return error(
            StatusCode::BAD_REQUEST,
            -4046,
            "No need to change margin type.",
        );
    }
    let busy = a
        .positions
        .iter()
        .any(|((s, _), h)| s == symbol && !h.amount.is_zero())
        || a.open_orders().any(|o| o.symbol == *symbol);
    if busy {
        return error(
            StatusCode::BAD_REQUEST,
            -4048,
            "Margin type cannot be changed if there exists position.",
        );
    }
    if want {
        a.isolated.insert(symbol.clone());
    } else {
        a.isolated.remove(symbol);
    }
    ok(json!({"code": 200, "msg": "success"}))
}

/// `GET /eapi/v1/mark`: every option, or the one named by `symbol`.
fn option_marks(state: &SimState, p: &Params) -> Response {
    let t = state.now_ms();
    let rows: Vec<Value> = state
        .options
        .iter()
        .filter(|o| p.get("symbol").is_none_or(|s| *s == o.symbol))
        .filter_map(|o| Some(options::mark_row(o, state.spot(&o.underlying)?, t)))
        .collect();
    if rows.is_empty() && p.contains_key("symbol") {
        return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    }
    ok(Value::Array(rows))
}

/// `GET /eapi/v1/position`: held options only.
fn option_positions(state: &SimState, p: &Params) -> Value {
    let (held, _) = held_positions(state);
    let t = state.now_ms();
    let rows = state
        .options
        .iter()
        .filter(|o| p.get("symbol").is_none_or(|s| *s == o.symbol))
        .filter_map(|o| {
            let Held {
                amount: qty, entry, ..
            } = held.get(&(o.symbol.clone(), "BOTH")).copied()?;
            let spot = state.spot(&o.underlying)?;
            (!qty.is_zero()).then(|| options::position_row(o, qty, entry, spot, t))
        })
        .collect();
    Value::Array(rows)
}

/// The cross-margin totals over the held futures: (wallet, unrealized profit,
/// initial margin at each symbol's leverage, maintenance margin by its brackets).
fn margin_totals(state: &SimState) -> (Decimal, Decimal, Decimal, Decimal) {
    let (held, _) = held_positions(state);
    let (wallet, leverage) = {
        let a = state.account.lock().expect("account lock");
        (a.wallet, a.leverage.clone())
    };
    let (mut upnl, mut initial, mut maint) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for ((s, _), leg) in &held {
        let (Some(brackets), Some(mark)) = (state.brackets(s), state.mark(s)) else {
            continue;
        };
        let notional = (mark * leg.amount).abs();
        upnl += ((mark - leg.entry) * leg.amount).round_dp(8);
        initial += notional / Decimal::from(leverage.get(s).copied().unwrap_or(20));
        maint += brackets.maintenance_margin(notional);
    }
    (wallet, upnl, initial.round_dp(8), maint.round_dp(8))
}

fn account(state: &SimState) -> Value {
    let (wallet, upnl, initial, maint) = margin_totals(state);
    let margin = wallet + upnl;
    let available = (margin - initial).max(Decimal::ZERO);
    json!({
        "feeTier": 0, "canTrade": true, "canDeposit": true, "canWithdraw": true, "multiAssetsMargin": false,
        "totalInitialMargin": initial.to_string(), "totalMaintMargin": maint.to_string(),
        "totalWalletBalance": wallet.to_string(), "totalUnrealizedProfit": upnl.to_string(),
        "totalMarginBalance": margin.to_string(), "totalPositionInitialMargin": initial.to_string(),
        "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": wallet.to_string(),
        "totalCrossUnPnl": upnl.to_string(), "availableBalance": available.to_string(),
        "maxWithdrawAmount": available.to_string(),
        "assets": balance(state),
        "positions": positions(state, false),
    })
}

fn balance(state: &SimState) -> Value {
    let (wallet, upnl, initial, maint) = margin_totals(state);
    let margin = wallet + upnl;
    let available = (margin - initial).max(Decimal::ZERO);
    json!([{
        "asset": "USDT", "walletBalance": wallet.to_string(), "unrealizedProfit": upnl.to_string(),
        "marginBalance": margin.to_string(), "maintMargin": maint.to_string(),
        "initialMargin": initial.to_string(), "positionInitialMargin": initial.to_string(),
        "openOrderInitialMargin": "0", "crossWalletBalance": wallet.to_string(),
        "crossUnPnl": upnl.to_string(), "availableBalance": available.to_string(),
        "maxWithdrawAmount": available.to_string(), "marginAvailable": true,
        "updateTime": state.now_ms(), "balance": wallet.to_string()
    }])
}

fn brackets(state: &SimState, symbol: Option<&String>) -> Value {
    let symbols: Vec<String> = {
        let m = state.market.lock().expect("market lock");
        m.specs.iter().map(|s| s.symbol.clone()).collect()
    };
    Value::Array(
        symbols
            .iter()
            .filter(|s| symbol.is_none_or(|x| x == *s))
            .filter_map(|s| {
                let tiers: Vec<Value> = state
                    .brackets(s)?
                    .tiers()
                    .iter()
                    .map(|b| {
                        let f = |d: Decimal| d.to_f64().unwrap_or_default();
                        json!({"bracket": b.bracket, "initialLeverage": b.max_leverage,
                               "notionalCap": f(b.cap), "notionalFloor": f(b.floor),
                               "maintMarginRatio": f(b.mmr), "cum": f(b.cum)})
                    })
                    .collect();
                Some(json!({"symbol": s, "brackets": tiers}))
            })
            .collect(),
    )
}
