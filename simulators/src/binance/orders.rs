//! Orders on the simulated venue: placement (the venue's checks, then matching against
//! the book: fills per level, fees, positions and the wallet), queries, cancels,
//! modifies, batches, order and trade history, and resting orders filling as the
//! market trades through them. The rules are the venue's; the arithmetic is
//! [`matching`]'s. Events are collected under the locks and published after them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::http::StatusCode;
use axum::response::Response;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::failures::StreamFault;
use super::market::{SimBook, SymbolSpec};
use super::matching::{self, Leg, Side, Tif};
use super::reply::{error, missing, ok, Params, Reject};
use super::state::{Account, Held, Market, Order, SimState, Trade};

use super::admission::{admit, bad, mandatory, marks, parse_new_order, NewOrder};

/// Trades kept for `userTrades` (the oldest go first).
const MAX_TRADES: usize = 100_000;

/// What a request or a market step produced, published once the locks are released.
/// An order's events carry the stream fault bound to it, if any.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    user: Vec<(Option<StreamFault>, String)>,
    market: Vec<(String, String)>,
}

impl Outbox {
    /// An event of order `o`, subject to the stream fault bound to it.
    pub(super) fn order(&mut self, state: &SimState, o: &Order, payload: String) {
        let fault = state
            .failures
            .lock()
            .expect("failures lock")
            .stream_fault(&o.client_id);
        self.user.push((fault, payload));
    }

    pub(super) fn account(&mut self, payload: String) {
        self.user.push((None, payload));
    }

    pub(super) fn publish(self, state: &SimState) {
        for (stream, payload) in self.market {
            state.publish_market(stream, payload);
        }
        let mut reordered = Vec::new();
        for (fault, payload) in self.user {
            match fault {
                None => state.publish_user(payload),
                Some(StreamFault::Drop) => {}
                Some(StreamFault::Duplicate) => {
                    state.publish_user(payload.clone());
                    state.publish_user(payload);
                }
                Some(StreamFault::Delay(wait)) => state.publish_user_later(payload, wait),
                Some(StreamFault::Reorder) => reordered.push(payload),
            }
        }
        for payload in reordered.into_iter().rev() {
            state.publish_user(payload);
        }
    }
}

pub(super) fn is_open(o: &Order) -> bool {
    matches!(o.status, "NEW" | "PARTIALLY_FILLED")
}

fn avg_price(o: &Order) -> Decimal {
    if o.executed.is_zero() {
        Decimal::ZERO
    } else {
        (o.cum_quote / o.executed).round_dp(8)
    }
}

pub(super) fn order_json(o: &Order, with_time: bool) -> Value {
    let mut v = json!({
        "orderId": o.id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
        "price": o.price.normalize().to_string(), "avgPrice": avg_price(o).normalize().to_string(),
        "origQty": o.qty.normalize().to_string(), "executedQty": o.executed.normalize().to_string(),
        "cumQty": o.executed.normalize().to_string(),
        "cumQuote": o.cum_quote.normalize().to_string(),
        "timeInForce": o.tif, "type": o.kind, "origType": o.kind, "reduceOnly": o.reduce_only,
        "closePosition": false, "side": o.side, "positionSide": o.position_side, "stopPrice": "0",
        "workingType": "CONTRACT_PRICE", "priceProtect": false, "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "updateTime": o.update_time,
    });
    if with_time {
        v["time"] = json!(o.time);
    }
    v
}

pub(super) fn trade_json(t: &Trade) -> Value {
    json!({
        "buyer": t.side == Side::Buy, "commission": t.commission.normalize().to_string(),
        "commissionAsset": "USDT", "id": t.id, "maker": t.maker, "orderId": t.order_id,
        "price": t.price.normalize().to_string(), "qty": t.qty.normalize().to_string(),
        "quoteQty": (t.price * t.qty).normalize().to_string(),
        "realizedPnl": t.realized.normalize().to_string(), "side": t.side.as_str(),
        "positionSide": t.position_side, "symbol": t.symbol, "time": t.time,
    })
}

