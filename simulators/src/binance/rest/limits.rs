//! Binance's request weight and order-count limits as the simulator enforces them.

use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::binance::reply::{error, Params};
use crate::binance::state::{BinanceSimConfig, Limiter, SimState};

pub(crate) fn roll_window(l: &mut Limiter, cfg: &BinanceSimConfig, now: i64) {
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

pub(super) enum Admit {
    Ok(u64),
    TooMany { retry_after_s: u64 },
    Banned { until_ms: i64 },
}

/// What a request adds to the ORDERS counters: (10 s, 1 min). A batch counts 5 on
/// the 10 s limit and 1 on the minute.
pub(super) fn order_count(method: &Method, path: &str) -> Option<(u64, u64)> {
    match (method.as_str(), path) {
        ("POST" | "PUT", "/fapi/v1/order") => Some((1, 1)),
        ("POST" | "PUT", "/fapi/v1/batchOrders") => Some((5, 1)),
        _ => None,
    }
}

/// Counts an order request; the counters after it, or the -1015 refusal.
pub(super) fn count_orders(state: &SimState, add: (u64, u64)) -> Result<(u64, u64), Box<Response>> {
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

pub(super) fn admit(state: &SimState, weight: u64) -> Admit {
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
pub(super) fn weight(method: &Method, path: &str, params: &Params) -> u64 {
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
