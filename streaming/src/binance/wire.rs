//! Binance USDⓈ-M wire formats: market stream payloads, user-data events and REST
//! bodies. Pure parsing; prices and quantities arrive as strings and stay exact.

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("invalid number {0:?}")]
    Number(String),
}

impl From<serde_json::Error> for WireError {
    fn from(e: serde_json::Error) -> Self {
        WireError::Json(e.to_string())
    }
}

fn dec(s: &str) -> Result<Decimal, WireError> {
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|_| WireError::Number(s.to_owned()))
}

/// A price level: absolute size at a price; size 0 removes the level.
pub type Level = (Decimal, Decimal);

fn levels(raw: &[[&str; 2]]) -> Result<Vec<Level>, WireError> {
    raw.iter().map(|[p, q]| Ok((dec(p)?, dec(q)?))).collect()
}

/// `E` and similar fields: a number, or (as in the listenKeyExpired example) a string.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N<'a> {
        Int(i64),
        Str(&'a str),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Str(s) => s.trim().parse().map_err(de::Error::custom),
    }
}

fn string_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
    dec(&s).map_err(de::Error::custom)
}

/// `<symbol>@depth@100ms`: one diff of the book. On futures only `pu` chains events.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthUpdate {
    pub symbol: String,
    pub event_time: i64,
    /// `U`: first update id in the event.
    pub first_id: u64,
    /// `u`: last update id in the event.
    pub last_id: u64,
    /// `pu`: the previous event's `u` on this stream.
    pub prev_last_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

#[derive(Deserialize)]
struct RawDepth<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    #[serde(rename = "U")]
    first: u64,
    u: u64,
    pu: u64,
    #[serde(borrow)]
    b: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    a: Vec<[&'a str; 2]>,
}

/// `<symbol>@bookTicker`: best bid and ask.
#[derive(Debug, Clone, PartialEq)]
pub struct BookTicker {
    pub symbol: String,
    pub update_id: u64,
    pub event_time: i64,
    pub bid: Decimal,
    pub bid_qty: Decimal,
    pub ask: Decimal,
    pub ask_qty: Decimal,
}

#[derive(Deserialize)]
struct RawBookTicker<'a> {
    u: u64,
    #[serde(rename = "E", default)]
    event_time: i64,
    s: &'a str,
    b: &'a str,
    #[serde(rename = "B")]
    bq: &'a str,
    a: &'a str,
    #[serde(rename = "A")]
    aq: &'a str,
}

/// `<symbol>@markPrice@1s`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkPrice {
    pub symbol: String,
    pub event_time: i64,
    pub mark: Decimal,
    pub index: Option<Decimal>,
    pub funding_rate: Option<Decimal>,
    pub next_funding_time: Option<i64>,
}

#[derive(Deserialize)]
struct RawMark<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    p: &'a str,
    i: Option<&'a str>,
    r: Option<&'a str>,
    #[serde(rename = "T")]
    next: Option<i64>,
}

/// One option of `<underlying>@optionMarkPrice`: mark, mark IV and Greeks.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionMark {
    pub symbol: String,
    pub event_time: i64,
    pub mark: Decimal,
    pub index: Option<Decimal>,
    /// Mark implied volatility as a fraction.
    pub mark_iv: Option<f64>,
    pub delta: Option<f64>,
    pub gamma: Option<f64>,
    pub theta: Option<f64>,
    pub vega: Option<f64>,
}

#[derive(Deserialize)]
struct RawOptionMark<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    mp: &'a str,
    i: Option<&'a str>,
    vo: Option<&'a str>,
    d: Option<&'a str>,
    g: Option<&'a str>,
    t: Option<&'a str>,
    v: Option<&'a str>,
}

/// A float field the venue may leave out or send as `"NaN"`: kept as NaN so the
/// normalizer counts it as a dropped value.
fn float(s: Option<&str>) -> Option<f64> {
    s.map(|s| s.trim().parse::<f64>().unwrap_or(f64::NAN))
}