/// ORDER_TRADE_UPDATE for `o` after `exec` (NEW, TRADE, CANCELED, EXPIRED, AMENDMENT).
pub(super) fn order_update(o: &Order, exec: &str, trade: Option<&Trade>, t: i64) -> String {
    let zero = Decimal::ZERO;
    let (last_qty, last_price, trade_id, fee, realized, maker) =
        trade.map_or((zero, zero, 0, zero, zero, false), |tr| {
            (
                tr.qty,
                tr.price,
                tr.id,
                tr.commission,
                tr.realized,
                tr.maker,
            )
        });
    format!(
        r#"{{"e":"ORDER_TRADE_UPDATE","E":{t},"T":{t},"o":{{"s":"{}","c":"{}","S":"{}","o":"{}","f":"{}","q":"{}","p":"{}","ap":"{}","sp":"0","x":"{exec}","X":"{}","i":{},"l":"{}","z":"{}","L":"{}","N":"USDT","n":"{}","T":{t},"t":{trade_id},"b":"0","a":"0","m":{maker},"R":{},"wt":"CONTRACT_PRICE","ot":"{}","ps":"{}","cp":false,"rp":"{}","pP":false,"si":0,"ss":0,"V":"EXPIRE_MAKER","pm":"NONE","gtd":0,"er":"0"}}}}"#,
        o.symbol,
        o.client_id,
        o.side,
        o.kind,
        o.tif,
        o.qty.normalize(),
        o.price.normalize(),
        avg_price(o).normalize(),
        o.status,
        o.id,
        last_qty.normalize(),
        o.executed.normalize(),
        last_price.normalize(),
        fee.normalize(),
        o.reduce_only,
        o.kind,
        o.position_side,
        realized.normalize(),
    )
}

/// ACCOUNT_UPDATE (reason ORDER) with the wallet and the legs of `symbol`.
pub(super) fn account_update(a: &Account, symbol: &str, mark: Decimal, t: i64) -> String {
    let legs: Vec<String> = a
        .positions
        .iter()
        .filter(|((s, _), _)| s == symbol)
        .map(|((s, side), h)| {
            let up = ((mark - h.entry) * h.amount).round_dp(8);
            let mt = if a.isolated.contains(s) { "isolated" } else { "cross" };
            format!(
                r#"{{"s":"{s}","pa":"{}","ep":"{}","bep":"{}","cr":"0","up":"{}","mt":"{mt}","iw":"0","ps":"{side}"}}"#,
                h.amount.normalize(),
                h.entry.normalize(),
                h.entry.normalize(),
                up.normalize()
            )
        })
        .collect();
    let w = a.wallet.normalize();
    format!(
        r#"{{"e":"ACCOUNT_UPDATE","E":{t},"T":{t},"a":{{"m":"ORDER","B":[{{"a":"USDT","wb":"{w}","cw":"{w}","bc":"0"}}],"P":[{}]}}}}"#,
        legs.join(",")
    )
}

impl Account {
    /// Inserts or replaces `order`, keeping the open-order and client-id indexes right.
    pub(super) fn store(&mut self, order: Order) {
        if is_open(&order) {
            self.open.insert(order.id);
        } else {
            self.open.remove(&order.id);
        }
        self.client_ids.insert(order.client_id.clone(), order.id);
        self.orders.insert(order.id, order);
    }

    pub(super) fn open_orders(&self) -> impl Iterator<Item = &Order> {
        self.open.iter().filter_map(|id| self.orders.get(id))
    }

    /// The latest order carrying `client_id`.
    pub(super) fn by_client_id(&self, client_id: &str) -> Option<&Order> {
        self.orders.get(self.client_ids.get(client_id)?)
    }

    pub(super) fn leverage_of(&self, symbol: &str) -> u32 {
        self.leverage.get(symbol).copied().unwrap_or(20)
    }
}

/// `POST /fapi/v1/order` (and each element of a batch, and a triggered algo order).
pub(super) fn place(state: &SimState, p: &Params) -> Result<Value, Reject> {
    let req = parse_new_order(p)?;
    let mut out = Outbox::default();
    let placed = {
        let mut m = state.market.lock().expect("market lock");
        let marks = marks(&m);
        let Market { specs, books, .. } = &mut *m;
        let Some(i) = specs.iter().position(|s| s.symbol == req.symbol) else {
            return Err(bad(-1121, "Invalid symbol."));
        };
        let mut a = state.account.lock().expect("account lock");
        execute(
            state,
            &mut a,
            &specs[i],
            &mut books[i],
            &marks,
            req,
            &mut out,
        )
    };
    out.publish(state);
    placed
}

