//! Each command carried out on the engine, answered with the JS route's status and
//! body (js-gateway §4) — with the deliberate differences docs/trading/ lists.

use std::time::{Duration, Instant};

use database::commands;
use database::ledger::{self, AccountKind, AccountRow, NewAccount, PositionRow};
use database::orders::{self, OrderKind, OrderRow};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trading::balance::Reason;
use trading::command::{Command, Envelope, OrderSpec};
use trading::order::OrderState;
use trading::risk::AccountStatus;

use super::lanes::Step;
use super::reply::{storage, Reply};
use super::services::Services;
use engine::closing::{CloseAs, CloseError, Closed};
use engine::execution::{position_side, Executor, PlaceError, PlaceOrder};
use engine::risk_loop::num;

/// How long `trade` waits for its market order's fill before answering without it.
const FILL_WAIT: Duration = Duration::from_secs(5);

/// The market order a `trade` command asks for.
fn trade_order(account: &str, env: &Envelope, s: &OrderSpec) -> PlaceOrder {
    let origin = if env.source == "bot" { "BOT" } else { "MANUAL" };
    market_order(account, s, origin, Some(env.request_id.clone()))
}

/// `serverLatencyMs` in the body and the header.
fn with_latency(mut r: Reply, started: Instant) -> Reply {
    let ms = started.elapsed().as_millis() as u64;
    if let Value::Object(m) = &mut r.body {
        m.insert("serverLatencyMs".into(), ms.into());
    }
    r.headers = Some(json!({"X-Server-Latency-Ms": ms.to_string()}));
    r
}

