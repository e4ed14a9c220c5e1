//! Conditional orders after Binance's Algo Service migration: STOP, STOP_MARKET,
//! TAKE_PROFIT, TAKE_PROFIT_MARKET and TRAILING_STOP_MARKET live on
//! `/fapi/v1/algoOrder` (the plain order endpoint answers -4120). On every mark
//! tick an open algo order whose trigger is crossed places its order through the
//! ordinary order path and becomes FINISHED with that order's id; each change is an
//! `ALGO_UPDATE` on the user stream.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::orders::place;
use super::reply::{error, missing, ok, reject, Params, Reject};
use super::state::{AlgoOrder, SimState};

const KINDS: [&str; 5] = [
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
];

fn is_open(a: &AlgoOrder) -> bool {
    a.status == "NEW"
}

fn algo_json(a: &AlgoOrder) -> Value {
    let trailing = a.kind == "TRAILING_STOP_MARKET";
    json!({
        "algoId": a.id, "clientAlgoId": a.client_id, "algoType": "CONDITIONAL",
        "orderType": a.kind, "symbol": a.symbol, "side": a.side, "positionSide": "BOTH",
        "timeInForce": a.tif, "quantity": a.qty.normalize().to_string(), "algoStatus": a.status,
        "actualOrderId": a.actual_order_id.map_or(String::new(), |i| i.to_string()),
        "actualPrice": "0", "triggerPrice": a.trigger.normalize().to_string(),
        "price": a.price.normalize().to_string(), "icebergQuantity": null,
        "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": a.working_type,
        "priceMatch": "NONE", "closePosition": false, "priceProtect": false,
        "reduceOnly": a.reduce_only,
        "activatePrice": if trailing { a.trigger.normalize().to_string() } else { String::new() },
        "callbackRate": if trailing { a.callback.normalize().to_string() } else { String::new() },
        "createTime": a.time, "updateTime": a.update_time, "triggerTime": a.trigger_time,
        "goodTillDate": 0,
    })
}

fn publish(state: &SimState, a: &AlgoOrder) {
    let t = state.now_ms();
    let event = json!({
        "e": "ALGO_UPDATE", "T": t, "E": t,
        "o": {
            "caid": a.client_id, "aid": a.id, "at": "CONDITIONAL", "o": a.kind, "s": a.symbol,
            "S": a.side, "ps": "BOTH", "f": a.tif, "q": a.qty.normalize().to_string(),
            "X": a.status,
            "ai": a.actual_order_id.map_or(String::new(), |i| i.to_string()),
            "ap": "0", "aq": "0", "act": "0", "tp": a.trigger.normalize().to_string(),
            "p": a.price.normalize().to_string(), "V": "EXPIRE_MAKER", "wt": a.working_type,
            "pm": "NONE", "cp": false, "pP": false, "R": a.reduce_only, "tt": a.trigger_time,
            "gtd": 0, "rm": "",
        }
    });
    state.publish_user(event.to_string());
}

pub(super) fn route(state: &SimState, method: &Method, path: &str, p: &Params) -> Response {
    match (method.as_str(), path) {
        ("POST", "/fapi/v1/algoOrder") => create(state, p).map_or_else(Reject::response, ok),
        ("GET", "/fapi/v1/algoOrder") => match find(state, p) {
            Some(a) => ok(algo_json(&a)),
            None => error(StatusCode::BAD_REQUEST, -2013, "Order does not exist."),
        },
        ("DELETE", "/fapi/v1/algoOrder") => {
            match find(state, p).and_then(|a| cancel(state, a.id)) {
                Some(a) => ok(
                    json!({"algoId": a.id, "clientAlgoId": a.client_id, "code": "200", "msg": "success"}),
                ),
                None => error(StatusCode::BAD_REQUEST, -2011, "Unknown order sent."),
            }
        }
        ("GET", "/fapi/v1/openAlgoOrders" | "/fapi/v1/allAlgoOrders") => {
            let open_only = path.ends_with("openAlgoOrders");
            let a = state.account.lock().expect("account lock");
            let rows: Vec<Value> = a
                .algos
                .values()
                .filter(|o| !open_only || is_open(o))
                .filter(|o| p.get("symbol").is_none_or(|s| *s == o.symbol))
                .map(algo_json)
                .collect();
            ok(Value::Array(rows))
        }
        ("DELETE", "/fapi/v1/algoOpenOrders") => {
            let Some(symbol) = p.get("symbol") else {
                return missing("symbol");
            };
            let ids: Vec<u64> = {
                let a = state.account.lock().expect("account lock");
                a.algos
                    .values()
                    .filter(|o| is_open(o) && o.symbol == *symbol)
                    .map(|o| o.id)
                    .collect()
            };
            for id in ids {
                cancel(state, id);
            }
            ok(json!({"code": 200, "msg": "The operation of cancel all open order is done."}))
        }
        _ => error(StatusCode::NOT_FOUND, -5000, "Path not found"),
    }
}