/// `order` takes up to `lots` from `book` within `limit` as a taker: the book's diff
/// and one fill per level.
#[allow(clippy::too_many_arguments)]
fn take_liquidity(
    state: &SimState,
    a: &mut Account,
    spec: &SymbolSpec,
    book: &mut SimBook,
    order: &mut Order,
    limit: Option<i64>,
    lots: i64,
    out: &mut Outbox,
) {
    let side = Side::parse(&order.side).unwrap_or(Side::Buy);
    let t = state.now_ms();
    let taken = matching::take(book, side, limit, lots);
    if taken.fills.is_empty() {
        return;
    }
    let (bids, asks) = match side {
        Side::Buy => (Vec::new(), taken.changed.clone()),
        Side::Sell => (taken.changed.clone(), Vec::new()),
    };
    let diff = book.set_levels(bids, asks);
    out.market.push(super::state::depth_stream(spec, &diff, t));
    for &(ticks, l) in &taken.fills {
        fill(
            state,
            a,
            order,
            spec.price_of(ticks),
            spec.qty_of(l),
            false,
            t,
            out,
        );
    }
}

/// Admits `req`, records it, and matches it.
fn execute(
    state: &SimState,
    a: &mut Account,
    spec: &SymbolSpec,
    book: &mut SimBook,
    marks: &BTreeMap<String, Decimal>,
    req: NewOrder,
    out: &mut Outbox,
) -> Result<Value, Reject> {
    let admitted = admit(a, spec, book, marks, &req)?;
    a.next_order_id += 1;
    let id = a.next_order_id;
    let t = state.now_ms();
    let mut order = Order {
        id,
        client_id: req.client_id.unwrap_or_else(|| format!("sim{id}")),
        symbol: spec.symbol.clone(),
        side: req.side.as_str().to_owned(),
        position_side: admitted.position_side,
        kind: if req.market { "MARKET" } else { "LIMIT" }.to_owned(),
        tif: match req.tif {
            Tif::Gtc => "GTC",
            Tif::Ioc => "IOC",
            Tif::Fok => "FOK",
            Tif::Gtx => "GTX",
        }
        .to_owned(),
        qty: req.qty,
        price: req.price,
        executed: Decimal::ZERO,
        cum_quote: Decimal::ZERO,
        status: "NEW",
        reduce_only: req.reduce_only,
        time: t,
        update_time: t,
    };
    state.stats.orders.fetch_add(1, Relaxed);
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    state.stats.last_order_unix_ns.store(unix_ns, Relaxed);
    let ack = order_json(&order, false);
    state
        .failures
        .lock()
        .expect("failures lock")
        .bind_stream_fault(&order.client_id);
    out.order(state, &order, order_update(&order, "NEW", None, t));
    take_liquidity(
        state,
        a,
        spec,
        book,
        &mut order,
        admitted.limit,
        admitted.take,
        out,
    );
    if is_open(&order) && !admitted.rest {
        order.status = "EXPIRED";
        out.order(state, &order, order_update(&order, "EXPIRED", None, t));
    }
    if !order.executed.is_zero() {
        out.account(account_update(a, &spec.symbol, admitted.mark, t));
    }
    let result = order_json(&order, false);
    a.store(order);
    Ok(if req.result { result } else { ack })
}

/// Books one fill of `order`: position, wallet (realized PnL less the fee), the trade
/// record and its TRADE event.
#[allow(clippy::too_many_arguments)]
fn fill(
    state: &SimState,
    a: &mut Account,
    order: &mut Order,
    price: Decimal,
    qty: Decimal,
    maker: bool,
    t: i64,
    out: &mut Outbox,
) {
    let rate = if maker {
        state.cfg.maker_fee
    } else {
        state.cfg.taker_fee
    };
    let how = How {
        maker,
        rate,
        exec: "TRADE",
    };
    book_fill(state, a, order, price, qty, how, t, out);
}