/// Runs `cmd` in its account's lane. A `trade` or a close hands back what follows its
/// send — waiting for the fill and answering — to run outside the lane: the account's
/// next command (a kill switch above all) waits one venue round trip, not for a fill.
pub(super) async fn run(
    g: &Services,
    exec: &Executor,
    env: &Envelope,
    account: Option<&str>,
    cmd: Command,
) -> Step {
    let started = Instant::now();
    let account = account.unwrap_or_default().to_owned();
    let (g2, exec2) = (g.clone(), exec.clone());
    let origin = if env.source == "bot" { "BOT" } else { "MANUAL" };
    let place = |s: &OrderSpec, kind: OrderKind| PlaceOrder {
        kind,
        price: s.price,
        ..market_order(&account, s, origin, Some(env.request_id.clone()))
    };
    let latency = |r: Reply| with_latency(r, started);
    let reply = match cmd {
        Command::Trade(s) => {
            let p = trade_order(&account, env, &s);
            let o = match place_trade(exec, p).await {
                Ok(o) => o,
                Err(r) => return Step::Done(r),
            };
            return Step::Then(Box::pin(async move {
                with_latency(trade_answer(&g2, &exec2, o).await, started)
            }));
        }
        Command::Close { position_id } => {
            let sent = exec.close_sent(&account, &position_id).await;
            return Step::Then(Box::pin(async move {
                let closed = match sent {
                    Ok(c) => exec2.close_settled(c).await,
                    Err(e) => Err(e),
                };
                close_answer(&g2, &account, &position_id, closed).await
            }));
        }
        Command::BabysitterClose {
            position_id,
            close_price,
            reason,
        } => {
            let how = CloseAs {
                origin: "BOT",
                reason: Some(reason),
                fallback_price: Some(close_price),
                ..CloseAs::MANUAL
            };
            let sent = exec.close_sent_as(&account, &position_id, &how).await;
            return Step::Then(Box::pin(async move {
                let closed = match sent {
                    Ok(c) => exec2.close_settled(c).await,
                    Err(e) => Err(e),
                };
                babysitter_answer(close_answer(&g2, &account, &position_id, closed).await)
            }));
        }
        Command::AdminTakeover { position_id } => {
            let by = env.user_id.as_deref().unwrap_or("ADMIN");
            match exec.take_over_now(&account, &position_id, by).await {
                Ok(Some((t, price))) => Reply::ok(
                    200,
                    json!({"success": true, "positionId": position_id, "symbol": t.symbol,
                           "side": t.side.as_str(), "quantity": num(t.quantity),
                           "price": num(price), "realizedPnl": num(t.realized),
                           "newBalance": num(t.balance)}),
                ),
                Ok(None) => Reply::error("POSITION_NOT_FOUND", "Position not found"),
                Err(e) => close_error(e),
            }
        }
        Command::CloseAll => {
            // Every position's close is sent in the lane, one after another; their
            // fills are waited for outside it.
            let open = match ledger::open_positions(&g.pool, Some(&account)).await {
                Ok(p) => p,
                Err(e) => return Step::Done(storage(e)),
            };
            let mut sent = Vec::with_capacity(open.len());
            for p in open {
                let c = exec.close_sent(&account, &p.id).await;
                sent.push((p, c));
            }
            return Step::Then(Box::pin(async move {
                let total = sent.len();
                let mut results = Vec::with_capacity(total);
                let mut closed = 0;
                for (p, c) in sent {
                    let c = match c {
                        Ok(c) => exec2.close_settled(c).await,
                        Err(e) => Err(e),
                    };
                    let r = close_answer(&g2, &account, &p.id, c).await;
                    let success = r.status < 400;
                    closed += usize::from(success);
                    let mut item =
                        json!({"positionId": p.id, "symbol": p.symbol, "success": success});
                    if success {
                        // The JS item's `pnl`: the close's realized PnL net of its fee.
                        item["pnl"] = r.body["realizedPnl"].clone();
                    } else {
                        item["error"] = r.body["error"].clone();
                    }
                    results.push(item);
                }
                Reply::ok(
                    200,
                    json!({"closed": closed, "total": total, "results": results}),
                )
            }));
        }
        Command::Limit(s) => {
            let o = match exec.place(place(&s, OrderKind::Limit)).await {
                Ok(o) => o,
                Err(e) => return place_error(e).into(),
            };
            if let Some(r) = venue_rejected(&o) {
                return r.into();
            }
            order_placed(g, &o, json!({}));
            latency(Reply::ok(
                201,
                json!({"success": true, "order": order_json(&o)}),
            ))
        }
        Command::Scale(s) => {
            let legs = s
                .orders
                .iter()
                .map(|(price, quantity)| {
                    place(
                        &OrderSpec {
                            symbol: s.symbol.clone(),
                            side: s.side,
                            quantity: *quantity,
                            leverage: s.leverage,
                            price: Some(*price),
                            reduce_only: false,
                        },
                        OrderKind::Limit,
                    )
                })
                .collect();
            let placed = match exec.place_batch(legs).await {
                Ok(p) => p,
                Err(e) => return place_error(e).into(),
            };
            let total = placed.len();
            let mut results = Vec::with_capacity(total);
            let mut ok = 0;
            for (i, o) in placed.iter().enumerate() {
                let price = o.price.map_or(Value::Null, num);
                if o.order.state == OrderState::Rejected {
                    results.push(json!({"success": false, "price": price,
                                        "error": o.order.reject_message}));
                } else {
                    ok += 1;
                    order_placed(g, o, json!({"scaleIndex": i, "scaleTotal": total}));
                    results.push(json!({"success": true, "orderId": o.id, "price": price}));
                }
            }
            latency(Reply::ok(
                if ok > 0 { 201 } else { 400 },
                json!({"placed": ok, "failed": total - ok, "total": total, "results": results}),
            ))
        }
        Command::Basket(legs) => {
            // All the legs checked together before any is sent (across symbols).
            let all: Vec<PlaceOrder> = legs.iter().map(|l| place(l, OrderKind::Market)).collect();
            if let Err((symbol, e)) = exec.check_basket(&all).await {
                let mut r = place_error(e);
                if let Value::Object(m) = &mut r.body {
                    m.insert("symbol".into(), symbol.into());
                }
                return r.into();
            }
            let mut by_symbol: Vec<(String, Vec<PlaceOrder>)> = Vec::new();
            for l in &legs {
                let p = place(l, OrderKind::Market);
                match by_symbol.iter_mut().find(|(s, _)| *s == l.symbol) {
                    Some((_, v)) => v.push(p),
                    None => by_symbol.push((l.symbol.clone(), vec![p])),
                }
            }
            let mut results = Vec::new();
            let mut ok = 0;
            for (symbol, group) in by_symbol {
                match exec.place_batch(group).await {
                    Ok(placed) => {
                        for o in placed {
                            let fine = o.order.state != OrderState::Rejected;
                            ok += usize::from(fine);
                            results.push(json!({"symbol": symbol, "success": fine,
                                                "order": order_json(&o)}));
                        }
                    }
                    Err(e) => results.push(json!({"symbol": symbol, "success": false,
                                                  "error": e.to_string(), "code": e.code()})),
                }
            }
            let total = legs.len();
            latency(Reply::ok(
                if ok > 0 { 201 } else { 400 },
                json!({"success": ok > 0, "placed": ok, "failed": total - ok, "total": total,
                       "results": results}),
            ))
        }
        Command::CancelOrder { order_id } => match exec.cancel(&account, &order_id).await {
            Ok(_) => Reply::ok(200, json!({"success": true})),
            Err(CloseError::OrderNotOpen(_)) => {
                Reply::error("ORDER_NOT_OPEN", "Order is not pending")
            }
            Err(e) => close_error(e),
        },
        Command::CancelAllOrders => {
            let open = match orders::open_orders_of(&g.pool, &account, None).await {
                Ok(o) => o,
                Err(e) => return storage(e).into(),
            };
            let total = open.len();
            let mut cancelled = 0;
            for o in open {
                match exec.cancel(&account, &o.id).await {
                    Ok(_) | Err(CloseError::OrderNotOpen(_)) => cancelled += 1,
                    Err(e) => {
                        tracing::warn!(order = %o.id, error = %e, "cancel-all: one order not cancelled")
                    }
                }
            }
            Reply::ok(
                200,
                json!({"cancelled": cancelled, "failed": total - cancelled, "total": total}),
            )
        }
        Command::AccountCreate(a) => {
            if a.owner_user_id
                .as_deref()
                .is_some_and(|u| !ledger::is_uuid(u))
            {
                return Reply::error("INVALID_FIELD", "Invalid ownerUserId: must be a UUID").into();
            }
            let new = NewAccount {
                name: a.name,
                kind: if a.bot {
                    AccountKind::Bot
                } else {
                    AccountKind::User
                },
                user_id: a.owner_user_id,
                initial_balance: a.initial_balance,
                liquidation_mode: a.liquidation_mode,
                maintenance_rate: a.maintenance_rate.unwrap_or(Decimal::new(5, 3)),
            };
            match ledger::create_account(&g.pool, &new).await {
                Ok(row) => Reply::ok(201, account_json(&row)),
                Err(ledger::LedgerError::Sql(sqlx::Error::Database(d)))
                    if d.code().as_deref() == Some("23514") =>
                {
                    Reply::error("INVALID_FIELD", "Invalid account: a value is out of range")
                }
                Err(e) => storage(e),
            }
        }
        Command::AccountUpdate {
            name,
            liquidation_mode,
            maintenance_rate,
        } => {
            let r = ledger::update_account(
                &g.pool,
                &account,
                name.as_deref(),
                liquidation_mode,
                maintenance_rate,
            )
            .await;
            changed_account(exec, &account, r).await
        }
        Command::BalanceAdjust { amount, reason } => {
            match ledger::change_balance(&g.pool, &account, amount, Reason::AdminAdjust, None).await
            {
                Ok(c) => {
                    exec.book_changed(&account).await;
                    tracing::info!(account = %account, %amount, reason = %reason, "balance adjusted");
                    Reply::ok(
                        200,
                        json!({"success": true, "subAccountId": account, "before": num(c.before),
                               "newBalance": num(c.after), "change": num(c.change),
                               "absorbed": num(c.absorbed), "reason": reason}),
                    )
                }
                Err(e) => storage(e),
            }
        }
        Command::RiskRulesSet { global, rules } => {
            let target = (!global).then_some(account.as_str());
            match ledger::set_rules(&g.pool, target, &rules).await {
                Ok(r) => {
                    if global {
                        exec.forget_books();
                    } else {
                        exec.book_changed(&account).await;
                    }
                    Reply::ok(
                        200,
                        json!({"success": true, "global": global,
                               "subAccountId": target,
                               "rules": {"maxLeverage": num(r.max_leverage),
                                         "maxNotionalPerTrade": num(r.max_notional_per_trade),
                                         "maxTotalExposure": num(r.max_total_exposure),
                                         "maxSymbolExposure": r.max_symbol_exposure.map_or(Value::Null, num),
                                         "maxDailyLoss": r.max_daily_loss.map_or(Value::Null, num),
                                         "liquidationThreshold": num(r.liquidation_threshold)}}),
                    )
                }
                Err(ledger::LedgerError::AccountNotFound(_)) => {
                    trading::command::Rejected::account_not_found().into()
                }
                Err(e) => storage(e),
            }
        }
        Command::AccountFreeze | Command::AccountUnfreeze => {
            let to = if matches!(cmd, Command::AccountFreeze) {
                AccountStatus::Frozen
            } else {
                AccountStatus::Active
            };
            let r = ledger::set_status(&g.pool, &account, to).await;
            changed_account(exec, &account, r).await
        }
        Command::Validate(s) => validate(exec, &place(&s, OrderKind::Market)).await,
        Command::LimitClose { position_id, price } => {
            match exec.limit_close(&account, &position_id, price).await {
                Ok(o) => match venue_rejected(&o) {
                    Some(r) => r,
                    None => Reply::ok(201, json!({"success": true, "order": order_json(&o)})),
                },
                Err(CloseError::Desync {
                    exchange_side,
                    virtual_side,
                }) => Reply {
                    status: 400,
                    code: Some("POSITION_DESYNC"),
                    body: json!({"error": "Position desynced with exchange — no matching exchange position, order not sent",
                                 "desync": true, "exchangeSide": exchange_side, "virtualSide": virtual_side,
                                 "errors": [{"code": "POSITION_DESYNC", "message": "no matching exchange position"}]}),
                    headers: None,
                },
                Err(CloseError::Venue(_)) => Reply {
                    status: 503,
                    code: Some("EXCHANGE_ERROR"),
                    body: json!({"error": "Exchange sync check failed — order not sent to avoid bad trade",
                                 "desync": true,
                                 "errors": [{"code": "EXCHANGE_ERROR", "message": "exchange sync check failed"}]}),
                    headers: None,
                },
                Err(e) => close_error(e),
            }
        }
    };
    Step::Done(reply)
}