/// One frame of a market-data socket.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketMessage {
    Depth(DepthUpdate),
    BookTicker(BookTicker),
    MarkPrice(MarkPrice),
    OptionMarks(Vec<OptionMark>),
    /// The answer to a SUBSCRIBE / LIST_SUBSCRIPTIONS request.
    Reply {
        id: u64,
    },
    /// `{"code":..,"msg":..}` for a bad control message.
    Error {
        code: i64,
        msg: String,
    },
}

#[derive(Deserialize)]
struct Combined<'a> {
    stream: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Reply {
    id: Option<u64>,
    code: Option<i64>,
    msg: Option<String>,
}

/// Parses one market frame: a combined-stream envelope, a raw payload, or a reply.
pub fn parse_market(text: &str) -> Result<MarketMessage, WireError> {
    let t = text.trim_start();
    if t.starts_with("{\"stream\"") {
        let c: Combined<'_> = serde_json::from_str(t)?;
        return parse_payload(c.stream, c.data.get());
    }
    if t.starts_with('[') {
        return parse_payload("@optionMarkPrice", t);
    }
    let kind = event_kind(t);
    match kind {
        Some("depthUpdate") => parse_payload("@depth", t),
        Some("bookTicker") => parse_payload("@bookTicker", t),
        Some("markPriceUpdate") => parse_payload("@markPrice", t),
        Some(other) => Err(WireError::Unexpected(format!("event {other}"))),
        None => {
            let r: Reply = serde_json::from_str(t)?;
            match (r.id, r.code) {
                (_, Some(code)) => Ok(MarketMessage::Error {
                    code,
                    msg: r.msg.unwrap_or_default(),
                }),
                (Some(id), None) => Ok(MarketMessage::Reply { id }),
                (None, None) => Err(WireError::Unexpected(head(t))),
            }
        }
    }
}

fn head(t: &str) -> String {
    t.chars().take(80).collect()
}

/// The `"e"` of a payload without parsing it all (it comes first on every stream).
fn event_kind(t: &str) -> Option<&str> {
    let at = t.find("\"e\":\"")? + 5;
    let rest = &t[at..];
    Some(&rest[..rest.find('"')?])
}

fn parse_payload(stream: &str, data: &str) -> Result<MarketMessage, WireError> {
    if stream.contains("@depth") {
        let r: RawDepth<'_> = serde_json::from_str(data)?;
        return Ok(MarketMessage::Depth(DepthUpdate {
            symbol: r.s.to_owned(),
            event_time: r.event_time,
            first_id: r.first,
            last_id: r.u,
            prev_last_id: r.pu,
            bids: levels(&r.b)?,
            asks: levels(&r.a)?,
        }));
    }
    if stream.contains("@bookTicker") {
        let r: RawBookTicker<'_> = serde_json::from_str(data)?;
        return Ok(MarketMessage::BookTicker(BookTicker {
            symbol: r.s.to_owned(),
            update_id: r.u,
            event_time: r.event_time,
            bid: dec(r.b)?,
            bid_qty: dec(r.bq)?,
            ask: dec(r.a)?,
            ask_qty: dec(r.aq)?,
        }));
    }
    if stream.contains("@optionMarkPrice") {
        let rows: Vec<RawOptionMark<'_>> = serde_json::from_str(data)?;
        return rows
            .into_iter()
            .map(|r| {
                Ok(OptionMark {
                    symbol: r.s.to_owned(),
                    event_time: r.event_time,
                    mark: dec(r.mp)?,
                    index: r.i.map(dec).transpose()?,
                    mark_iv: float(r.vo),
                    delta: float(r.d),
                    gamma: float(r.g),
                    theta: float(r.t),
                    vega: float(r.v),
                })
            })
            .collect::<Result<_, _>>()
            .map(MarketMessage::OptionMarks);
    }
    if stream.contains("@markPrice") {
        let r: RawMark<'_> = serde_json::from_str(data)?;
        return Ok(MarketMessage::MarkPrice(MarkPrice {
            symbol: r.s.to_owned(),
            event_time: r.event_time,
            mark: dec(r.p)?,
            index: r.i.map(dec).transpose()?,
            funding_rate: r.r.map(dec).transpose()?,
            next_funding_time: r.next,
        }));
    }
    Err(WireError::Unexpected(format!("stream {stream}")))
}