/// How a fill is booked: maker or taker, its fee rate, and the execution type the
/// stream reports (TRADE; CALCULATED for a liquidation).
#[derive(Debug, Clone, Copy)]
pub(super) struct How {
    pub(super) maker: bool,
    pub(super) rate: Decimal,
    pub(super) exec: &'static str,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn book_fill(
    state: &SimState,
    a: &mut Account,
    order: &mut Order,
    price: Decimal,
    qty: Decimal,
    how: How,
    t: i64,
    out: &mut Outbox,
) {
    let How { maker, rate, exec } = how;
    let side = Side::parse(&order.side).unwrap_or(Side::Buy);
    let key = (order.symbol.clone(), order.position_side);
    let held = a.positions.get(&key).copied().unwrap_or_default();
    let before = Leg {
        amount: held.amount,
        entry: held.entry,
    };
    let (leg, realized) = matching::apply_fill(before, side.sign() * qty, price);
    let commission = matching::commission(price, qty, rate);
    a.wallet += realized - commission;
    a.positions.insert(
        key,
        Held {
            amount: leg.amount,
            entry: leg.entry,
            update_time: t,
        },
    );
    order.executed += qty;
    order.cum_quote += price * qty;
    order.status = if order.executed >= order.qty {
        "FILLED"
    } else {
        "PARTIALLY_FILLED"
    };
    order.update_time = t;
    a.next_trade_id += 1;
    let trade = Trade {
        id: a.next_trade_id,
        order_id: order.id,
        symbol: order.symbol.clone(),
        side,
        position_side: order.position_side,
        price,
        qty,
        commission,
        realized,
        maker,
        time: t,
    };
    out.order(state, order, order_update(order, exec, Some(&trade), t));
    if a.trades.len() >= MAX_TRADES {
        a.trades.pop_front();
    }
    a.trades.push_back(trade);
}

/// After the book of `spec` moved: every resting order the market now trades through
/// fills (as maker, at its price) up to the configured liquidity per tick.
pub(super) fn on_book_step(
    state: &SimState,
    a: &mut Account,
    spec: &SymbolSpec,
    book: &SimBook,
    out: &mut Outbox,
) {
    let ids: Vec<u64> = a
        .open_orders()
        .filter(|o| o.symbol == spec.symbol && o.kind == "LIMIT")
        .map(|o| o.id)
        .collect();
    let t = state.now_ms();
    let mut filled_any = false;
    for id in ids {
        let Some(mut order) = a.orders.get(&id).cloned() else {
            continue;
        };
        let (Some(side), Some(limit)) = (Side::parse(&order.side), spec.ticks(order.price)) else {
            continue;
        };
        let remaining = ((order.qty - order.executed) / spec.step)
            .trunc()
            .try_into()
            .unwrap_or(0i64);
        let mut lots =
            matching::resting_fill(book, side, limit, remaining, state.cfg.resting_liquidity);
        if order.reduce_only {
            // Never past flat: what would open a position expires instead.
            let held = a
                .positions
                .get(&(order.symbol.clone(), order.position_side))
                .copied()
                .unwrap_or_default();
            let reduces =
                !held.amount.is_zero() && held.amount.is_sign_positive() == (side == Side::Sell);
            let cap: i64 = if reduces {
                (held.amount.abs() / spec.step)
                    .trunc()
                    .try_into()
                    .unwrap_or(0)
            } else {
                0
            };
            if cap == 0 {
                order.status = "EXPIRED";
                order.update_time = t;
                out.order(state, &order, order_update(&order, "EXPIRED", None, t));
                a.store(order);
                continue;
            }
            lots = lots.min(cap);
        }
        if lots == 0 {
            continue;
        }
        let price = order.price;
        fill(state, a, &mut order, price, spec.qty_of(lots), true, t, out);
        filled_any = true;
        a.store(order);
    }
    if filled_any {
        out.account(account_update(a, &spec.symbol, spec.price_of(book.mid), t));
    }
}

pub(super) fn find(state: &SimState, p: &Params) -> Option<Order> {
    let a = state.account.lock().expect("account lock");
    if let Some(id) = p.get("orderId").and_then(|i| i.parse::<u64>().ok()) {
        return a.orders.get(&id).cloned();
    }
    let cid = p.get("origClientOrderId")?;
    a.by_client_id(cid).cloned()
}

/// Ends an open order with `status` (CANCELED, EXPIRED) and says so on the stream.
pub(super) fn finish(state: &SimState, id: u64, status: &'static str) -> Option<Order> {
    let t = state.now_ms();
    let o = {
        let mut a = state.account.lock().expect("account lock");
        let mut o = a.orders.get(&id).filter(|o| is_open(o))?.clone();
        o.status = status;
        o.update_time = t;
        a.store(o.clone());
        o
    };
    let mut out = Outbox::default();
    out.order(state, &o, order_update(&o, status, None, t));
    out.publish(state);
    Some(o)
}

