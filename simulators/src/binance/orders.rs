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
use super::matching::{self, Leg, Plan, Side, Tif};
use super::rest::{error, missing, ok, reject, Params, Reject};
use super::{side_name, Account, Held, Market, Order, SimState};

/// Open orders per symbol (`MAX_NUM_ORDERS`).
pub(super) const MAX_OPEN_ORDERS: usize = 200;
/// Trades kept for `userTrades` (the oldest go first).
const MAX_TRADES: usize = 100_000;
/// The `MIN_NOTIONAL` filter, in USDT.
const MIN_NOTIONAL: i64 = 5;

/// One fill, as `userTrades` and ORDER_TRADE_UPDATE report it.
#[derive(Debug, Clone)]
pub(super) struct Trade {
    pub id: u64,
    pub order_id: u64,
    pub symbol: String,
    pub side: Side,
    pub position_side: &'static str,
    pub price: Decimal,
    pub qty: Decimal,
    pub commission: Decimal,
    pub realized: Decimal,
    pub maker: bool,
    pub time: i64,
}

/// What a request or a market step produced, published once the locks are released.
/// An order's events carry the stream fault bound to it, if any.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    user: Vec<(Option<StreamFault>, String)>,
    market: Vec<(String, String)>,
}

impl Outbox {
    /// An event of order `o`, subject to the stream fault bound to it.
    fn order(&mut self, state: &SimState, o: &Order, payload: String) {
        let fault = state
            .failures
            .lock()
            .expect("failures lock")
            .stream_fault(&o.client_id);
        self.user.push((fault, payload));
    }