/// The JS validator's answer (§4.2): always 200, `valid` says; `computedValues`
/// on a refusal too (the numbers it was refused by).
pub(super) async fn validate(exec: &Executor, p: &PlaceOrder) -> Reply {
    let refusal = |code: &str, message: String| json!({"valid": false, "errors": [{"code": code, "message": message}]});
    let (numbers, mut body) = match exec.validate(p).await {
        Ok((n, Ok(()))) => (n, json!({"valid": true, "errors": []})),
        Ok((n, Err(r))) => (n, refusal(r.code(), r.to_string())),
        Err(PlaceError::Storage(e)) => return storage(e),
        Err(e) => (None, refusal(e.code(), e.to_string())),
    };
    if let Some(n) = numbers {
        body["computedValues"] = json!({"price": num(n.price), "notional": num(n.notional),
            "requiredMargin": num(n.required_margin), "availableBalance": num(n.available),
            "currentExposure": num(n.exposure_before), "exposureAfter": num(n.exposure_after),
            "equity": num(n.equity), "maintenanceMargin": num(n.maintenance),
            "marginUsageAfter": num(n.usage_after)});
    }
    Reply::ok(200, body)
}

/// `s` as a market order of `account`'s.
pub(super) fn market_order(
    account: &str,
    s: &OrderSpec,
    origin: &str,
    request_id: Option<String>,
) -> PlaceOrder {
    PlaceOrder {
        sub_account_id: account.to_owned(),
        symbol: s.symbol.clone(),
        side: s.side,
        kind: OrderKind::Market,
        quantity: s.quantity,
        price: None,
        leverage: s.leverage,
        reduce_only: s.reduce_only,
        origin: origin.to_owned(),
        request_id,
        position_id: None,
        close_reason: None,
    }
}