/// `PUT /fapi/v1/order`: a new price and quantity for an open LIMIT order, keeping its
/// ids and fills (AMENDMENT). A new price that crosses executes at once, as a taker.
pub(super) fn modify(state: &SimState, p: &Params) -> Result<Value, Reject> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let qty = get("quantity")
        .and_then(|q| q.parse::<Decimal>().ok())
        .ok_or_else(|| mandatory("quantity"))?;
    let price = get("price")
        .and_then(|q| q.parse::<Decimal>().ok())
        .ok_or_else(|| mandatory("price"))?;
    let symbol = get("symbol").ok_or_else(|| mandatory("symbol"))?;
    let mut out = Outbox::default();
    let modified = {
        let mut m = state.market.lock().expect("market lock");
        let Market { specs, books, .. } = &mut *m;
        let Some(i) = specs.iter().position(|s| s.symbol == symbol) else {
            return Err(bad(-1121, "Invalid symbol."));
        };
        let (spec, book) = (&specs[i], &mut books[i]);
        let mut a = state.account.lock().expect("account lock");
        let found = match p.get("orderId").and_then(|i| i.parse::<u64>().ok()) {
            Some(id) => a.orders.get(&id).cloned(),
            None => get("origClientOrderId").and_then(|cid| a.by_client_id(cid).cloned()),
        };
        let Some(mut order) = found.filter(|o| o.symbol == symbol) else {
            return Err(bad(-2013, "Order does not exist."));
        };
        if !is_open(&order) {
            return Err(bad(-5027, "No need to modify the order."));
        }
        if order.kind != "LIMIT" {
            return Err(bad(-4158, "Only LIMIT orders can be modified."));
        }
        let limit = spec
            .ticks(price)
            .ok_or_else(|| bad(-4014, "Price not increased by tick size."))?;
        if !(qty / spec.step).fract().is_zero() {
            return Err(bad(
                -1111,
                "Precision is over the maximum defined for this asset.",
            ));
        }
        if qty <= order.executed {
            return Err(bad(-4003, "Quantity less than or equal to zero."));
        }
        if qty == order.qty && price == order.price {
            return Err(bad(-5027, "No need to modify the order."));
        }
        let t = state.now_ms();
        order.qty = qty;
        order.price = price;
        order.update_time = t;
        out.order(state, &order, order_update(&order, "AMENDMENT", None, t));
        let remaining: i64 = ((qty - order.executed) / spec.step)
            .trunc()
            .try_into()
            .unwrap_or(0);
        let before = order.executed;
        take_liquidity(
            state,
            &mut a,
            spec,
            book,
            &mut order,
            Some(limit),
            remaining,
            &mut out,
        );
        if order.executed > before {
            out.account(account_update(&a, symbol, spec.price_of(book.mid), t));
        }
        let v = order_json(&order, false);
        a.store(order);
        v
    };
    out.publish(state);
    Ok(modified)
}

/// Cancels every open order on `symbol`.
pub(super) fn cancel_all(state: &SimState, symbol: &str) {
    let ids: Vec<u64> = {
        let a = state.account.lock().expect("account lock");
        a.open_orders()
            .filter(|o| o.symbol == symbol)
            .map(|o| o.id)
            .collect()
    };
    for id in ids {
        finish(state, id, "CANCELED");
    }
}

/// `POST /fapi/v1/countdownCancelAll`: unless called again within `countdownTime` ms,
/// every open order on the symbol is cancelled (0 turns the switch off).
pub(super) fn countdown_cancel_all(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let Some(ms) = p.get("countdownTime").and_then(|t| t.parse::<i64>().ok()) else {
        return missing("countdownTime");
    };
    if ms < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            -1102,
            "countdownTime must not be negative.",
        );
    }
    let mut c = state.countdowns.lock().expect("countdowns lock");
    if ms == 0 {
        c.remove(symbol);
    } else {
        c.insert(symbol.clone(), state.now_ms() + ms);
    }
    ok(json!({"symbol": symbol, "countdownTime": ms.to_string()}))
}

pub(super) fn cancel(state: &SimState, p: &Params) -> Response {
    match find(state, p).and_then(|o| finish(state, o.id, "CANCELED")) {
        Some(o) => ok(order_json(&o, false)),
        None => error(StatusCode::BAD_REQUEST, -2011, "Unknown order sent."),
    }
}