    fn account(&mut self, payload: String) {
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

fn trade_json(t: &Trade) -> Value {
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
fn order_update(o: &Order, exec: &str, trade: Option<&Trade>, t: i64) -> String {
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

/// The latest mark of every futures symbol: its book's mid.
fn marks(m: &Market) -> BTreeMap<String, Decimal> {
    m.specs
        .iter()
        .zip(&m.books)
        .map(|(s, b)| (s.symbol.clone(), s.price_of(b.mid)))
        .collect()
}

/// ACCOUNT_UPDATE (reason ORDER) with the wallet and the legs of `symbol`.
fn account_update(a: &Account, symbol: &str, mark: Decimal, t: i64) -> String {
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

/// Margin free for new positions: wallet + unrealized − initial margin of positions
/// and open orders, at each symbol's leverage.
fn available(a: &Account, marks: &BTreeMap<String, Decimal>) -> Decimal {
    let lev = |s: &str| Decimal::from(a.leverage_of(s));
    let mut free = a.wallet;
    for ((s, _), h) in &a.positions {
        let Some(&mark) = marks.get(s) else { continue };
        free += (mark - h.entry) * h.amount;
        free -= (mark * h.amount).abs() / lev(s);
    }
    for o in a.open_orders() {
        let price = if o.price.is_zero() {
            marks.get(&o.symbol).copied().unwrap_or_default()
        } else {
            o.price
        };
        free -= price * (o.qty - o.executed) / lev(&o.symbol);
    }
    free
}

/// A new order's parameters, checked against what needs no venue state.
#[derive(Debug)]
struct NewOrder {
    symbol: String,
    side: Side,
    market: bool,
    tif: Tif,
    qty: Decimal,
    price: Decimal,
    reduce_only: bool,
    position_side: Option<&'static str>,
    client_id: Option<String>,
    result: bool,
}

fn bad(code: i64, msg: &str) -> Reject {
    reject(StatusCode::BAD_REQUEST, code, msg)
}

fn mandatory(name: &str) -> Reject {
    bad(
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

/// `^[\.A-Z\:/a-z0-9_-]{1,36}$`, the venue's client order id rule.
fn valid_client_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/_-".contains(&b))
}

fn parse_new_order(p: &Params) -> Result<NewOrder, Reject> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let symbol = get("symbol").ok_or_else(|| mandatory("symbol"))?;
    let side = get("side").ok_or_else(|| mandatory("side"))?;
    let kind = get("type").ok_or_else(|| mandatory("type"))?;
    let side = Side::parse(side).ok_or_else(|| bad(-1117, "Invalid side."))?;
    let market = match kind {
        "MARKET" => true,
        "LIMIT" => false,
        k if k.starts_with("STOP")
            || k.starts_with("TAKE_PROFIT")
            || k == "TRAILING_STOP_MARKET" =>
        {
            return Err(bad(-4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."));
        }
        _ => return Err(bad(-1116, "Invalid orderType.")),
    };
    let qty = get("quantity")
        .and_then(|q| q.parse::<Decimal>().ok())
        .ok_or_else(|| mandatory("quantity"))?;
    if qty <= Decimal::ZERO {
        return Err(bad(-4003, "Quantity less than or equal to zero."));
    }
    let (tif, price) = if market {
        (Tif::Gtc, Decimal::ZERO)
    } else {
        let price = get("price")
            .and_then(|q| q.parse::<Decimal>().ok())
            .ok_or_else(|| mandatory("price"))?;
        let tif = get("timeInForce").ok_or_else(|| mandatory("timeInForce"))?;
        let tif = Tif::parse(tif).ok_or_else(|| bad(-1115, "Invalid timeInForce."))?;
        if price <= Decimal::ZERO {
            return Err(bad(-4001, "Price less than 0."));
        }
        (tif, price)
    };
    let client_id = get("newClientOrderId").map(str::to_owned);
    if client_id.as_deref().is_some_and(|c| !valid_client_id(c)) {
        return Err(bad(-4015, "Client order id is not valid."));
    }
    let position_side = match get("positionSide") {
        None => None,
        Some(s) => Some(side_name(s).ok_or_else(|| bad(-4006, "Invalid position side."))?),
    };
    let reduce_only = match get("reduceOnly") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(bad(
                -1130,
                "Data sent for parameter 'reduceOnly' is not valid.",
            ))
        }
    };
    let result = match get("newOrderRespType") {
        None | Some("ACK") => false,
        Some("RESULT") => true,
        Some(_) => {
            return Err(bad(
                -1130,
                "Data sent for parameter 'newOrderRespType' is not valid.",
            ))
        }
    };
    Ok(NewOrder {
        symbol: symbol.to_owned(),
        side,
        market,
        tif,
        qty,
        price,
        reduce_only,
        position_side,
        client_id,
        result,
    })
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

/// An order that passed the venue's checks, and what matching will do with it.
#[derive(Debug)]
struct Admitted {
    position_side: &'static str,
    /// The limit in ticks; `None` for a market order.
    limit: Option<i64>,
    mark: Decimal,
    /// Lots to take now, and whether the remainder rests.
    take: i64,
    rest: bool,
}

/// The symbol's filters: step and tick, the percent-price band, the minimum notional.
/// Returns the limit in ticks and the price the notional is judged at.
fn filters(
    spec: &SymbolSpec,
    mark: Decimal,
    req: &NewOrder,
) -> Result<(Option<i64>, Decimal), Reject> {
    if !(req.qty / spec.step).fract().is_zero() {
        return Err(bad(
            -1111,
            "Precision is over the maximum defined for this asset.",
        ));
    }
    if req.market {
        if !req.reduce_only && req.qty * mark < Decimal::from(MIN_NOTIONAL) {
            return Err(min_notional());
        }
        return Ok((None, mark));
    }
    let limit = spec
        .ticks(req.price)
        .ok_or_else(|| bad(-4014, "Price not increased by tick size."))?;
    let up = (mark * Decimal::new(105, 2)).round_dp(spec.tick.scale());
    let down = (mark * Decimal::new(95, 2)).round_dp(spec.tick.scale());
    if req.side == Side::Buy && req.price > up {
        return Err(bad(
            -4016,
            &format!("Limit price can't be higher than {up}."),
        ));
    }
    if req.side == Side::Sell && req.price < down {
        return Err(bad(
            -4024,
            &format!("Limit price can't be lower than {down}."),
        ));
    }
    if !req.reduce_only && req.qty * req.price < Decimal::from(MIN_NOTIONAL) {
        return Err(min_notional());
    }
    Ok((Some(limit), req.price))
}

fn min_notional() -> Reject {
    bad(
        -4164,
        &format!("Order's notional must be no smaller than {MIN_NOTIONAL} (unless you choose reduce only)."),
    )
}

/// The venue's checks, in its order, and the matching plan: the order is refused
/// (nothing recorded) or admitted.
fn admit(
    a: &Account,
    spec: &SymbolSpec,
    book: &SimBook,
    marks: &BTreeMap<String, Decimal>,
    req: &NewOrder,
) -> Result<Admitted, Reject> {
    let position_side = match (req.position_side, a.dual_side) {
        (None | Some("BOTH"), false) => "BOTH",
        (Some(leg @ ("LONG" | "SHORT")), true) => leg,
        _ => {
            return Err(bad(
                -4061,
                "Order's position side does not match user's setting.",
            ))
        }
    };
    if req.reduce_only && a.dual_side {
        return Err(bad(-1106, "Parameter 'reduceonly' sent when not required."));
    }
    let mark = marks.get(&spec.symbol).copied().unwrap_or_default();
    let (limit, reference) = filters(spec, mark, req)?;
    if let Some(cid) = &req.client_id {
        if a.open_orders().any(|o| o.client_id == *cid) {
            return Err(bad(-4116, "ClientOrderId is duplicated."));
        }
    }
    if a.open_orders().filter(|o| o.symbol == spec.symbol).count() >= MAX_OPEN_ORDERS {
        return Err(bad(-2025, "Reach max open order limit."));
    }
    let lots = |q: Decimal| (q / spec.step).trunc().try_into().unwrap_or(i64::MAX);
    let held = a
        .positions
        .get(&(spec.symbol.clone(), position_side))
        .copied()
        .unwrap_or_default();
    // Hedge mode: BUY on LONG and SELL on SHORT open; the other way closes, never
    // more than the leg holds (a leg cannot flip).
    let closes_leg = matches!(
        (position_side, req.side),
        ("LONG", Side::Sell) | ("SHORT", Side::Buy)
    );
    if closes_leg && req.qty > held.amount.abs() {
        return Err(bad(-2022, "ReduceOnly Order is rejected."));
    }
    // A reduce-only order may only shrink the position: the opposite side, and never
    // more than is held (what is over expires).
    let cap = if req.reduce_only {
        let reduces =
            !held.amount.is_zero() && held.amount.is_sign_positive() == (req.side == Side::Sell);
        if !reduces {
            return Err(bad(-2022, "ReduceOnly Order is rejected."));
        }
        lots(held.amount.abs())
    } else {
        let need = req.qty * reference / Decimal::from(a.leverage_of(&spec.symbol));
        if !closes_leg && need > available(a, marks) {
            return Err(bad(-2019, "Margin is insufficient."));
        }
        i64::MAX
    };
    let qty_lots = lots(req.qty);
    let crossing = matching::crossing_lots(book, req.side, limit);
    match matching::plan(req.market, req.tif, qty_lots, crossing) {
        Plan::Reject(code, msg) => Err(bad(code, msg)),
        Plan::Execute { take, rest } => Ok(Admitted {
            position_side,
            limit,
            mark,
            take: take.min(cap),
            rest: rest && cap >= qty_lots,
        }),
    }
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
    out.market.push(super::depth_stream(spec, &diff, t));
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
struct How {
    maker: bool,
    rate: Decimal,
    exec: &'static str,
}

#[allow(clippy::too_many_arguments)]
fn book_fill(
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

fn id_param(p: &Params, name: &str) -> Option<u64> {
    p.get(name).and_then(|i| i.parse().ok())
}

/// A history page's `limit`: 500 by default, 1 to 1000.
fn page_limit(p: &Params) -> usize {
    p.get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500)
        .clamp(1, 1000)
}

/// `GET /fapi/v1/allOrders`: the symbol's orders, oldest first, from `orderId`.
pub(super) fn all_orders(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let (from, limit) = (id_param(p, "orderId").unwrap_or(0), page_limit(p));
    let a = state.account.lock().expect("account lock");
    let rows: Vec<Value> = a
        .orders
        .range(from..)
        .map(|(_, o)| o)
        .filter(|o| o.symbol == *symbol)
        .take(limit)
        .map(|o| order_json(o, true))
        .collect();
    ok(Value::Array(rows))
}

/// `GET /fapi/v1/userTrades`: the symbol's fills, oldest first, by `orderId`, from
/// `fromId`, or within `startTime`..`endTime` (ms, inclusive).
pub(super) fn user_trades(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let order = id_param(p, "orderId");
    let (from, limit) = (id_param(p, "fromId").unwrap_or(0), page_limit(p));
    let time = |k: &str| p.get(k).and_then(|v| v.parse::<i64>().ok());
    let (start, end) = (
        time("startTime").unwrap_or(i64::MIN),
        time("endTime").unwrap_or(i64::MAX),
    );
    let a = state.account.lock().expect("account lock");
    let rows: Vec<Value> = a
        .trades
        .iter()
        .filter(|t| t.symbol == *symbol && t.id >= from && order.is_none_or(|o| t.order_id == o))
        .filter(|t| (start..=end).contains(&t.time))
        .take(limit)
        .map(trade_json)
        .collect();
    ok(Value::Array(rows))
}

/// `POST /fapi/v1/leverage`: stored per symbol, bounded by its brackets; the stream
/// says so with ACCOUNT_CONFIG_UPDATE.
pub(super) fn set_leverage(state: &SimState, p: &Params) -> Response {
    let Some(symbol) = p.get("symbol") else {
        return missing("symbol");
    };
    let Some(brackets) = state.brackets(symbol) else {
        return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    };
    let top = brackets.tiers()[0].max_leverage;
    let leverage = match p.get("leverage").and_then(|l| l.parse::<u32>().ok()) {
        Some(l) if (1..=top).contains(&l) => l,
        _ => return error(StatusCode::BAD_REQUEST, -4028, "Leverage is not valid"),
    };
    state
        .account
        .lock()
        .expect("account lock")
        .leverage
        .insert(symbol.clone(), leverage);
    let t = state.now_ms();
    state.publish_user(format!(
        r#"{{"e":"ACCOUNT_CONFIG_UPDATE","E":{t},"T":{t},"ac":{{"s":"{symbol}","l":{leverage}}}}}"#
    ));
    ok(json!({
        "leverage": leverage, "symbol": symbol,
        "maxNotionalValue": brackets.max_notional(leverage).normalize().to_string(),
    }))
}

/// A parameter by any of its spellings (clients differ in case: `orderIdList`,
/// `orderidlist`).
fn param<'a>(p: &'a Params, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| p.get(*n)).map(String::as_str)
}

/// A batch element's value as the string a form parameter would carry: ccxt sends
/// `"reduceOnly": true` and numbers unquoted.
fn as_param(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `-4082` for an empty batch or one over the endpoint's limit.
fn bad_batch_size(len: usize, max: usize) -> Option<Response> {
    (len == 0 || len > max).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            -4082,
            "Invalid number of batch place orders.",
        )
    })
}

/// The elements of a batch parameter (`batchOrders`), each as form parameters.
fn batch_items(p: &Params, max: usize) -> Result<Vec<Params>, Box<Response>> {
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
fn per_slot(
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

/// The venue closes a position itself: a liquidation (`autoclose-…`, type
/// LIQUIDATION, reported as CALCULATED, charged the liquidation fee) preceded by a
/// MARGIN_CALL, or an auto-deleveraging (`adl_autoclose`, no fee). At the mark.
pub(super) fn force_close(state: &SimState, symbol: &str, leg: &'static str, adl: bool) -> bool {
    let mut out = Outbox::default();
    {
        let m = state.market.lock().expect("market lock");
        let Some(mark) = marks(&m).get(symbol).copied() else {
            return false;
        };
        drop(m);
        let Some(brackets) = state.brackets(symbol) else {
            return false;
        };
        let mut a = state.account.lock().expect("account lock");
        let held = a
            .positions
            .get(&(symbol.to_owned(), leg))
            .copied()
            .unwrap_or_default();
        if held.amount.is_zero() {
            return false;
        }
        let t = state.now_ms();
        if !adl {
            out.account(margin_call(&a, &brackets, (symbol, leg), held, mark, t));
        }
        a.next_order_id += 1;
        let id = a.next_order_id;
        let mut order = Order {
            id,
            client_id: if adl {
                "adl_autoclose".to_owned()
            } else {
                format!("autoclose-{t}")
            },
            symbol: symbol.to_owned(),
            side: if held.amount.is_sign_positive() {
                "SELL"
            } else {
                "BUY"
            }
            .to_owned(),
            position_side: leg,
            kind: if adl { "MARKET" } else { "LIQUIDATION" }.to_owned(),
            tif: "IOC".to_owned(),
            qty: held.amount.abs(),
            price: Decimal::ZERO,
            executed: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            status: "NEW",
            reduce_only: true,
            time: t,
            update_time: t,
        };
        out.order(state, &order, order_update(&order, "NEW", None, t));
        let how = if adl {
            How {
                maker: false,
                rate: Decimal::ZERO,
                exec: "TRADE",
            }
        } else {
            How {
                maker: false,
                rate: LIQUIDATION_FEE,
                exec: "CALCULATED",
            }
        };
        let qty = order.qty;
        book_fill(state, &mut a, &mut order, mark, qty, how, t, &mut out);
        out.account(account_update(&a, symbol, mark, t));
        a.store(order);
    }
    out.publish(state);
    true
}

/// The venue's own liquidation, checked on every mark: an isolated leg whose margin
/// (isolated wallet + PnL) falls to its maintenance margin is liquidated; when the
/// cross margin balance (wallet + cross PnL) falls to the cross maintenance margin,
/// every cross leg is, largest first.
pub(super) fn auto_liquidate(state: &SimState) {
    let (marks, brackets) = {
        let m = state.market.lock().expect("market lock");
        let brackets: BTreeMap<String, model::exchange::Brackets> = m
            .specs
            .iter()
            .map(|s| {
                let b = if s.base == "BTC" {
                    model::exchange::Brackets::btcusdt()
                } else {
                    model::exchange::Brackets::altcoin()
                };
                (s.symbol.clone(), b)
            })
            .collect();
        (marks(&m), brackets)
    };
    let doomed: Vec<(String, &'static str)> = {
        let a = state.account.lock().expect("account lock");
        let (mut equity, mut maint) = (a.wallet, Decimal::ZERO);
        let mut cross = Vec::new();
        let mut doomed = Vec::new();
        for ((symbol, leg), h) in &a.positions {
            let (Some(&mark), Some(b)) = (marks.get(symbol), brackets.get(symbol)) else {
                continue;
            };
            if h.amount.is_zero() {
                continue;
            }
            let pnl = (mark - h.entry) * h.amount;
            let mm = b.maintenance_margin(mark * h.amount);
            if a.isolated.contains(symbol) {
                let wallet = h.amount.abs() * h.entry / Decimal::from(a.leverage_of(symbol));
                if wallet + pnl <= mm {
                    doomed.push((symbol.clone(), *leg));
                }
            } else {
                equity += pnl;
                maint += mm;
                cross.push(((mark * h.amount).abs(), symbol.clone(), *leg));
            }
        }
        if !cross.is_empty() && equity <= maint {
            cross.sort_by_key(|x| std::cmp::Reverse(x.0));
            doomed.extend(cross.into_iter().map(|(_, s, l)| (s, l)));
        }
        doomed
    };
    for (symbol, leg) in doomed {
        force_close(state, &symbol, leg, false);
    }
}

/// The clearance fee of a liquidation, of its notional (`liquidationFee`).
const LIQUIDATION_FEE: Decimal = Decimal::from_parts(125, 0, 0, false, 4);

/// MARGIN_CALL for one leg (advisory: the venue sends it before liquidating).
fn margin_call(
    a: &Account,
    brackets: &model::exchange::Brackets,
    (symbol, leg): (&str, &str),
    h: Held,
    mark: Decimal,
    t: i64,
) -> String {
    let mm = brackets.maintenance_margin(mark * h.amount).round_dp(8);
    let up = ((mark - h.entry) * h.amount).round_dp(8);
    format!(
        r#"{{"e":"MARGIN_CALL","E":{t},"cw":"{}","p":[{{"s":"{symbol}","ps":"{leg}","pa":"{}","mt":"CROSSED","iw":"0","mp":"{}","up":"{}","mm":"{}"}}]}}"#,
        a.wallet.normalize(),
        h.amount.normalize(),
        mark.normalize(),
        up.normalize(),
        mm.normalize()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_ids_follow_the_venue_rule() {
        for good in ["gs-1", "a.b:c/d_e-f", &"x".repeat(36)] {
            assert!(valid_client_id(good), "{good}");
        }
        for bad in ["", "has space", "ünï", &"x".repeat(37), "a+b"] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }
}