async fn changed_account(
    exec: &Executor,
    account: &str,
    r: Result<Option<AccountRow>, ledger::LedgerError>,
) -> Reply {
    match r {
        Ok(Some(row)) => {
            exec.book_changed(account).await;
            Reply::ok(200, account_json(&row))
        }
        Ok(None) => trading::command::Rejected::account_not_found().into(),
        Err(e) => storage(e),
    }
}

/// Places a trade's order; `Err` is the answer when it was refused.
async fn place_trade(exec: &Executor, p: PlaceOrder) -> Result<OrderRow, Reply> {
    let o = exec.place_trade(p).await.map_err(place_error)?;
    match venue_rejected(&o) {
        Some(r) => Err(r),
        None => Ok(o),
    }
}

/// A placed trade's answer, after its fill (up to [`FILL_WAIT`]).
async fn trade_answer(g: &Services, exec: &Executor, o: OrderRow) -> Reply {
    let o = match exec.settle(&o.client_order_id, FILL_WAIT).await {
        Ok(Some(settled)) => settled,
        Ok(None) => o,
        Err(e) => return storage(e),
    };
    if let Some(r) = venue_rejected(&o) {
        return r;
    }
    let trades = match commands::trades_of_order(&g.pool, &o.client_order_id).await {
        Ok(t) => t,
        Err(e) => return storage(e),
    };
    let position = match ledger::open_positions(&g.pool, Some(&o.sub_account_id)).await {
        Ok(ps) => ps
            .iter()
            .find(|p| p.symbol == o.symbol)
            .map_or(Value::Null, position_json),
        Err(e) => return storage(e),
    };
    let trade = trades
        .as_array()
        .and_then(|t| t.last())
        .cloned()
        .unwrap_or(Value::Null);
    let mut body = json!({"success": true, "order": order_json(&o), "position": position,
                          "trade": trade, "trades": trades, "pending": !o.order.state.is_final()});
    // A flip: the fill closed the opposite position first (JS `flipped`).
    let closed = trades.as_array().into_iter().flatten().find(|t| {
        !position.is_null() && !t["realizedPnl"].is_null() && t["positionId"] != position["id"]
    });
    if let Some(t) = closed {
        if let Some(id) = t["positionId"].as_str() {
            match commands::position_row_json(&g.pool, id).await {
                Ok(Some(p)) if p["status"] != "OPEN" => {
                    body["flipped"] = json!({"closedPosition": p, "closePnl": t["realizedPnl"]});
                }
                Ok(_) => {}
                Err(e) => return storage(e),
            }
        }
    }
    Reply::ok(201, body)
}

