//! The simulator's control endpoints (`/sim/…`): positions, faults, the clock,
//! prices, the book, the market switch, liquidations.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::binance::failures::{OrderFault, Selector, StreamFault};
use crate::binance::state::{set_position, side_name, SimState};
use crate::kit;

/// `POST /sim/position` `{"symbol": "BTCUSDT", "amount": "0.5", "side": "BOTH",
/// "quiet": false}`: opens, changes or (amount 0) closes a futures leg or an option
/// position, as a fill or an expiry would. `side` is `BOTH` (default), `LONG` or
/// `SHORT`; `quiet` skips the ACCOUNT_UPDATE (as if it was lost), so only a REST
/// read finds the change. Options never stream one (their user stream is not
/// simulated): the next `/eapi/v1/position` read shows it.
pub(super) async fn position_change(
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
        crate::binance::state::store_position(&state, symbol, side, amount, entry);
    } else {
        set_position(&state, symbol, side, amount, entry, "ORDER");
    }
    axum::Json(json!({"symbol": symbol, "side": side, "amount": amount.normalize().to_string()}))
        .into_response()
}

/// Which orders a `/sim/` fault applies to: `{"next": n}` (default 1) or
/// `{"client_order_id": "..."}`.
pub(super) fn selector(body: &Value) -> Selector {
    match body.get("client_order_id").and_then(Value::as_str) {
        Some(c) => Selector::ClientId(c.to_owned()),
        None => Selector::Next(body.get("next").and_then(Value::as_u64).unwrap_or(1) as u32),
    }
}

/// `POST /sim/order-fault` `{"fault": "accept_then_timeout" | "accept_then_503" |
/// "accept_then_1007" | "reject_before_engine", "next": n | "client_order_id": s}`.
pub(super) async fn order_fault(
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
pub(super) async fn stream_fault(
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
pub(super) async fn clock(
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
pub(super) async fn price_move(
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
    if crate::binance::moves::move_price(&state, symbol, ticks) {
        (StatusCode::OK, "ok").into_response()
    } else {
        kit::sim_error(StatusCode::NOT_FOUND, "unknown symbol")
    }
}

/// `POST /sim/level` `{"symbol": "BTCUSDT", "side": "ask", "price": "60010",
/// "qty": "5"}`: adds, resizes or (qty 0) removes one level of liquidity.
pub(super) async fn level(
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
    if crate::binance::moves::set_level(&state, symbol, bid, price, qty) {
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
pub(super) async fn market_switch(
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
pub(super) async fn liquidate(
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
    if crate::binance::liquidation::force_close(&state, symbol, leg, adl) {
        (StatusCode::OK, "ok").into_response()
    } else {
        kit::sim_error(StatusCode::NOT_FOUND, "no position there")
    }
}
