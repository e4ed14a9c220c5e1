//! Each command's fields as a table: the OpenAPI document's schemas and examples.

use serde_json::{json, Map, Value};

use super::envelope::Kind;

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
const BABYSITTER_FIELDS: [Field; 3] = [
    f("positionId", FieldType::String, true, "the position"),
    f(
        "closePrice",
        FieldType::Number,
        true,
        "> 0; the price of a close in the book when no fresh mark is known",
    ),
    f(
        "reason",
        FieldType::String,
        false,
        "booked as the close's action: 1-40 of letters, digits, _ - :; default BABYSITTER_TP",
    ),
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
        Kind::Close | Kind::ForceClose | Kind::AdminTakeover => &POSITION,
        Kind::LimitClose => &LIMITCLOSE_FIELDS,
        Kind::BabysitterClose => &BABYSITTER_FIELDS,
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