/// A close's JS body: `{success, positionId, order, trade, realizedPnl, newBalance}`
/// (`realizedPnl` net of the close's fee, `null` while its fill is not booked), or
/// the virtual close's `{…, source: "virtual_only"}`.
async fn close_answer(
    g: &Services,
    account: &str,
    position_id: &str,
    closed: Result<Closed, CloseError>,
) -> Reply {
    let closed = match closed {
        Ok(c) => c,
        Err(e) => return close_error(e),
    };
    let balance = match ledger::account(&g.pool, account).await {
        Ok(a) => a.map_or(Value::Null, |a| num(a.current_balance)),
        Err(e) => return storage(e),
    };
    match closed {
        Closed::Order(o) => {
            if let Some(r) = venue_rejected(&o) {
                return r;
            }
            let trades = match commands::trades_of_order(&g.pool, &o.client_order_id).await {
                Ok(t) => t,
                Err(e) => return storage(e),
            };
            let booked: Vec<&Value> = trades.as_array().into_iter().flatten().collect();
            let realized = booked
                .iter()
                .filter(|t| t["realizedPnl"].is_number())
                .filter_map(|t| t["realizedPnl"].to_string().parse::<Decimal>().ok())
                .reduce(|a, b| a + b)
                .map_or(Value::Null, num);
            Reply::ok(
                200,
                json!({"success": true, "positionId": position_id, "order": order_json(&o),
                       "trade": booked.last().map_or(Value::Null, |t| (*t).clone()),
                       "realizedPnl": realized, "newBalance": balance}),
            )
        }
        Closed::Virtual { price } => {
            let realized = match commands::position_row_json(&g.pool, position_id).await {
                Ok(p) => p.map_or(Value::Null, |p| p["realizedPnl"].clone()),
                Err(e) => return storage(e),
            };
            Reply::ok(
                200,
                json!({"success": true, "positionId": position_id, "price": num(price),
                       "realizedPnl": realized, "newBalance": balance,
                       "source": "virtual_only", "reason": "no_exchange_position"}),
            )
        }
    }
}

