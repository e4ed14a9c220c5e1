//! The gateway's commands (js-gateway §2.1, §4 and "Decisions" 6–7), without IO: the
//! envelope, each command's body parsed and validated into a typed [`Command`], and
//! the refusal a bad one gets ([`Rejected`]: the HTTP status, a stable code and the
//! JS route's body). A command that fails here never starts.
//!
//! Numbers are accepted as JSON numbers or numeric strings (the JS `parseFloat`), and
//! kept exact; "required" means JS-truthy (`0`, `""`, `null` count as missing);
//! non-finite or mistyped values are refused with `INVALID_FIELD` (JS let NaN through).
//! Symbols are Binance-native; the ccxt form `BTC/USDT:USDT` is accepted and normalized.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::evaluate::LiquidationMode;
use crate::position::OrderSide;

/// A command's JSON above this many bytes is refused (`PAYLOAD_TOO_LARGE`).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// The envelope's own fields (§2.1): everything else is the route's body.
const TRANSPORT: [&str; 9] = [
    "v",
    "type",
    "requestId",
    "userId",
    "role",
    "source",
    "idempotencyKey",
    "ts",
    "deadlineTs",
];

macro_rules! kinds {
    ($($v:ident = $s:literal, kill = $k:literal, admin = $a:literal, supported = $sup:literal;)*) => {
        /// Every command type of the contract, supported yet or not.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind { $($v,)* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$v,)*];

            /// The name in `pms:cmd:{type}` and in the envelope.
            pub const fn name(self) -> &'static str {
                match self { $(Kind::$v => $s,)* }
            }

            /// Stops trading (a close, a cancel, an algo stop, an admin action): taken
            /// before anything that starts trading.
            pub const fn kill_switch(self) -> bool {
                match self { $(Kind::$v => $k,)* }
            }

            /// Needs `role: "ADMIN"`.
            pub const fn admin(self) -> bool {
                match self { $(Kind::$v => $a,)* }
            }

            /// Executed by this engine; the others answer `NOT_SUPPORTED_YET`.
            pub const fn supported(self) -> bool {
                match self { $(Kind::$v => $sup,)* }
            }

            pub fn parse(s: &str) -> Option<Kind> {
                match s { $($s => Some(Kind::$v),)* _ => None }
            }
        }
    };
}

kinds! {
    Trade = "trade", kill = false, admin = false, supported = true;
    Validate = "validate", kill = false, admin = false, supported = true;
    Limit = "limit", kill = false, admin = false, supported = true;
    Scale = "scale", kill = false, admin = false, supported = true;
    Basket = "basket", kill = false, admin = false, supported = true;
    Close = "close", kill = true, admin = false, supported = true;
    CloseAll = "close_all", kill = true, admin = false, supported = true;
    LimitClose = "limit_close", kill = false, admin = false, supported = true;
    CancelOrder = "cancel_order", kill = true, admin = false, supported = true;
    CancelAllOrders = "cancel_all_orders", kill = true, admin = false, supported = true;
    AccountCreate = "account_create", kill = true, admin = true, supported = true;
    AccountUpdate = "account_update", kill = true, admin = true, supported = true;
    BalanceAdjust = "balance_adjust", kill = true, admin = true, supported = true;
    RiskRulesSet = "risk_rules_set", kill = true, admin = true, supported = true;
    AccountFreeze = "account_freeze", kill = true, admin = true, supported = true;
    AccountUnfreeze = "account_unfreeze", kill = true, admin = true, supported = true;
    ForceClose = "force_close", kill = true, admin = true, supported = true;
    ForceCloseAll = "force_close_all", kill = true, admin = true, supported = true;
    AdminTakeover = "admin_takeover", kill = true, admin = true, supported = false;
    ChaseStart = "chase_start", kill = false, admin = false, supported = false;
    ChaseCancel = "chase_cancel", kill = true, admin = false, supported = false;
    ScalperStart = "scalper_start", kill = false, admin = false, supported = false;
    ScalperCancel = "scalper_cancel", kill = true, admin = false, supported = false;
    TwapStart = "twap_start", kill = false, admin = false, supported = false;
    TwapCancel = "twap_cancel", kill = true, admin = false, supported = false;
    TwapBasketStart = "twap_basket_start", kill = false, admin = false, supported = false;
    TwapBasketCancel = "twap_basket_cancel", kill = true, admin = false, supported = false;
    TrailStopStart = "trail_stop_start", kill = false, admin = false, supported = false;
    TrailStopCancel = "trail_stop_cancel", kill = true, admin = false, supported = false;
    SurfStart = "surf_start", kill = false, admin = false, supported = false;
    SurfAdjust = "surf_adjust", kill = false, admin = false, supported = false;
    SurfStop = "surf_stop", kill = true, admin = false, supported = false;
    BabysitterClose = "babysitter_close", kill = true, admin = false, supported = false;
}

/// Who sent a command, as the gateway authenticated them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Admin => "ADMIN",
        }
    }
}

