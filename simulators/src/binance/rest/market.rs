//! Public market data: exchange info, depth, premium index.

use std::sync::atomic::Ordering::Relaxed;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::binance::reply::{error, missing, ok, Params};
use crate::binance::state::SimState;

pub(super) fn exchange_info(state: &SimState) -> Value {
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

pub(super) fn depth(state: &SimState, p: &Params) -> Response {
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
pub(super) fn premium_index(state: &SimState, p: &Params) -> Response {
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