// ---- user data stream ----

/// One changed position of an ACCOUNT_UPDATE.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountPosition {
    #[serde(rename = "s")]
    pub symbol: String,
    /// Signed position amount.
    #[serde(rename = "pa", deserialize_with = "string_decimal")]
    pub amount: Decimal,
    #[serde(rename = "ep", deserialize_with = "string_decimal")]
    pub entry_price: Decimal,
    #[serde(rename = "ps", default = "both")]
    pub position_side: String,
}

fn both() -> String {
    "BOTH".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountBalance {
    #[serde(rename = "a")]
    pub asset: String,
    #[serde(rename = "wb", deserialize_with = "string_decimal")]
    pub wallet: Decimal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountData {
    /// Why the account changed (ORDER, FUNDING_FEE, ...).
    #[serde(rename = "m")]
    pub reason: String,
    #[serde(rename = "B", default)]
    pub balances: Vec<AccountBalance>,
    #[serde(rename = "P", default)]
    pub positions: Vec<AccountPosition>,
}

/// The order part of an ORDER_TRADE_UPDATE.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderUpdate {
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "c")]
    pub client_order_id: String,
    #[serde(rename = "S")]
    pub side: String,
    #[serde(rename = "o")]
    pub order_type: String,
    #[serde(rename = "q", deserialize_with = "string_decimal")]
    pub quantity: Decimal,
    #[serde(rename = "p", deserialize_with = "string_decimal")]
    pub price: Decimal,
    /// Execution type: NEW, TRADE, CANCELED, EXPIRED, CALCULATED, AMENDMENT.
    #[serde(rename = "x")]
    pub execution_type: String,
    #[serde(rename = "X")]
    pub status: String,
    #[serde(rename = "i")]
    pub order_id: u64,
    #[serde(rename = "l", deserialize_with = "string_decimal")]
    pub last_filled_qty: Decimal,
    #[serde(rename = "z", deserialize_with = "string_decimal")]
    pub cumulative_qty: Decimal,
    #[serde(rename = "L", deserialize_with = "string_decimal")]
    pub last_filled_price: Decimal,
    #[serde(rename = "ps", default = "both")]
    pub position_side: String,
    /// The trade's id on a TRADE (0 otherwise).
    #[serde(rename = "t", default)]
    pub trade_id: u64,
    /// This trade's commission, in `commission_asset`.
    #[serde(rename = "n", default, deserialize_with = "string_decimal")]
    pub commission: Decimal,
    #[serde(rename = "N", default)]
    pub commission_asset: Option<String>,
    #[serde(rename = "T", default)]
    pub trade_time: i64,
    #[serde(rename = "R", default)]
    pub reduce_only: bool,
    /// Realized profit of this trade, as the venue computes it for the net position.
    #[serde(rename = "rp", default, deserialize_with = "string_decimal")]
    pub realized_profit: Decimal,
}

/// One event of the user data stream.
#[derive(Debug, Clone, PartialEq)]
pub enum UserEvent {
    AccountUpdate {
        event_time: i64,
        data: AccountData,
    },
    OrderTradeUpdate {
        event_time: i64,
        order: Box<OrderUpdate>,
    },
    ListenKeyExpired {
        event_time: i64,
    },
    /// An event we read past (MARGIN_CALL, ACCOUNT_CONFIG_UPDATE, TRADE_LITE, ...).
    Other(String),
}