/// A command as it arrived: the envelope's fields read, the rest kept as the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `type` as sent (on the bus, the queue it came from).
    pub kind: String,
    pub request_id: String,
    pub sub_account_id: Option<String>,
    pub user_id: Option<String>,
    pub role: Role,
    pub source: String,
    pub idempotency_key: Option<String>,
    pub ts: Option<i64>,
    pub deadline_ts: Option<i64>,
    /// The whole object as sent.
    pub fields: Map<String, Value>,
    /// Its size in bytes as sent.
    pub bytes: usize,
}

/// Input that cannot be answered: no `requestId` to answer on. Logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no requestId (a string of 1 to 128 visible characters)")]
    NoRequestId,
}

impl Undecodable {
    pub const fn code(&self) -> &'static str {
        match self {
            Undecodable::NotJson(_) => "INVALID_JSON",
            Undecodable::NotObject => "INVALID_JSON",
            Undecodable::NoRequestId => "MISSING_REQUEST_ID",
        }
    }
}

/// A refusal: what the gateway returns (`httpStatus`, `body`), with a stable code.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub status: u16,
    pub code: &'static str,
    pub body: Value,
}

/// The HTTP status of every error code: the one place codes meet statuses.
/// Codes not listed (the risk refusals, the venue's rejections) are 400.
pub fn status_of(code: &str) -> u16 {
    match code {
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "ACCOUNT_NOT_FOUND" | "POSITION_NOT_FOUND" | "ORDER_NOT_FOUND" | "UNKNOWN_COMMAND"
        | "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "ORDER_RATE_LIMITED" => 429,
        "COMMAND_EXPIRED" => 408,
        "IDEMPOTENCY_IN_PROGRESS" | "SYMBOL_DESYNC" => 409,
        "PAYLOAD_TOO_LARGE" => 413,
        "IDEMPOTENCY_KEY_REUSED" => 422,
        "INTERNAL" | "DATABASE_ERROR" => 500,
        "NOT_SUPPORTED_YET" => 501,
        "ENGINE_RECOVERING"
        | "ENGINE_RESTARTED"
        | "EXCHANGE_ERROR"
        | "CLOCK_DRIFT"
        | "COMMANDS_DISABLED"
        | "JOURNAL_UNAVAILABLE"
        | "ORDER_STATE_UNKNOWN" => 503,
        _ => 400,
    }
}

impl Rejected {
    /// `{error, errors:[{code, message}]}`: the JS flat error body, with the code;
    /// the status is the code's ([`status_of`]).
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: status_of(code),
            code,
            body: json!({"error": message, "errors": [{"code": code, "message": message}]}),
        }
    }

    /// Unknown sub-account: the same shape everywhere (Decision 7).
    pub fn account_not_found() -> Self {
        Self::new("ACCOUNT_NOT_FOUND", "Sub-account not found")
    }
}

fn visible_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic())
}

/// Reads the envelope of a command's JSON. `queue_kind` is the type of the queue it
/// came from (the bus) or the route (HTTP); it wins over a `type` in the body.
pub fn decode(raw: &[u8], queue_kind: &str) -> Result<Envelope, Undecodable> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| Undecodable::NotJson(e.to_string()))?;
    let Value::Object(fields) = v else {
        return Err(Undecodable::NotObject);
    };
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let request_id = text("requestId")
        .filter(|r| visible_id(r))
        .ok_or(Undecodable::NoRequestId)?;
    let int = |k: &str| fields.get(k).and_then(Value::as_i64);
    let role = match text("role")
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("ADMIN") => Role::Admin,
        _ => Role::User,
    };
    Ok(Envelope {
        kind: queue_kind.to_owned(),
        request_id,
        sub_account_id: text("subAccountId").filter(|s| !s.is_empty()),
        user_id: text("userId").filter(|s| !s.is_empty()),
        role,
        source: text("source").unwrap_or_else(|| "http".to_owned()),
        idempotency_key: text("idempotencyKey").filter(|s| !s.is_empty()),
        ts: int("ts"),
        deadline_ts: int("deadlineTs"),
        fields,
        bytes: raw.len(),
    })
}

impl Envelope {
    /// The route's body: what an idempotency key promises not to change.
    pub fn body(&self) -> Value {
        let mut m = self.fields.clone();
        for k in TRANSPORT {
            m.remove(k);
        }
        Value::Object(m)
    }

    /// Whether the command may no longer start at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.deadline_ts.is_some_and(|d| now_ms > d)
    }
}

/// An order's side as the gateway says it.
fn side_of(v: &str) -> Option<OrderSide> {
    match v.to_ascii_uppercase().as_str() {
        "LONG" | "BUY" => Some(OrderSide::Buy),
        "SHORT" | "SELL" => Some(OrderSide::Sell),
        _ => None,
    }
}