fn find(state: &SimState, p: &Params) -> Option<AlgoOrder> {
    let a = state.account.lock().expect("account lock");
    if let Some(id) = p.get("algoId").and_then(|i| i.parse::<u64>().ok()) {
        return a.algos.get(&id).cloned();
    }
    let cid = p.get("clientAlgoId")?;
    a.algos
        .values()
        .rev()
        .find(|o| o.client_id == *cid)
        .cloned()
}

fn cancel(state: &SimState, id: u64) -> Option<AlgoOrder> {
    let a = {
        let mut acct = state.account.lock().expect("account lock");
        let a = acct.algos.get_mut(&id).filter(|a| is_open(a))?;
        a.status = "CANCELED";
        a.update_time = state.now_ms();
        a.clone()
    };
    publish(state, &a);
    Some(a)
}

fn create(state: &SimState, p: &Params) -> Result<Value, Reject> {
    let bad = |code, msg: &str| Err(reject(StatusCode::BAD_REQUEST, code, msg));
    let dec = |k: &str| p.get(k).and_then(|v| v.parse::<Decimal>().ok());
    if p.get("algoType").map(String::as_str) != Some("CONDITIONAL") {
        return bad(
            -1102,
            "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.",
        );
    }
    let (Some(symbol), Some(side), Some(kind)) = (p.get("symbol"), p.get("side"), p.get("type"))
    else {
        return bad(
            -1102,
            "Mandatory parameter 'symbol, side, type' was not sent, was empty/null, or malformed.",
        );
    };
    if state.mark(symbol).is_none() || state.option(symbol).is_some() {
        return bad(-1121, "Invalid symbol.");
    }
    if !matches!(side.as_str(), "BUY" | "SELL") {
        return bad(-1117, "Invalid side.");
    }
    if !KINDS.contains(&kind.as_str()) {
        return bad(-1116, "Invalid orderType.");
    }
    let Some(qty) = dec("quantity").filter(|q| *q > Decimal::ZERO) else {
        return bad(-4003, "Quantity less than or equal to zero.");
    };
    let trailing = kind == "TRAILING_STOP_MARKET";
    let mark = state.mark(symbol).unwrap_or_default();
    let (trigger, callback) = if trailing {
        let Some(rate) =
            dec("callbackRate").filter(|r| *r >= Decimal::new(1, 1) && *r <= Decimal::TEN)
        else {
            return bad(-2007, "Invalid callBack rate.");
        };
        (dec("activatePrice").unwrap_or(mark), rate)
    } else {
        let Some(t) = dec("triggerPrice").filter(|t| *t > Decimal::ZERO) else {
            return bad(
                -1102,
                "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.",
            );
        };
        (t, Decimal::ZERO)
    };
    let limit = matches!(kind.as_str(), "STOP" | "TAKE_PROFIT");
    let price = match (limit, dec("price")) {
        (true, Some(price)) => price,
        (true, None) => {
            return bad(
                -1102,
                "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
            )
        }
        (false, _) => Decimal::ZERO,
    };
    if !trailing && fires(kind, side, trigger, mark) {
        return bad(-2021, "Order would immediately trigger.");
    }
    let t = state.now_ms();
    let a = {
        let mut acct = state.account.lock().expect("account lock");
        if let Some(cid) = p.get("clientAlgoId") {
            if acct
                .algos
                .values()
                .any(|o| is_open(o) && o.client_id == *cid)
            {
                return bad(-4116, "ClientOrderId is duplicated.");
            }
        }
        acct.next_algo_id += 1;
        let id = acct.next_algo_id;
        let a = AlgoOrder {
            id,
            client_id: p
                .get("clientAlgoId")
                .cloned()
                .unwrap_or_else(|| format!("simalgo{id}")),
            symbol: symbol.clone(),
            side: side.clone(),
            kind: kind.clone(),
            qty,
            trigger,
            price,
            callback,
            extreme: mark,
            tif: p
                .get("timeInForce")
                .cloned()
                .unwrap_or_else(|| "GTC".into()),
            reduce_only: p.get("reduceOnly").map(String::as_str) == Some("true"),
            working_type: p
                .get("workingType")
                .cloned()
                .unwrap_or_else(|| "CONTRACT_PRICE".into()),
            status: "NEW",
            actual_order_id: None,
            time: t,
            update_time: t,
            trigger_time: 0,
        };
        acct.algos.insert(id, a.clone());
        a
    };
    publish(state, &a);
    Ok(algo_json(&a))
}

/// Whether a stop or take-profit fires at `mark`. A stop buys on the way up and
/// sells on the way down; a take-profit the other way round.
fn fires(kind: &str, side: &str, trigger: Decimal, mark: Decimal) -> bool {
    let stop = kind.starts_with("STOP");
    match (stop, side) {
        (true, "BUY") | (false, "SELL") => mark >= trigger,
        _ => mark <= trigger,
    }
}