#[derive(Deserialize)]
struct RawUser<'a> {
    e: &'a str,
    #[serde(rename = "E", deserialize_with = "lenient_i64", default)]
    event_time: i64,
    #[serde(borrow)]
    a: Option<&'a RawValue>,
    #[serde(borrow)]
    o: Option<&'a RawValue>,
}

/// Parses one user-data frame, raw or wrapped in a combined-stream envelope.
pub fn parse_user(text: &str) -> Result<UserEvent, WireError> {
    let t = text.trim_start();
    let data = if t.starts_with("{\"stream\"") {
        let c: Combined<'_> = serde_json::from_str(t)?;
        c.data.get()
    } else {
        t
    };
    let r: RawUser<'_> = serde_json::from_str(data)?;
    fn need<'a>(v: Option<&'a RawValue>, event: &str, what: &str) -> Result<&'a str, WireError> {
        v.map(RawValue::get)
            .ok_or_else(|| WireError::Unexpected(format!("{event} without {what}")))
    }
    Ok(match r.e {
        "ACCOUNT_UPDATE" => UserEvent::AccountUpdate {
            event_time: r.event_time,
            data: serde_json::from_str(need(r.a, r.e, "a")?)?,
        },
        "ORDER_TRADE_UPDATE" => UserEvent::OrderTradeUpdate {
            event_time: r.event_time,
            order: serde_json::from_str(need(r.o, r.e, "o")?)?,
        },
        "listenKeyExpired" => UserEvent::ListenKeyExpired {
            event_time: r.event_time,
        },
        other => UserEvent::Other(other.to_owned()),
    })
}

// ---- REST bodies ----

/// Binance's error body, `{"code":-1121,"msg":"Invalid symbol."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
}

/// The error body of a failed response, if it is one.
pub fn parse_error(body: &str) -> Option<ApiError> {
    serde_json::from_str(body).ok()
}

/// The epoch-ms end of an IP ban from a 418 message ("... banned until 1615183669840 ...").
pub fn banned_until(msg: &str) -> Option<i64> {
    let at = msg.find("banned until ")? + "banned until ".len();
    let digits: String = msg[at..].chars().take_while(char::is_ascii_digit).collect();
    (digits.len() == 13).then(|| digits.parse().ok()).flatten()
}

/// `GET /fapi/v1/depth`.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthSnapshot {
    pub last_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

pub fn parse_depth_snapshot(body: &str) -> Result<DepthSnapshot, WireError> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(rename = "lastUpdateId")]
        last: u64,
        #[serde(borrow)]
        bids: Vec<[&'a str; 2]>,
        #[serde(borrow)]
        asks: Vec<[&'a str; 2]>,
    }
    let r: Raw<'_> = serde_json::from_str(body)?;
    Ok(DepthSnapshot {
        last_update_id: r.last,
        bids: levels(&r.bids)?,
        asks: levels(&r.asks)?,
    })
}

/// The margin account's totals from `GET /fapi/v3/account`, in the margin asset
/// (USDT in single-asset mode). The per-asset and per-position arrays are not kept:
/// positions come from positionRisk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    #[serde(deserialize_with = "string_decimal")]
    pub total_wallet_balance: Decimal,
    #[serde(deserialize_with = "string_decimal")]
    pub total_unrealized_profit: Decimal,
    /// Wallet balance plus unrealized profit.
    #[serde(deserialize_with = "string_decimal")]
    pub total_margin_balance: Decimal,
    #[serde(deserialize_with = "string_decimal")]
    pub total_initial_margin: Decimal,
    /// When the margin balance falls to this, the account is liquidated.
    #[serde(deserialize_with = "string_decimal")]
    pub total_maint_margin: Decimal,
    #[serde(deserialize_with = "string_decimal")]
    pub available_balance: Decimal,
}

pub fn parse_account(body: &str) -> Result<AccountSummary, WireError> {
    Ok(serde_json::from_str(body)?)
}