/// `BTC/USDT:USDT`, `btcusdt` → `BTCUSDT`.
pub fn normalize_symbol(s: &str) -> String {
    let base = s.split(':').next().unwrap_or(s);
    base.replace('/', "").to_ascii_uppercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSpec {
    pub symbol: String,
    pub side: OrderSide,
    pub quantity: Decimal,
    pub leverage: Decimal,
    pub price: Option<Decimal>,
    pub reduce_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    pub symbol: String,
    pub side: OrderSide,
    pub leverage: Decimal,
    /// (price, quantity), in the order given.
    pub orders: Vec<(Decimal, Decimal)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RulesPatch {
    pub max_leverage: Option<Decimal>,
    pub max_notional_per_trade: Option<Decimal>,
    pub max_total_exposure: Option<Decimal>,
    pub max_symbol_exposure: Option<Decimal>,
    pub max_daily_loss: Option<Decimal>,
    pub liquidation_threshold: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccountSpec {
    pub name: String,
    pub bot: bool,
    pub owner_user_id: Option<String>,
    pub initial_balance: Decimal,
    pub liquidation_mode: LiquidationMode,
    pub maintenance_rate: Option<Decimal>,
}

/// A command, valid as far as can be told without the book and the venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Trade(OrderSpec),
    Validate(OrderSpec),
    Limit(OrderSpec),
    Scale(ScaleSpec),
    Basket(Vec<OrderSpec>),
    Close {
        position_id: String,
    },
    CloseAll,
    LimitClose {
        position_id: String,
        price: Decimal,
    },
    CancelOrder {
        order_id: String,
    },
    CancelAllOrders,
    AccountCreate(NewAccountSpec),
    AccountUpdate {
        name: Option<String>,
        liquidation_mode: Option<LiquidationMode>,
        maintenance_rate: Option<Decimal>,
    },
    BalanceAdjust {
        amount: Decimal,
        reason: String,
    },
    RiskRulesSet {
        global: bool,
        rules: RulesPatch,
    },
    AccountFreeze,
    AccountUnfreeze,
}

impl Command {
    /// Names a sub-account through the envelope's `subAccountId` (the others name a
    /// position or an order, or create the account).
    pub fn needs_account(&self) -> bool {
        !matches!(
            self,
            Command::Close { .. }
                | Command::LimitClose { .. }
                | Command::CancelOrder { .. }
                | Command::AccountCreate(_)
                | Command::RiskRulesSet { global: true, .. }
        )
    }
}

/// A field that is there but unusable.
fn invalid(field: &str, why: &str) -> Rejected {
    Rejected::new("INVALID_FIELD", format!("Invalid {field}: {why}"))
}

/// JS-truthy: absent, `null`, `0`, `""` and `false` count as missing.
fn present<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    match m.get(k)? {
        Value::Null | Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        v => Some(v),
    }
}

/// A number or numeric string, exact; `None` when missing (JS-truthy).
fn decimal(m: &Map<String, Value>, k: &str) -> Result<Option<Decimal>, Rejected> {
    let Some(v) = present(m, k) else {
        return Ok(None);
    };
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(invalid(k, "must be a number")),
    };
    let d = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| invalid(k, "must be a finite number"))?;
    Ok((!d.is_zero()).then_some(d))
}

fn positive(m: &Map<String, Value>, k: &str) -> Result<Option<Decimal>, Rejected> {
    match decimal(m, k)? {
        Some(d) if d.is_sign_negative() => Err(invalid(k, "must be positive")),
        d => Ok(d),
    }
}

fn string(m: &Map<String, Value>, k: &str) -> Result<Option<String>, Rejected> {
    match present(m, k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(k, "must be a string")),
    }
}

fn boolean(m: &Map<String, Value>, k: &str) -> Result<bool, Rejected> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(k, "must be true or false")),
    }
}

fn missing(message: &str) -> Rejected {
    Rejected::new("MISSING_FIELDS", message)
}

/// An id the engine looks up (a position, an order): any short visible string.
fn id(m: &Map<String, Value>, k: &str) -> Result<String, Rejected> {
    string(m, k)?
        .filter(|s| visible_id(s))
        .ok_or_else(|| missing(&format!("Missing {k}")))
}

const TRADE_FIELDS: &str =
    "Missing required fields: subAccountId, symbol, side, quantity, leverage";

fn order_spec(
    m: &Map<String, Value>,
    has_account: bool,
    with_price: bool,
    missing_message: &str,
) -> Result<OrderSpec, Rejected> {
    let symbol = string(m, "symbol")?;
    let side = string(m, "side")?;
    let quantity = positive(m, "quantity")?;
    let leverage = positive(m, "leverage")?;
    let price = positive(m, "price")?;
    let (Some(symbol), Some(side), Some(quantity), Some(leverage), true, true) = (
        symbol,
        side,
        quantity,
        leverage,
        has_account,
        !with_price || price.is_some(),
    ) else {
        return Err(missing(missing_message));
    };
    let side = side_of(&side)
        .ok_or_else(|| Rejected::new("INVALID_SIDE", "side must be LONG or SHORT"))?;
    Ok(OrderSpec {
        symbol: normalize_symbol(&symbol),
        side,
        quantity,
        leverage,
        price: if with_price { price } else { None },
        reduce_only: boolean(m, "reduceOnly")?,
    })
}