/// The JS babysitter route's body: the close's, with `closePrice`, `exchangeOrderId`
/// and `source` (`exchange`, or `virtual_no_exchange` when the exchange did not hold
/// the position and it was closed in the book).
fn babysitter_answer(mut r: Reply) -> Reply {
    if r.status >= 400 {
        return r;
    }
    let b = &mut r.body;
    let virtual_only = b["source"] == "virtual_only";
    let (price, order_id, source) = if virtual_only {
        (b["price"].clone(), Value::Null, "virtual_no_exchange")
    } else {
        let price = match &b["trade"]["price"] {
            Value::Null => b["order"]["price"].clone(),
            p => p.clone(),
        };
        (price, b["order"]["exchangeOrderId"].clone(), "exchange")
    };
    if let Value::Object(m) = b {
        m.insert("closePrice".into(), price);
        m.insert("exchangeOrderId".into(), order_id);
        m.insert("source".into(), source.into());
    }
    r
}

fn close_error(e: CloseError) -> Reply {
    match e {
        CloseError::PositionNotFound => Reply::error("POSITION_NOT_FOUND", "Position not found"),
        CloseError::OrderNotFound => Reply::error("ORDER_NOT_FOUND", "Order not found"),
        CloseError::OrderNotOpen(s) => Reply::error("ORDER_NOT_OPEN", format!("Order is {s}")),
        CloseError::Place(p) => place_error(p),
        CloseError::Storage(e) => storage(e),
        CloseError::Venue(v) => Reply::error("EXCHANGE_ERROR", format!("Exchange error: {v}")),
        e @ CloseError::Desync { .. } => Reply::error("POSITION_DESYNC", e.to_string()),
    }
}

/// The JS validator's refusal body: `{success:false, errors, error, reasons}`.
fn refused(code: &'static str, message: String) -> Reply {
    Reply {
        status: trading::command::status_of(code),
        code: Some(code),
        body: json!({"success": false, "errors": [{"code": code, "message": message}],
                     "error": message, "reasons": [message]}),
        headers: None,
    }
}