/// One row of `GET /fapi/v2|v3/positionRisk`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PositionRisk {
    pub symbol: String,
    #[serde(rename = "positionSide", default = "both")]
    pub position_side: String,
    #[serde(rename = "positionAmt", deserialize_with = "string_decimal")]
    pub amount: Decimal,
    #[serde(rename = "entryPrice", deserialize_with = "string_decimal")]
    pub entry_price: Decimal,
    #[serde(rename = "markPrice", deserialize_with = "string_decimal")]
    pub mark_price: Decimal,
    #[serde(rename = "updateTime", default)]
    pub update_time: i64,
}

/// Parses a positionRisk array; rows that do not parse come back as errors so
/// the caller can count them and keep the rest.
pub fn parse_position_risk(body: &str) -> Result<(Vec<PositionRisk>, Vec<WireError>), WireError> {
    let rows: Vec<&RawValue> = serde_json::from_str(body)?;
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match serde_json::from_str::<PositionRisk>(row.get()) {
            Ok(p) => good.push(p),
            Err(e) => bad.push(WireError::Json(e.to_string())),
        }
    }
    Ok((good, bad))
}

/// One row of `GET /eapi/v1/position` (options).
#[derive(Debug, Clone, PartialEq)]
pub struct OptionPosition {
    pub symbol: String,
    /// Signed: a SHORT row is negative even if the venue sent it unsigned.
    pub quantity: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
}

#[derive(Deserialize)]
struct RawOptionPosition {
    symbol: String,
    #[serde(default)]
    side: String,
    #[serde(deserialize_with = "string_decimal")]
    quantity: Decimal,
    #[serde(rename = "entryPrice", deserialize_with = "string_decimal")]
    entry_price: Decimal,
    #[serde(rename = "markPrice", deserialize_with = "string_decimal")]
    mark_price: Decimal,
}

/// Parses `/eapi/v1/position`; rows that do not parse come back as errors.
pub fn parse_option_positions(
    body: &str,
) -> Result<(Vec<OptionPosition>, Vec<WireError>), WireError> {
    let rows: Vec<&RawValue> = serde_json::from_str(body)?;
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match serde_json::from_str::<RawOptionPosition>(row.get()) {
            Ok(r) => good.push(OptionPosition {
                quantity: if r.side.eq_ignore_ascii_case("SHORT") {
                    -r.quantity.abs()
                } else {
                    r.quantity
                },
                symbol: r.symbol,
                entry_price: r.entry_price,
                mark_price: r.mark_price,
            }),
            Err(e) => bad.push(WireError::Json(e.to_string())),
        }
    }
    Ok((good, bad))
}

#[derive(Deserialize)]
struct RawRestOptionMark<'a> {
    symbol: &'a str,
    #[serde(rename = "markPrice")]
    mark: &'a str,
    #[serde(rename = "markIV")]
    mark_iv: Option<&'a str>,
    delta: Option<&'a str>,
    gamma: Option<&'a str>,
    theta: Option<&'a str>,
    vega: Option<&'a str>,
}

/// Parses `GET /eapi/v1/mark`: the same values as the `@optionMarkPrice` stream,
/// without index price or event time (`received_ms` stands in for it).
pub fn parse_option_marks(body: &str, received_ms: i64) -> Result<Vec<OptionMark>, WireError> {
    let rows: Vec<RawRestOptionMark<'_>> = serde_json::from_str(body)?;
    rows.into_iter()
        .map(|r| {
            Ok(OptionMark {
                symbol: r.symbol.to_owned(),
                event_time: received_ms,
                mark: dec(r.mark)?,
                index: None,
                mark_iv: float(r.mark_iv),
                delta: float(r.delta),
                gamma: float(r.gamma),
                theta: float(r.theta),
                vega: float(r.vega),
            })
        })
        .collect()
}