fn scale(m: &Map<String, Value>, has_account: bool) -> Result<ScaleSpec, Rejected> {
    const MISSING: &str = "Missing required fields: subAccountId, symbol, side, leverage, orders[]";
    let symbol = string(m, "symbol")?;
    let side = string(m, "side")?;
    let leverage = decimal(m, "leverage")?;
    let orders = match m.get("orders") {
        Some(Value::Array(a)) if a.len() >= 2 => a,
        Some(Value::Array(_)) | None | Some(Value::Null) => return Err(missing(MISSING)),
        Some(_) => return Err(invalid("orders", "must be an array")),
    };
    let (Some(symbol), Some(side), true) = (symbol, side, has_account) else {
        return Err(missing(MISSING));
    };
    if !(5..=30).contains(&orders.len()) {
        return Err(Rejected::new(
            "SCALE_INVALID_COUNT",
            format!("Order count must be between 5 and 30. Got {}", orders.len()),
        ));
    }
    let side = side_of(&side).ok_or_else(|| {
        Rejected::new(
            "INVALID_SIDE",
            format!("Invalid side '{side}'. Use LONG or SHORT."),
        )
    })?;
    let leverage = match leverage {
        Some(l) if l > Decimal::ZERO && l <= Decimal::from(125) => l,
        l => {
            return Err(Rejected::new(
                "INVALID_LEVERAGE",
                format!(
                    "Invalid leverage {}. Must be 1–125.",
                    l.map_or("0".into(), |l| l.to_string())
                ),
            ))
        }
    };
    let mut out = Vec::with_capacity(orders.len());
    let mut bad = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let n = i + 1;
        let Value::Object(o) = o else {
            bad.push(format!(
                "Order #{n}: must be an object with price and quantity"
            ));
            continue;
        };
        match (positive(o, "price"), positive(o, "quantity")) {
            (Ok(Some(p)), Ok(Some(q))) => {
                if out.iter().any(|(seen, _)| *seen == p) {
                    bad.push(format!("Order #{n}: duplicate price {p}"));
                } else {
                    out.push((p, q));
                }
            }
            (Ok(Some(_)), _) => bad.push(format!("Order #{n}: invalid quantity")),
            _ => bad.push(format!("Order #{n}: invalid price")),
        }
    }
    if !bad.is_empty() {
        let errors: Vec<Value> = bad
            .iter()
            .map(|m| json!({"code": "SCALE_INVALID_ORDER", "message": m}))
            .collect();
        return Err(Rejected {
            status: 400,
            code: "SCALE_INVALID_ORDER",
            body: json!({"error": "Scale order validation failed", "errors": errors}),
        });
    }
    Ok(ScaleSpec {
        symbol: normalize_symbol(&symbol),
        side,
        leverage,
        orders: out,
    })
}

fn basket(m: &Map<String, Value>, has_account: bool) -> Result<Vec<OrderSpec>, Rejected> {
    let legs = match m.get("legs") {
        Some(Value::Array(a)) if !a.is_empty() && has_account => a,
        _ => return Err(missing("Missing required fields: subAccountId, legs[]")),
    };
    legs.iter()
        .map(|leg| {
            let Value::Object(l) = leg else {
                return Err(invalid("legs", "each leg must be an object"));
            };
            order_spec(
                l,
                true,
                false,
                &format!(
                    "Invalid leg: each leg needs symbol, side, quantity, leverage. Got: {leg}"
                ),
            )
        })
        .collect()
}

fn rules_patch(m: &Map<String, Value>) -> Result<RulesPatch, Rejected> {
    Ok(RulesPatch {
        max_leverage: positive(m, "maxLeverage")?,
        max_notional_per_trade: positive(m, "maxNotionalPerTrade")?,
        max_total_exposure: positive(m, "maxTotalExposure")?,
        max_symbol_exposure: positive(m, "maxSymbolExposure")?,
        max_daily_loss: positive(m, "maxDailyLoss")?,
        liquidation_threshold: match positive(m, "liquidationThreshold")? {
            Some(t) if t > Decimal::ONE => {
                return Err(invalid("liquidationThreshold", "must be at most 1"))
            }
            t => t,
        },
    })
}

fn liquidation_mode(m: &Map<String, Value>) -> Result<Option<LiquidationMode>, Rejected> {
    string(m, "liquidationMode")?
        .map(|s| {
            LiquidationMode::parse(&s).ok_or_else(|| {
                invalid(
                    "liquidationMode",
                    "must be ADL_30, INSTANT_CLOSE or TAKEOVER",
                )
            })
        })
        .transpose()
}