pub(super) fn place_error(e: PlaceError) -> Reply {
    let code = e.code();
    match e {
        PlaceError::AccountNotFound => trading::command::Rejected::account_not_found().into(),
        PlaceError::Storage(s) => storage(s),
        PlaceError::Journal(j) => {
            tracing::error!(error = %j, "order journal not written: the order was not sent");
            Reply::error(
                code,
                "Internal error: the order could not be recorded; it was not sent",
            )
        }
        PlaceError::StateUnknown {
            order_id,
            client_order_id,
            error,
        } => {
            tracing::error!(order = %client_order_id, %error, "order sent, its state unknown");
            let mut r = Reply::error(
                code,
                "Order state unknown: the order was sent and is being resolved with the venue",
            );
            r.body["orderId"] = order_id.into();
            r.body["clientOrderId"] = client_order_id.into();
            r
        }
        PlaceError::RateLimited(b) => {
            let mut r = refused(code, e.to_string());
            r.body["retryAfterMs"] = b.retry_after_ms.into();
            r.headers =
                Some(json!({"Retry-After": (b.retry_after_ms.max(0) / 1000 + 1).to_string()}));
            r
        }
        PlaceError::ClockDrift { .. }
        | PlaceError::SymbolDesync(_)
        | PlaceError::Refused(_)
        | PlaceError::Price(_)
        | PlaceError::UnknownSymbol(_) => refused(code, e.to_string()),
    }
}

/// The venue said no: its code mapped as the JS did (js-gateway §6), its message kept.
fn venue_rejected(o: &OrderRow) -> Option<Reply> {
    if o.order.state != OrderState::Rejected {
        return None;
    }
    let code = match o.order.reject_code.as_deref() {
        Some("-4164") => "EXCHANGE_MIN_NOTIONAL",
        Some("-2019") => "EXCHANGE_MARGIN_INSUFFICIENT",
        Some("-1111") => "EXCHANGE_PRECISION",
        Some("-1116") => "EXCHANGE_INVALID_ORDER",
        Some("-4003") => "EXCHANGE_QTY_TOO_SMALL",
        _ => "EXCHANGE_REJECTED",
    };
    let message = format!(
        "Exchange error: {}",
        o.order.reject_message.as_deref().unwrap_or("rejected")
    );
    let mut r = refused(code, message);
    r.body["order"] = order_json(o);
    Some(r)
}

fn order_placed(g: &Services, o: &OrderRow, extra: Value) {
    let mut data = json!({"subAccountId": o.sub_account_id, "symbol": o.symbol,
                          "side": position_side(o.side), "price": o.price.map_or(Value::Null, num),
                          "quantity": num(o.order.quantity),
                          "notional": o.price.map_or(Value::Null, |p| num(p * o.order.quantity)),
                          "orderId": o.id, "exchangeOrderId": o.order.venue_id});
    if let (Value::Object(m), Value::Object(e)) = (&mut data, extra) {
        m.extend(e);
    }
    g.outbox
        .event("order_placed", data, chrono::Utc::now().timestamp_millis());
}

pub(super) fn order_json(o: &OrderRow) -> Value {
    json!({"id": o.id, "subAccountId": o.sub_account_id, "clientOrderId": o.client_order_id,
           "symbol": o.symbol, "side": position_side(o.side), "type": o.kind,
           "price": o.price.map_or(Value::Null, num), "quantity": num(o.order.quantity),
           "filledQuantity": num(o.order.filled), "leverage": num(o.leverage),
           "reduceOnly": o.reduce_only, "status": o.order.state.js_status(),
           "state": o.order.state.as_str(),
           "exchangeOrderId": o.order.venue_id, "rejectCode": o.order.reject_code,
           "rejectMessage": o.order.reject_message})
}

fn position_json(p: &PositionRow) -> Value {
    let q = &p.position;
    json!({"id": p.id, "subAccountId": p.sub_account_id, "symbol": p.symbol,
           "side": q.side.as_str(), "entryPrice": num(q.entry_price), "quantity": num(q.quantity),
           "notional": num(q.notional()), "leverage": num(q.leverage), "margin": num(q.margin()),
           "status": "OPEN", "babysitterExcluded": p.babysitter_excluded,
           "openedAt": p.opened_at.to_rfc3339()})
}

pub(super) fn account_json(a: &AccountRow) -> Value {
    json!({"id": a.id, "userId": a.user_id, "name": a.name, "type": a.kind,
           "initialBalance": num(a.initial_balance), "currentBalance": num(a.current_balance),
           "status": a.status.as_str(), "liquidationMode": a.liquidation_mode.as_str(),
           "maintenanceRate": num(a.maintenance_rate)})
}