/// Parses `GET /eapi/v1/exchangeInfo`: each option symbol's contract `unit` (how
/// much of the underlying one contract is), the options' multiplier. A symbol
/// whose unit is missing or not a positive number is left out: never guessed.
pub fn parse_option_units(body: &str) -> Result<HashMap<String, Decimal>, WireError> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    let rows = v
        .get("optionSymbols")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| WireError::Unexpected("no optionSymbols".into()))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let symbol = r.get("symbol")?.as_str()?;
            let unit = match r.get("unit")? {
                serde_json::Value::Number(n) => n.to_string().parse::<Decimal>().ok(),
                serde_json::Value::String(s) => s.parse::<Decimal>().ok(),
                _ => None,
            }
            .filter(|u| *u > Decimal::ZERO)?;
            Some((symbol.to_owned(), unit.normalize()))
        })
        .collect())
}

/// What we use of one `exchangeInfo` symbol.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SymbolInfo {
    pub symbol: String,
    #[serde(default)]
    pub pair: String,
    /// PERPETUAL, CURRENT_QUARTER, NEXT_QUARTER, ...
    #[serde(rename = "contractType", default)]
    pub contract_type: String,
    /// Epoch ms; perpetuals carry a far-future date.
    #[serde(rename = "deliveryDate", default)]
    pub delivery_date: i64,
    pub status: String,
    #[serde(rename = "baseAsset", default)]
    pub base_asset: String,
    #[serde(rename = "quoteAsset", default)]
    pub quote_asset: String,
    #[serde(default)]
    pub filters: Vec<serde_json::Value>,
}

impl SymbolInfo {
    /// The `(tickSize, stepSize)` of the PRICE_FILTER and LOT_SIZE filters.
    pub fn tick_and_step(&self) -> (Option<Decimal>, Option<Decimal>) {
        let get = |kind: &str, field: &str| {
            self.filters
                .iter()
                .find(|f| f["filterType"] == kind)
                .and_then(|f| f[field].as_str())
                .and_then(|s| dec(s).ok())
        };
        (get("PRICE_FILTER", "tickSize"), get("LOT_SIZE", "stepSize"))
    }
}

pub fn parse_exchange_info(body: &str) -> Result<Vec<SymbolInfo>, WireError> {
    #[derive(Deserialize)]
    struct Raw {
        symbols: Vec<SymbolInfo>,
    }
    Ok(serde_json::from_str::<Raw>(body)?.symbols)
}

/// The new-order limits `exchangeInfo` states (`rateLimits` of type ORDERS), each as
/// (window in seconds, orders allowed in it).
pub fn parse_order_limits(body: &str) -> Result<Vec<(u64, u64)>, WireError> {
    #[derive(Deserialize)]
    struct Limit {
        #[serde(rename = "rateLimitType")]
        kind: String,
        interval: String,
        #[serde(rename = "intervalNum")]
        num: u64,
        limit: u64,
    }
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "rateLimits", default)]
        limits: Vec<Limit>,
    }
    Ok(serde_json::from_str::<Raw>(body)?
        .limits
        .into_iter()
        .filter(|l| l.kind == "ORDERS")
        .filter_map(|l| {
            let unit = match l.interval.as_str() {
                "SECOND" => 1,
                "MINUTE" => 60,
                "HOUR" => 3_600,
                "DAY" => 86_400,
                _ => return None,
            };
            Some((unit * l.num, l.limit))
        })
        .collect())
}

pub fn parse_server_time(body: &str) -> Result<i64, WireError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "serverTime")]
        t: i64,
    }
    Ok(serde_json::from_str::<Raw>(body)?.t)
}

pub fn parse_listen_key(body: &str) -> Result<String, WireError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "listenKey")]
        key: String,
    }
    Ok(serde_json::from_str::<Raw>(body)?.key)
}

/// Market-stream control messages.
pub fn subscribe(id: u64, streams: &[String]) -> String {
    serde_json::json!({"method": "SUBSCRIBE", "params": streams, "id": id}).to_string()
}

pub fn list_subscriptions(id: u64) -> String {
    format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#)
}

#[cfg(test)]
mod tests;