/// Moves trailing stops and fires every crossed trigger; called on each mark tick.
pub(super) fn on_marks(state: &SimState) {
    // Marks first: the market lock is never taken under the account lock.
    let symbols: BTreeSet<String> = {
        let acct = state.account.lock().expect("account lock");
        acct.algos
            .values()
            .filter(|a| is_open(a))
            .map(|a| a.symbol.clone())
            .collect()
    };
    let marks: BTreeMap<String, Decimal> = symbols
        .into_iter()
        .filter_map(|s| Some((s.clone(), state.mark(&s)?)))
        .collect();
    let due: Vec<AlgoOrder> = {
        let mut acct = state.account.lock().expect("account lock");
        let mut due = Vec::new();
        for a in acct.algos.values_mut().filter(|a| is_open(a)) {
            let Some(&mark) = marks.get(&a.symbol) else {
                continue;
            };
            let hit = if a.kind == "TRAILING_STOP_MARKET" {
                let back = a.callback / Decimal::ONE_HUNDRED;
                if a.side == "SELL" {
                    a.extreme = a.extreme.max(mark);
                    a.extreme >= a.trigger && mark <= a.extreme * (Decimal::ONE - back)
                } else {
                    a.extreme = a.extreme.min(mark);
                    a.extreme <= a.trigger && mark >= a.extreme * (Decimal::ONE + back)
                }
            } else {
                fires(&a.kind, &a.side, a.trigger, mark)
            };
            if hit {
                a.status = "TRIGGERING";
                due.push(a.clone());
            }
        }
        due
    };
    for a in due {
        let limit = matches!(a.kind.as_str(), "STOP" | "TAKE_PROFIT");
        let mut p: Params = [
            ("symbol", a.symbol.clone()),
            ("side", a.side.clone()),
            ("type", if limit { "LIMIT" } else { "MARKET" }.to_owned()),
            ("quantity", a.qty.to_string()),
            ("reduceOnly", a.reduce_only.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if limit {
            p.insert("price".into(), a.price.to_string());
            p.insert("timeInForce".into(), a.tif.clone());
        }
        let placed = place(state, &p).ok();
        let t = state.now_ms();
        let done = {
            let mut acct = state.account.lock().expect("account lock");
            let Some(o) = acct.algos.get_mut(&a.id) else {
                continue;
            };
            o.actual_order_id = placed
                .as_ref()
                .and_then(|v| v.get("orderId"))
                .and_then(Value::as_u64);
            o.status = if o.actual_order_id.is_some() {
                "FINISHED"
            } else {
                "REJECTED"
            };
            o.trigger_time = t;
            o.update_time = t;
            o.clone()
        };
        publish(state, &done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::{BinanceSim, BinanceSimConfig};

    #[tokio::test]
    async fn a_crossed_trigger_places_its_order_and_finishes() {
        let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let state = sim.state.clone();
        let before = sim.positions()["BTCUSDT"];
        let mark = state.mark("BTCUSDT").unwrap();
        let params = |kind: &str, trigger: Decimal| -> Params {
            [
                ("algoType", "CONDITIONAL".to_owned()),
                ("symbol", "BTCUSDT".into()),
                ("side", "BUY".into()),
                ("type", kind.into()),
                ("quantity", "0.25".into()),
                ("triggerPrice", trigger.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
        // At the mark a buy stop would fire at once: refused, as the venue does.
        let refused = create(&state, &params("STOP_MARKET", mark)).unwrap_err();
        assert_eq!(refused.json()["code"], -2021);
        let placed = create(&state, &params("STOP_MARKET", mark * Decimal::TWO)).unwrap();
        let id = placed["algoId"].as_u64().unwrap();
        on_marks(&state);
        assert_eq!(find_id(&state, id).status, "NEW");
        // The market runs through the trigger.
        state
            .account
            .lock()
            .unwrap()
            .algos
            .get_mut(&id)
            .unwrap()
            .trigger = mark / Decimal::TWO;
        on_marks(&state);
        let done = find_id(&state, id);
        assert_eq!(done.status, "FINISHED");
        let order = done.actual_order_id.expect("an order was placed");
        let o = state.account.lock().unwrap().orders[&order].clone();
        assert_eq!((o.kind.as_str(), o.status), ("MARKET", "FILLED"));
        assert_eq!(sim.positions()["BTCUSDT"], before + Decimal::new(25, 2));
        sim.stop();
    }

    fn find_id(state: &SimState, id: u64) -> AlgoOrder {
        state.account.lock().unwrap().algos[&id].clone()
    }

    #[test]
    fn stops_and_take_profits_fire_on_the_right_side() {
        let d = |x: i64| Decimal::from(x);
        assert!(fires("STOP_MARKET", "SELL", d(100), d(99)));
        assert!(!fires("STOP_MARKET", "SELL", d(100), d(101)));
        assert!(fires("STOP", "BUY", d(100), d(100)));
        assert!(fires("TAKE_PROFIT_MARKET", "SELL", d(100), d(101)));
        assert!(!fires("TAKE_PROFIT", "BUY", d(100), d(101)));
    }
}
