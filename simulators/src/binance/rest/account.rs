//! The account: listen keys, positions (v2 and v3), position mode, margin type,
//! options, balances and brackets.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::binance::options;
use crate::binance::reply::{error, missing, ok, Params};
use crate::binance::state::{Held, PositionKey, SimState};

pub(super) fn listen_key(state: &SimState, method: &Method) -> Response {
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
pub(super) struct Cross {
    wallet: Decimal,
    legs: BTreeMap<PositionKey, (Decimal, Decimal)>,
    leverage: BTreeMap<String, u32>,
    /// Symbols in isolated margin mode.
    isolated: std::collections::BTreeSet<String>,
}

pub(super) fn cross(state: &SimState, held: &BTreeMap<PositionKey, Held>) -> Cross {
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

pub(super) fn position_row(
    state: &SimState,
    key: &PositionKey,
    held: Held,
    cross: &Cross,
    v2: bool,
) -> Value {
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
pub(super) fn held_positions(state: &SimState) -> (BTreeMap<PositionKey, Held>, bool) {
    let a = state.account.lock().expect("account lock");
    (a.positions.clone(), a.dual_side)
}

/// v2: every symbol (both legs in hedge mode); v3: only held legs.
pub(super) fn positions(state: &SimState, v2: bool) -> Value {
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
pub(super) fn dual_side(state: &SimState, p: &Params) -> Response {
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
pub(super) fn margin_type(state: &SimState, p: &Params) -> Response {
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
pub(super) fn option_marks(state: &SimState, p: &Params) -> Response {
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
pub(super) fn option_positions(state: &SimState, p: &Params) -> Value {
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
pub(super) fn margin_totals(state: &SimState) -> (Decimal, Decimal, Decimal, Decimal) {
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

pub(super) fn account(state: &SimState) -> Value {
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

pub(super) fn balance(state: &SimState) -> Value {
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

pub(super) fn brackets(state: &SimState, symbol: Option<&String>) -> Value {
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