/// Parses and validates the command in `env`. Checks that need no IO — the size,
/// the type, the admin role, each field — in that order.
pub fn parse(env: &Envelope) -> Result<Command, Rejected> {
    if env.bytes > MAX_COMMAND_BYTES {
        return Err(Rejected::new(
            "PAYLOAD_TOO_LARGE",
            format!(
                "Command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                env.bytes
            ),
        ));
    }
    let Some(kind) = Kind::parse(&env.kind) else {
        return Err(Rejected::new(
            "UNKNOWN_COMMAND",
            format!("Unknown command type '{}'", env.kind),
        ));
    };
    if let Some(t) = env.fields.get("type").and_then(Value::as_str) {
        if t != kind.name() {
            return Err(invalid(
                "type",
                &format!("'{t}' sent on the '{}' queue", kind.name()),
            ));
        }
    }
    if !kind.supported() {
        return Err(Rejected::new(
            "NOT_SUPPORTED_YET",
            format!("'{}' is not supported by this engine yet", kind.name()),
        ));
    }
    if kind.admin() && env.role != Role::Admin {
        return Err(Rejected::new("FORBIDDEN", "Admin access required"));
    }
    let m = &env.fields;
    let has_account = env.sub_account_id.is_some();
    let account_only = |c: Command| {
        if has_account {
            Ok(c)
        } else {
            Err(missing("Missing subAccountId"))
        }
    };
    match kind {
        Kind::Trade => order_spec(m, has_account, false, TRADE_FIELDS).map(Command::Trade),
        Kind::Validate => order_spec(m, has_account, false, TRADE_FIELDS).map(Command::Validate),
        Kind::Limit => order_spec(
            m,
            has_account,
            true,
            "Missing fields: subAccountId, symbol, side, quantity, price, leverage",
        )
        .map(Command::Limit),
        Kind::Scale => scale(m, has_account).map(Command::Scale),
        Kind::Basket => basket(m, has_account).map(Command::Basket),
        Kind::Close | Kind::ForceClose => Ok(Command::Close {
            position_id: id(m, "positionId")?,
        }),
        Kind::CloseAll | Kind::ForceCloseAll => account_only(Command::CloseAll),
        Kind::LimitClose => {
            let position_id = id(m, "positionId")?;
            let price = positive(m, "price")?.ok_or_else(|| missing("Missing price"))?;
            Ok(Command::LimitClose { position_id, price })
        }
        Kind::CancelOrder => Ok(Command::CancelOrder {
            order_id: id(m, "orderId")?,
        }),
        Kind::CancelAllOrders => account_only(Command::CancelAllOrders),
        Kind::AccountCreate => {
            let name = string(m, "name")?;
            let kind = string(m, "accountType")?.unwrap_or_else(|| "USER".into());
            let bot = match kind.to_ascii_uppercase().as_str() {
                "USER" => false,
                "BOT" => true,
                _ => return Err(invalid("accountType", "must be USER or BOT")),
            };
            let initial = match m.get("initialBalance") {
                None | Some(Value::Null) => None,
                Some(_) => Some(decimal(m, "initialBalance")?.unwrap_or(Decimal::ZERO)),
            };
            let (Some(name), Some(initial_balance)) = (name, initial) else {
                return Err(missing("Missing required fields: name, initialBalance"));
            };
            if initial_balance.is_sign_negative() {
                return Err(invalid("initialBalance", "must not be negative"));
            }
            Ok(Command::AccountCreate(NewAccountSpec {
                name,
                bot,
                owner_user_id: string(m, "ownerUserId")?.or_else(|| env.user_id.clone()),
                initial_balance,
                liquidation_mode: liquidation_mode(m)?.unwrap_or(LiquidationMode::Adl30),
                maintenance_rate: positive(m, "maintenanceRate")?,
            }))
        }
        Kind::AccountUpdate => account_only(Command::AccountUpdate {
            name: string(m, "name")?,
            liquidation_mode: liquidation_mode(m)?,
            maintenance_rate: positive(m, "maintenanceRate")?,
        }),
        Kind::BalanceAdjust => {
            let amount = decimal(m, "amount")?;
            let reason = string(m, "reason")?;
            let (Some(amount), Some(reason), true) = (amount, reason, has_account) else {
                return Err(missing(
                    "Missing required fields: subAccountId, amount, reason",
                ));
            };
            Ok(Command::BalanceAdjust { amount, reason })
        }
        Kind::RiskRulesSet => {
            let global = boolean(m, "global")?;
            if !global && !has_account {
                return Err(missing("Missing subAccountId (or global: true)"));
            }
            Ok(Command::RiskRulesSet {
                global,
                rules: rules_patch(m)?,
            })
        }
        Kind::AccountFreeze => account_only(Command::AccountFreeze),
        Kind::AccountUnfreeze => account_only(Command::AccountUnfreeze),
        Kind::AdminTakeover
        | Kind::ChaseStart
        | Kind::ChaseCancel
        | Kind::ScalperStart
        | Kind::ScalperCancel
        | Kind::TwapStart
        | Kind::TwapCancel
        | Kind::TwapBasketStart
        | Kind::TwapBasketCancel
        | Kind::TrailStopStart
        | Kind::TrailStopCancel
        | Kind::SurfStart
        | Kind::SurfAdjust
        | Kind::SurfStop
        | Kind::BabysitterClose => Err(Rejected::new(
            "NOT_SUPPORTED_YET",
            format!("'{}' is not supported by this engine yet", kind.name()),
        )),
    }
}

/// A body field's JSON type, as the schema documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A number or a numeric string, finite.
    Number,
    String,
    Bool,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// `scale`'s `[{price, quantity}]`.
    Orders,
    /// `basket`'s `[{symbol, side, quantity, leverage}]`.
    Legs,
}

