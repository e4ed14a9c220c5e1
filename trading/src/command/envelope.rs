//! The envelope (§2.1): its transport fields, the command kinds, decoding, and the
//! refusal a bad command gets.

use serde_json::{json, Map, Value};

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
    AdminTakeover = "admin_takeover", kill = true, admin = true, supported = true;
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
    BabysitterClose = "babysitter_close", kill = true, admin = false, supported = true;
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

pub(super) fn visible_id(s: &str) -> bool {
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
