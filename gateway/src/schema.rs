//! The contract as a document: `GET /v1/openapi.json` (OpenAPI 3.1) — each command's
//! envelope and an example, generated from `trading::command`'s field tables (the
//! ones its parser is tested against), the result envelope, the reads, every account
//! event on `pms:events:{type}` with its fields, and every error code with its status.
//! Tests check the engine's events against it, field by field.

use serde_json::{json, Map, Value};
use trading::command::{envelope_schema, example, status_of, Kind};

/// A field of an event: its name, JSON type(s), and whether it may be absent.
type EventField = (&'static str, &'static [&'static str], bool);

const N: &[&str] = &["number"];
const NN: &[&str] = &["number", "null"];
const S: &[&str] = &["string"];
const SN: &[&str] = &["string", "null"];
const I: &[&str] = &["integer"];
const B: &[&str] = &["boolean"];

/// Every account event the engine publishes, with its fields (besides `subAccountId`,
/// `seq` and `ts`, which every one carries).
pub const EVENTS: &[(&str, &[EventField])] = &[
    (
        "pnl_update",
        &[
            ("positionId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("entryPrice", N, true),
            ("markPrice", NN, true),
            ("quantity", N, true),
            ("unrealizedPnl", NN, true),
            ("liquidationPrice", NN, true),
            ("margin", N, true),
            ("pnlPercent", NN, true),
        ],
    ),
    (
        "margin_update",
        &[
            ("equity", N, true),
            ("balance", N, true),
            ("unrealizedPnl", N, true),
            ("marginUsed", N, true),
            ("availableMargin", N, true),
            ("totalExposure", N, true),
            ("maintenanceMargin", N, true),
            ("marginRatio", N, true),
            ("accountLiqPrice", NN, true),
            ("positionCount", I, true),
        ],
    ),
    (
        "margin_warning",
        &[("marginRatio", N, true), ("message", S, true)],
    ),
    (
        "order_placed",
        &[
            ("orderId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("price", NN, true),
            ("quantity", N, true),
            ("notional", NN, true),
            ("exchangeOrderId", SN, true),
            ("scaleIndex", I, false),
            ("scaleTotal", I, false),
        ],
    ),
    (
        "order_filled",
        &[
            ("orderId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("price", N, true),
            ("quantity", N, true),
            ("exchangeOrderId", SN, true),
            ("orderType", S, true),
            ("origin", S, true),
            ("suppressToast", B, true),
        ],
    ),
    (
        "order_cancelled",
        &[
            ("orderId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("price", NN, true),
            ("reason", S, true),
        ],
    ),
    (
        "position_updated",
        &[
            ("positionId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("entryPrice", N, true),
            ("quantity", N, true),
            ("notional", N, true),
            ("leverage", N, true),
            ("margin", N, true),
            ("liquidationPrice", NN, true),
            ("babysitterExcluded", B, true),
        ],
    ),
    (
        "position_closed",
        &[
            ("positionId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("realizedPnl", N, true),
            ("newBalance", N, true),
            ("reason", S, true),
        ],
    ),
    (
        "position_reduced",
        &[
            ("positionId", S, true),
            ("symbol", S, true),
            ("side", S, true),
            ("remainingQty", NN, true),
            ("closedQty", N, true),
            ("realizedPnl", N, true),
            ("newBalance", N, true),
            ("reason", S, true),
        ],
    ),
];

/// Every error code the contract uses (the risk and venue codes are 400).
pub const ERROR_CODES: &[&str] = &[
    "INVALID_JSON",
    "MISSING_REQUEST_ID",
    "UNKNOWN_COMMAND",
    "MISSING_FIELDS",
    "INVALID_FIELD",
    "INVALID_SIDE",
    "INVALID_LEVERAGE",
    "PAYLOAD_TOO_LARGE",
    "SCALE_INVALID_COUNT",
    "SCALE_INVALID_ORDER",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "ACCOUNT_NOT_FOUND",
    "POSITION_NOT_FOUND",
    "ORDER_NOT_FOUND",
    "ORDER_NOT_OPEN",
    "POSITION_DESYNC",
    "NOT_FOUND",
    "COMMAND_EXPIRED",
    "IDEMPOTENCY_IN_PROGRESS",
    "IDEMPOTENCY_KEY_REUSED",
    "ENGINE_RECOVERING",
    "ENGINE_RESTARTED",
    "COMMANDS_DISABLED",
    "NOT_SUPPORTED_YET",
    "INTERNAL",
    "DATABASE_ERROR",
    "JOURNAL_UNAVAILABLE",
    "ORDER_STATE_UNKNOWN",
    "ACCOUNT_FROZEN",
    "MAX_LEVERAGE_EXCEEDED",
    "MAX_NOTIONAL_EXCEEDED",
    "MAX_EXPOSURE_EXCEEDED",
    "INSUFFICIENT_MARGIN",
    "MARGIN_RATIO_EXCEEDED",
    "MAX_SYMBOL_EXPOSURE_EXCEEDED",
    "MAX_DAILY_LOSS_EXCEEDED",
    "EXCHANGE_PRICE_BAND",
    "INVALID_ORDER",
    "PRICE_STALE",
    "PRICE_UNAVAILABLE",
    "INVALID_SYMBOL",
    "CLOCK_DRIFT",
    "SYMBOL_DESYNC",
    "ORDER_RATE_LIMITED",
    "EXCHANGE_MIN_NOTIONAL",
    "EXCHANGE_MARGIN_INSUFFICIENT",
    "EXCHANGE_PRECISION",
    "EXCHANGE_INVALID_ORDER",
    "EXCHANGE_QTY_TOO_SMALL",
    "EXCHANGE_REJECTED",
    "EXCHANGE_ERROR",
];

fn event_schema(fields: &[EventField]) -> Value {
    let mut props = Map::new();
    let mut required = vec![json!("subAccountId"), json!("seq"), json!("ts")];
    props.insert("subAccountId".into(), json!({"type": "string"}));
    props.insert(
        "seq".into(),
        json!({"type": "integer", "minimum": 1, "description": "boot ms × 1000 + n: strictly increasing across restarts, < 2^53"}),
    );
    props.insert("ts".into(), json!({"type": "integer", "description": "ms"}));
    for (name, types, needed) in fields {
        let t = if types.len() == 1 {
            json!(types[0])
        } else {
            json!(types)
        };
        props.insert((*name).into(), json!({ "type": t }));
        if *needed {
            required.push(json!(name));
        }
    }
    json!({"type": "object", "properties": props, "required": required})
}

/// The document.
pub fn openapi() -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert(
        "ErrorBody".into(),
        json!({"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "required": ["code", "message"],
                       "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}),
    );
    schemas.insert(
        "Result".into(),
        json!({"type": "object", "required": ["v", "type", "requestId", "ok", "httpStatus", "body", "startedAt", "finishedAt"],
               "properties": {"v": {"type": "integer"}, "type": {"type": "string"}, "requestId": {"type": "string"},
                              "ok": {"type": "boolean"}, "httpStatus": {"type": "integer"},
                              "code": {"type": "string", "description": "set when ok is false"},
                              "body": {"type": "object", "description": "the JS route's body"},
                              "headers": {"type": "object"},
                              "startedAt": {"type": "integer"}, "finishedAt": {"type": "integer"}}}),
    );
    schemas.insert(
        "Body.Order".into(),
        json!({"type": "object", "description": "an order in a result body (limit, scale, limit_close, trade, close)",
               "required": ["id", "symbol", "side", "type", "quantity", "status", "state"],
               "properties": {
                   "status": {"enum": ["PENDING", "FILLED", "CANCELLED", "EXPIRED"],
                              "description": "the JS PendingOrder.status: NEW, SUBMITTED, UNKNOWN and PARTIALLY_FILLED show as PENDING; CANCELED and REJECTED as CANCELLED"},
                   "state": {"enum": ["NEW", "SUBMITTED", "UNKNOWN", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"],
                             "description": "the engine's own order state"}}}),
    );
    schemas.insert(
        "Body.TradeExecution".into(),
        json!({"type": "object", "description": "a booked fill (trade's `trade` and `trades`, close's `trade`)",
               "required": ["id", "positionId", "symbol", "side", "price", "quantity", "fee", "action", "status"],
               "properties": {"status": {"enum": ["FILLED"]},
                              "realizedPnl": {"type": ["number", "null"], "description": "net of the closing part's fee"}}}),
    );
    schemas.insert(
        "Body.CloseAllItem".into(),
        json!({"type": "object", "description": "one item of close_all's and force_close_all's `results`",
               "required": ["positionId", "symbol", "success"],
               "properties": {"positionId": {"type": "string"}, "symbol": {"type": "string"}, "success": {"type": "boolean"},
                              "pnl": {"type": ["number", "null"], "description": "when success: the realized PnL net of the close fee"},
                              "error": {"type": "string", "description": "when not success"}}}),
    );
    for kind in Kind::ALL.iter().filter(|k| k.supported()) {
        let name = format!("Command.{}", kind.name());
        let mut s = envelope_schema(*kind);
        let mut ex = example(*kind);
        ex["v"] = 1.into();
        ex["type"] = kind.name().into();
        ex["requestId"] = "6f1c2a9e-3b1d-4c8e-9f00-000000000001".into();
        ex["userId"] = "9a0d3c1e-0000-4000-8000-000000000001".into();
        ex["role"] = if kind.admin() { "ADMIN" } else { "USER" }.into();
        if *kind == Kind::BabysitterClose {
            ex["source"] = "babysitter".into();
        }
        s["example"] = ex;
        schemas.insert(name.clone(), s);
        paths.insert(
            format!("/v1/cmd/{}", kind.name()),
            json!({"post": {
                "summary": format!("{} (also RPUSH pms:cmd:{}; result on pms:result:{{requestId}})", kind.name(), kind.name()),
                "security": [{"bearer": []}],
                "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}},
                "responses": {"default": {"description": "the result envelope; the status is its httpStatus",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Result"}}}}}}}),
        );
    }
    let mut events = Map::new();
    for (name, fields) in EVENTS {
        let key = format!("Event.{name}");
        schemas.insert(key.clone(), event_schema(fields));
        events.insert(
            (*name).into(),
            json!({"channel": format!("pms:events:{name}"), "schema": {"$ref": format!("#/components/schemas/{key}")}}),
        );
    }
    for (path, summary) in [
        (
            "/v1/accounts/{id}/positions",
            "{account, positions, summary, rules}",
        ),
        ("/v1/accounts/{id}/balance", "the summary"),
        ("/v1/accounts/{id}/margin", "{account, …summary, rules}"),
        (
            "/v1/accounts/{id}/pnl",
            "?from=&to= (RFC 3339 or Unix ms), interval=hour|day → {subAccountId, interval, from, to, asOf, current, bySymbol: [{symbol, realizedGross, fees, funding (null: not attributed), realizedNet, realizedGrossToday, feesToday, realizedNetToday, unrealizedPnl}], points: [{hour, balance, equity, unrealizedPnl, realizedPnl, realizedToday, exposure, marginRatio, drawdown, marks}]}",
        ),
        ("/v1/prices/{symbol}", "{symbol, price, mark, timestamp}"),
        (
            "/v1/markets/{symbol}",
            "{symbol, tickSize, stepSize, minNotional, …}",
        ),
    ] {
        paths.insert(
            path.into(),
            json!({"get": {"summary": summary, "security": [{"bearer": []}],
                           "responses": {"200": {"description": summary},
                                         "default": {"description": "an error",
                                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}}}}),
        );
    }
    paths.insert(
        "/v1/accounts/{id}/validate".into(),
        json!({"post": {"summary": "{valid, errors, computedValues?}", "security": [{"bearer": []}],
                        "responses": {"200": {"description": "always 200; valid says"}}}}),
    );
    let codes: Map<String, Value> = ERROR_CODES
        .iter()
        .map(|c| ((*c).to_owned(), json!(status_of(c))))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "greekstream trading engine: the gateway contract", "version": "1",
                 "description": "Commands over HTTP and on the Redis bus (the same envelopes and results), the reads, the events and the error codes. docs/trading/gateway.md explains them."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "GS_CONTROL_TOKEN, or a JWT (HS256) signed with GS_JWT_SECRET"}},
        },
        "x-events": events,
        "x-error-codes": codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_command_and_event_is_documented() {
        let doc = openapi();
        for k in Kind::ALL.iter().filter(|k| k.supported()) {
            assert!(doc["paths"][format!("/v1/cmd/{}", k.name())].is_object());
            assert!(
                doc["components"]["schemas"][format!("Command.{}", k.name())]["example"]
                    .is_object()
            );
        }
        for (name, _) in EVENTS {
            assert_eq!(
                doc["x-events"][name]["channel"],
                format!("pms:events:{name}")
            );
        }
        assert_eq!(doc["x-error-codes"]["COMMAND_EXPIRED"], 408);
    }
}