/// One field of a command's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    pub doc: &'static str,
}

const fn f(name: &'static str, ty: FieldType, required: bool, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        required,
        doc,
    }
}

const SIDE: FieldType = FieldType::Enum(&["LONG", "SHORT", "BUY", "SELL"]);
const MODE: FieldType = FieldType::Enum(&["ADL_30", "INSTANT_CLOSE", "TAKEOVER"]);
const ACCOUNT: Field = f("subAccountId", FieldType::String, true, "the sub-account");
const SYMBOL: Field = f(
    "symbol",
    FieldType::String,
    true,
    "BTCUSDT or BTC/USDT:USDT",
);
const QUANTITY: Field = f("quantity", FieldType::Number, true, "base units, > 0");
const LEVERAGE: Field = f("leverage", FieldType::Number, true, "> 0");
const REDUCE_ONLY: Field = f("reduceOnly", FieldType::Bool, false, "only reduce");
const ORDER: [Field; 6] = [
    ACCOUNT,
    SYMBOL,
    f("side", SIDE, true, "case-insensitive"),
    QUANTITY,
    LEVERAGE,
    REDUCE_ONLY,
];
const RULES: [Field; 8] = [
    f(
        "subAccountId",
        FieldType::String,
        false,
        "the account (or global: true)",
    ),
    f(
        "global",
        FieldType::Bool,
        false,
        "the global rules instead of subAccountId's",
    ),
    f("maxLeverage", FieldType::Number, false, ""),
    f("maxNotionalPerTrade", FieldType::Number, false, "USDT"),
    f("maxTotalExposure", FieldType::Number, false, "USDT"),
    f("maxSymbolExposure", FieldType::Number, false, "USDT"),
    f("maxDailyLoss", FieldType::Number, false, "USDT"),
    f("liquidationThreshold", FieldType::Number, false, "(0, 1]"),
];

const SCALE_FIELDS: [Field; 5] = [
    ACCOUNT,
    SYMBOL,
    f("side", SIDE, true, ""),
    LEVERAGE,
    f(
        "orders",
        FieldType::Orders,
        true,
        "5 to 30 orders, distinct prices",
    ),
];
const BASKET_FIELDS: [Field; 3] = [
    ACCOUNT,
    f("legs", FieldType::Legs, true, "one market order per leg"),
    f("basketName", FieldType::String, false, ""),
];
const LIMITCLOSE_FIELDS: [Field; 2] = [
    f("positionId", FieldType::String, true, "the position"),
    f("price", FieldType::Number, true, "limit price, > 0"),
];
const ACCOUNTCREATE_FIELDS: [Field; 6] = [
    f("name", FieldType::String, true, "1 to 100 characters"),
    f(
        "accountType",
        FieldType::Enum(&["USER", "BOT"]),
        false,
        "default USER",
    ),
    f("initialBalance", FieldType::Number, true, "USDT, ≥ 0"),
    f(
        "ownerUserId",
        FieldType::String,
        false,
        "a UUID; default the acting userId",
    ),
    f("liquidationMode", MODE, false, "default ADL_30"),
    f("maintenanceRate", FieldType::Number, false, "default 0.005"),
];
const ACCOUNTUPDATE_FIELDS: [Field; 4] = [
    ACCOUNT,
    f("name", FieldType::String, false, ""),
    f("liquidationMode", MODE, false, ""),
    f("maintenanceRate", FieldType::Number, false, ""),
];
const BALANCEADJUST_FIELDS: [Field; 3] = [
    ACCOUNT,
    f("amount", FieldType::Number, true, "USDT, signed"),
    f("reason", FieldType::String, true, "for the audit log"),
];

/// The body fields of each supported command: what the schema publishes and what
/// [`parse`] reads (a test holds the two together).
pub fn fields(kind: Kind) -> &'static [Field] {
    const LIMIT: [Field; 7] = [
        ORDER[0],
        ORDER[1],
        ORDER[2],
        ORDER[3],
        f("price", FieldType::Number, true, "limit price, > 0"),
        ORDER[4],
        ORDER[5],
    ];
    const POSITION: [Field; 1] = [f("positionId", FieldType::String, true, "the position")];
    const ACCOUNT_ONLY: [Field; 1] = [ACCOUNT];
    const CANCEL: [Field; 1] = [f("orderId", FieldType::String, true, "our order id")];
    match kind {
        Kind::Trade | Kind::Validate => &ORDER,
        Kind::Limit => &LIMIT,
        Kind::Scale => &SCALE_FIELDS,
        Kind::Basket => &BASKET_FIELDS,
        Kind::Close | Kind::ForceClose => &POSITION,
        Kind::LimitClose => &LIMITCLOSE_FIELDS,
        Kind::CancelOrder => &CANCEL,
        Kind::CloseAll
        | Kind::ForceCloseAll
        | Kind::CancelAllOrders
        | Kind::AccountFreeze
        | Kind::AccountUnfreeze => &ACCOUNT_ONLY,
        Kind::AccountCreate => &ACCOUNTCREATE_FIELDS,
        Kind::AccountUpdate => &ACCOUNTUPDATE_FIELDS,
        Kind::BalanceAdjust => &BALANCEADJUST_FIELDS,
        Kind::RiskRulesSet => &RULES,
        _ => &[],
    }
}

fn field_schema(t: FieldType) -> Value {
    let number = json!({"oneOf": [{"type": "number"}, {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"}]});
    match t {
        FieldType::Number => number,
        FieldType::String => json!({"type": "string"}),
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::Enum(v) => json!({"type": "string", "enum": v}),
        FieldType::Orders => json!({"type": "array", "minItems": 5, "maxItems": 30, "items": {
            "type": "object", "required": ["price", "quantity"],
            "properties": {"price": number, "quantity": number}}}),
        FieldType::Legs => json!({"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["symbol", "side", "quantity", "leverage"],
            "properties": {"symbol": {"type": "string"}, "side": field_schema(SIDE),
                           "quantity": number, "leverage": number}}}),
    }
}

/// The JSON Schema of `kind`'s envelope: its body fields and the transport fields.
pub fn envelope_schema(kind: Kind) -> Value {
    let mut props = Map::new();
    let mut required = vec![json!("requestId")];
    for (name, s, doc) in [
        ("v", json!({"const": 1}), "envelope version"),
        ("type", json!({"const": kind.name()}), "the command type"),
        (
            "requestId",
            json!({"type": "string", "minLength": 1, "maxLength": 128}),
            "answered on pms:result:{requestId}",
        ),
        ("userId", json!({"type": "string"}), "the acting user"),
        (
            "role",
            json!({"enum": ["USER", "ADMIN"]}),
            "the acting user's role",
        ),
        (
            "source",
            json!({"type": "string"}),
            "http, bot, babysitter, admin",
        ),
        (
            "idempotencyKey",
            json!({"type": "string"}),
            "same key, same body: the first result",
        ),
        ("ts", json!({"type": "integer"}), "gateway receive time, ms"),
        (
            "deadlineTs",
            json!({"type": "integer"}),
            "not started after this, ms",
        ),
    ] {
        let mut s = s;
        s["description"] = doc.into();
        props.insert(name.into(), s);
    }
    for fd in fields(kind) {
        let mut s = field_schema(fd.ty);
        if !fd.doc.is_empty() {
            s["description"] = fd.doc.into();
        }
        props.insert(fd.name.into(), s);
        if fd.required {
            required.push(fd.name.into());
        }
    }
    json!({"type": "object", "properties": props, "required": required,
           "x-kill-switch": kind.kill_switch(), "x-admin": kind.admin()})
}

/// A valid example body for `kind` (every field given), from its fields.
pub fn example(kind: Kind) -> Value {
    let mut m = Map::new();
    for fd in fields(kind) {
        let v = match (fd.name, fd.ty) {
            ("symbol", _) => json!("BTCUSDT"),
            ("ownerUserId", _) => json!("9a0d3c1e-0000-4000-8000-000000000001"),
            (_, FieldType::Number) => json!(0.5),
            (_, FieldType::String) => json!("x"),
            (_, FieldType::Bool) => json!(false),
            (_, FieldType::Enum(v)) => json!(v[0]),
            (_, FieldType::Orders) => (1..=5)
                .map(|i| json!({"price": 100 + i, "quantity": 0.5}))
                .collect(),
            (_, FieldType::Legs) => {
                json!([{"symbol": "BTCUSDT", "side": "LONG", "quantity": 0.5, "leverage": 2}])
            }
        };
        m.insert(fd.name.into(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kind: &str, v: Value) -> Envelope {
        decode(v.to_string().as_bytes(), kind).unwrap()
    }

    fn trade(extra: Value) -> Value {
        let mut v = json!({"requestId": "r1", "subAccountId": "a", "symbol": "BTC/USDT:USDT",
                           "side": "long", "quantity": 0.002, "leverage": "20"});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    }

    #[test]
    fn a_trade_is_parsed_exactly_with_its_symbol_normalized() {
        let c = parse(&env("trade", trade(json!({})))).unwrap();
        assert_eq!(
            c,
            Command::Trade(OrderSpec {
                symbol: "BTCUSDT".into(),
                side: OrderSide::Buy,
                quantity: Decimal::from_str("0.002").unwrap(),
                leverage: Decimal::from(20),
                price: None,
                reduce_only: false,
            })
        );
    }

    #[test]
    fn missing_and_js_falsy_fields_get_the_routes_message() {
        for patch in [
            json!({"quantity": 0}),
            json!({"symbol": ""}),
            json!({"leverage": null}),
        ] {
            let r = parse(&env("trade", trade(patch))).unwrap_err();
            assert_eq!((r.status, r.code), (400, "MISSING_FIELDS"));
            assert_eq!(r.body["error"], TRADE_FIELDS);
        }
    }

    #[test]
    fn non_finite_mistyped_and_negative_numbers_are_refused() {
        for patch in [
            json!({"quantity": "NaN"}),
            json!({"quantity": "Infinity"}),
            json!({"quantity": [1]}),
            json!({"leverage": {"x": 1}}),
            json!({"quantity": -1}),
            json!({"reduceOnly": "yes"}),
        ] {
            let r = parse(&env("trade", trade(patch.clone()))).unwrap_err();
            assert_eq!((r.status, r.code), (400, "INVALID_FIELD"), "{patch}");
        }
        let r = parse(&env("trade", trade(json!({"side": "UP"})))).unwrap_err();
        assert_eq!(r.body["error"], "side must be LONG or SHORT");
    }

    #[test]
    fn what_cannot_be_answered_says_why() {
        assert_eq!(decode(b"{", "trade").unwrap_err().code(), "INVALID_JSON");
        assert_eq!(decode(b"[1]", "trade").unwrap_err(), Undecodable::NotObject);
        assert_eq!(
            decode(br#"{"requestId": ""}"#, "trade").unwrap_err(),
            Undecodable::NoRequestId
        );
        assert_eq!(
            decode(br#"{"requestId": 7}"#, "trade").unwrap_err(),
            Undecodable::NoRequestId
        );
    }

    #[test]
    fn size_type_support_and_role_are_checked_first() {
        let mut big = trade(json!({}));
        big["pad"] = json!("x".repeat(MAX_COMMAND_BYTES));
        assert_eq!(parse(&env("trade", big)).unwrap_err().status, 413);
        assert_eq!(
            parse(&env("frobnicate", trade(json!({}))))
                .unwrap_err()
                .code,
            "UNKNOWN_COMMAND"
        );
        assert_eq!(
            parse(&env("trade", trade(json!({"type": "limit"}))))
                .unwrap_err()
                .code,
            "INVALID_FIELD"
        );
        let r = parse(&env("chase_start", trade(json!({})))).unwrap_err();
        assert_eq!((r.status, r.code), (501, "NOT_SUPPORTED_YET"));
        let r = parse(&env(
            "balance_adjust",
            json!({"requestId": "r", "subAccountId": "a",
                                                    "amount": -5, "reason": "fee"}),
        ))
        .unwrap_err();
        assert_eq!((r.status, r.code), (403, "FORBIDDEN"));
        let c = parse(&env("balance_adjust", json!({"requestId": "r", "subAccountId": "a",
                                                    "role": "ADMIN", "amount": "-5.5", "reason": "fee"})))
        .unwrap();
        assert_eq!(
            c,
            Command::BalanceAdjust {
                amount: Decimal::from_str("-5.5").unwrap(),
                reason: "fee".into()
            }
        );
    }

    #[test]
    fn scale_checks_count_side_leverage_and_each_order() {
        let orders = |n: usize| -> Value {
            (0..n)
                .map(|i| json!({"price": 100 + i, "quantity": 1}))
                .collect()
        };
        let base = |o: Value| {
            json!({"requestId": "r", "subAccountId": "a", "symbol": "BTCUSDT",
                                     "side": "LONG", "leverage": 10, "orders": o})
        };
        assert_eq!(
            parse(&env("scale", base(orders(3)))).unwrap_err().code,
            "SCALE_INVALID_COUNT"
        );
        let mut dup = orders(5);
        dup[4]["price"] = json!(100);
        let r = parse(&env("scale", base(dup))).unwrap_err();
        assert_eq!(
            r.body["errors"][0]["message"],
            "Order #5: duplicate price 100"
        );
        let Command::Scale(s) = parse(&env("scale", base(orders(5)))).unwrap() else {
            panic!("not a scale");
        };
        assert_eq!(s.orders.len(), 5);
    }

    #[test]
    fn the_body_leaves_out_the_envelope() {
        let e = env(
            "trade",
            trade(json!({"ts": 1, "deadlineTs": 2, "idempotencyKey": "k", "userId": "u"})),
        );
        let b = e.body();
        assert!(b.get("ts").is_none() && b.get("requestId").is_none());
        assert_eq!(b["subAccountId"], "a");
        assert!(e.expired(3) && !e.expired(2));
        assert_eq!(e.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn kill_switches_are_the_stops_and_the_admin_actions() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(*k));
            if k.admin() {
                assert!(k.kill_switch(), "{k:?}");
            }
        }
        assert!(!Kind::Trade.kill_switch() && Kind::CancelAllOrders.kill_switch());
    }

    #[test]
    fn the_published_fields_are_the_ones_parse_reads() {
        for kind in Kind::ALL.iter().filter(|k| k.supported()) {
            let mut body = example(*kind);
            body["requestId"] = json!("r");
            body["role"] = json!("ADMIN");
            assert!(
                parse(&env(kind.name(), body.clone())).is_ok(),
                "{kind:?}: the example of its schema is refused: {body}"
            );
            for fd in fields(*kind).iter().filter(|f| f.required) {
                let mut less = body.clone();
                less.as_object_mut().unwrap().remove(fd.name);
                let r = parse(&env(kind.name(), less));
                assert!(
                    r.as_ref().is_err_and(|r| r.status == 400),
                    "{kind:?} without {}: {r:?}",
                    fd.name
                );
            }
            let schema = envelope_schema(*kind);
            assert_eq!(schema["properties"]["type"]["const"], kind.name());
        }
    }
}
