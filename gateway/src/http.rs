//! The control API's trading routes (js-gateway §2.2):
//!
//! - `POST /v1/cmd/{type}`: body = the envelope (a missing `requestId` is made up
//!   and returned in `X-Request-Id`; the `Idempotency-Key` header is the envelope's
//!   key); reply = the result envelope, with `httpStatus` as the status.
//! - Reads: `GET /v1/accounts/{id}/positions|balance|margin`,
//!   `GET /v1/accounts/{id}/pnl?from=&to=&interval=hour|day` (the hourly history),
//!   `POST /v1/accounts/{id}/validate`, `GET /v1/prices/{symbol}`,
//!   `GET /v1/markets/{symbol}` — bodies as the JS routes'.
//!
//! Authenticated ([`auth`]): the gateway's bearer token, or a user's JWT. A JWT's
//! user and role replace the envelope's; the gateway may name its user on reads with
//! `X-User-Id` / `X-User-Role` (checked like a command's). Without a token
//! configured, the routes answer 503 `COMMANDS_DISABLED`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use streaming::secret::Secret;
use tokio::sync::OnceCell;
use trading::command::{self, normalize_symbol, Role, MAX_COMMAND_BYTES};

use super::auth::{authenticate, Caller};
use super::{handlers, owns, result_json, Gateway, Reply, UNDECODABLE};
use engine::execution::{now_ms, Executor};
use engine::risk_loop::{margin_update, num, snapshot};

#[derive(Clone)]
struct Http {
    gateway: Arc<OnceCell<Gateway>>,
    token: Option<Secret>,
    jwt: Option<Secret>,
}

/// The routes, served before the gateway exists (the database opens after the
/// listener): until then, and while the engine recovers, they answer 503.
pub fn router(
    gateway: Arc<OnceCell<Gateway>>,
    token: Option<Secret>,
    jwt: Option<Secret>,
) -> Router {
    Router::new()
        .route("/v1/cmd/{kind}", post(command))
        .route("/v1/accounts/{id}/positions", get(positions))
        .route("/v1/accounts/{id}/balance", get(balance))
        .route("/v1/accounts/{id}/margin", get(margin))
        .route("/v1/accounts/{id}/validate", post(validate))
        .route("/v1/accounts/{id}/pnl", get(pnl))
        .route("/v1/prices/{symbol}", get(price))
        .route("/v1/markets/{symbol}", get(market))
        .route("/v1/openapi.json", get(openapi))
        // Room to read an oversized command and say so (413 with a code).
        .layer(DefaultBodyLimit::max(4 * MAX_COMMAND_BYTES))
        .with_state(Http {
            gateway,
            token,
            jwt,
        })
}

fn reply(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

/// A failure outside a command: the JS flat error body with its code.
pub fn error(code: &'static str, message: &str) -> Response {
    let r = Reply::error(code, message);
    reply(r.status, r.body)
}

/// Answers unknown routes on the control listener.
pub async fn not_found() -> Response {
    error("NOT_FOUND", "No such route")
}

impl Http {
    /// The caller and the recovered engine, or the response that refuses.
    fn admit(&self, headers: &HeaderMap) -> Result<(Caller, &Gateway, Executor), Reply> {
        if self.token.is_none() && self.jwt.is_none() {
            return Err(Reply::error(
                "COMMANDS_DISABLED",
                "The control API's trading routes need GS_CONTROL_TOKEN",
            ));
        }
        let caller = authenticate(
            headers.get("authorization").and_then(|v| v.to_str().ok()),
            self.token.as_ref(),
            self.jwt.as_ref(),
            now_ms() / 1000,
        )
        .map_err(|e| Reply::error("UNAUTHORIZED", e.to_string()))?;
        let Some((g, exec)) = self
            .gateway
            .get()
            .and_then(|g| g.executor.get().map(|e| (g, e.clone())))
        else {
            return Err(Reply::error(
                "ENGINE_RECOVERING",
                "Trading engine unavailable",
            ));
        };
        Ok((caller, g, exec))
    }
}

async fn command(
    State(h): State<Http>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (caller, gateway, _) = match h.admit(&headers) {
        Ok(x) => x,
        Err(r) => return to_response(r),
    };
    let started = now_ms();
    let mut raw = body.to_vec();
    if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&raw) {
        if !m.contains_key("requestId") {
            m.insert("requestId".into(), made_up_request_id().into());
        }
        if let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
            m.insert("idempotencyKey".into(), k.into());
        }
        // A user's token says who they are; the body cannot.
        if let Caller::User { user_id, role } = &caller {
            m.insert("userId".into(), user_id.as_str().into());
            m.insert("role".into(), role.as_str().into());
        }
        raw = serde_json::to_vec(&Value::Object(m)).unwrap_or(raw);
    }
    let env = match command::decode(&raw, &kind) {
        Ok(e) => e,
        Err(e) => {
            metrics::counter!(UNDECODABLE, "code" => e.code()).increment(1);
            return error(e.code(), &e.to_string());
        }
    };
    let request_id = env.request_id.clone();
    // On its own task: a client that disconnects drops this handler, not the
    // command, which runs to its end and stores its result for the retry.
    let gateway = gateway.clone();
    let r = match tokio::spawn(async move { gateway.execute(env).await }).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a command's task failed");
            Reply::error("INTERNAL", "Internal error")
        }
    };
    let mut resp = reply(
        r.status,
        result_json(&kind, &request_id, &r, started, now_ms()),
    );
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The account `id`, checked against the caller: a JWT's user must own it; the
/// gateway's token is trusted, unless it names its user in `X-User-Id`.
async fn readable(
    g: &Gateway,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
) -> Result<database::ledger::AccountRow, Reply> {
    let row = g.account_row(id).await?;
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let (user, role) = match caller {
        Caller::User { user_id, role } => (Some(user_id.as_str()), *role),
        Caller::Gateway => match header("x-user-id") {
            Some(u) => (
                Some(u),
                match header("x-user-role") {
                    Some(r) if r.eq_ignore_ascii_case("ADMIN") => Role::Admin,
                    _ => Role::User,
                },
            ),
            None => (None, Role::Admin),
        },
    };
    owns(&row, user, role)?;
    Ok(row)
}

fn to_response(r: Reply) -> Response {
    reply(r.status, r.body)
}

/// The account valued now: `{account, positions, summary, rules}` (§4.16).
async fn valued(h: &Http, headers: &HeaderMap, id: &str) -> Result<Value, Reply> {
    let (caller, g, exec) = h.admit(headers)?;
    let row = readable(g, &caller, headers, id).await?;
    let (e, rules) = match exec.valuation(id).await {
        Ok(Some(v)) => v,
        Ok(None) => return Err(command::Rejected::account_not_found().into()),
        Err(e) => return Err(handlers::place_error(e)),
    };
    let snap = snapshot(&e, now_ms());
    let mut summary = margin_update(&e);
    summary["liquidationMode"] = row.liquidation_mode.as_str().into();
    Ok(json!({
        "account": handlers::account_json(&row),
        "positions": snap["positions"],
        "summary": summary,
        "rules": {"maxLeverage": num(rules.max_leverage),
                  "maxNotionalPerTrade": num(rules.max_notional_per_trade),
                  "maxTotalExposure": num(rules.max_total_exposure),
                  "liquidationThreshold": num(rules.liquidation_threshold)},
    }))
}

async fn positions(State(h): State<Http>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match valued(&h, &headers, &id).await {
        Ok(v) => reply(200, v),
        Err(r) => to_response(r),
    }
}

async fn balance(State(h): State<Http>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match valued(&h, &headers, &id).await {
        Ok(v) => reply(200, v["summary"].clone()),
        Err(r) => to_response(r),
    }
}

async fn margin(State(h): State<Http>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match valued(&h, &headers, &id).await {
        Ok(v) => {
            let a = &v["account"];
            let mut body = v["summary"].clone();
            body["account"] = json!({"id": a["id"], "name": a["name"], "status": a["status"],
                                     "liquidationMode": a["liquidationMode"]});
            body["rules"] = v["rules"].clone();
            reply(200, body)
        }
        Err(r) => to_response(r),
    }
}

async fn validate(
    State(h): State<Http>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (caller, g, exec) = match h.admit(&headers) {
        Ok(x) => x,
        Err(r) => return to_response(r),
    };
    if let Err(r) = readable(g, &caller, &headers, &id).await {
        return to_response(r);
    }
    let mut m = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => return error("INVALID_JSON", "The body must be a JSON object"),
    };
    m.insert("requestId".into(), made_up_request_id().into());
    m.insert("subAccountId".into(), id.as_str().into());
    let raw = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    let env = match command::decode(&raw, "validate") {
        Ok(e) => e,
        Err(e) => return error(e.code(), &e.to_string()),
    };
    let spec = match command::parse(&env) {
        Ok(command::Command::Validate(s)) => s,
        Ok(_) => return error("INTERNAL", "Internal error"),
        Err(r) => return reply(r.status, r.body),
    };
    let r = handlers::validate(&exec, &handlers::market_order(&id, &spec, "MANUAL", None)).await;
    reply(r.status, r.body)
}

async fn price(State(h): State<Http>, Path(symbol): Path<String>, headers: HeaderMap) -> Response {
    let (_, _, exec) = match h.admit(&headers) {
        Ok(x) => x,
        Err(r) => return to_response(r),
    };
    let symbol = normalize_symbol(&symbol);
    match exec.mark(&symbol).await {
        Ok(p) => reply(
            200,
            json!({"symbol": symbol, "price": num(p), "mark": num(p), "timestamp": now_ms()}),
        ),
        Err(e) => to_response(handlers::place_error(e)),
    }
}

async fn market(State(h): State<Http>, Path(symbol): Path<String>, headers: HeaderMap) -> Response {
    let (_, _, exec) = match h.admit(&headers) {
        Ok(x) => x,
        Err(r) => return to_response(r),
    };
    let symbol = normalize_symbol(&symbol);
    match exec.filters(&symbol) {
        Some(f) => reply(
            200,
            json!({"symbol": symbol, "tickSize": num(f.tick), "stepSize": num(f.step),
                   "minNotional": num(f.min_notional),
                   "pricePrecision": f.tick.normalize().scale(),
                   "quantityPrecision": f.step.normalize().scale(),
                   "percentPriceUp": num(f.up), "percentPriceDown": num(f.down)}),
        ),
        None => error("INVALID_SYMBOL", &format!("Unknown symbol {symbol}")),
    }
}

/// The contract as a document (no token needed: it holds no data).
async fn openapi() -> Response {
    reply(200, super::schema::openapi())
}

/// A request id for HTTP callers that send none: unique in this process, and
/// across restarts by the boot time.
fn made_up_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::OnceLock;
    static BOOT: OnceLock<i64> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let boot = *BOOT.get_or_init(now_ms);
    format!("http-{boot}-{}", N.fetch_add(1, Relaxed) + 1)
}

/// An instant given as RFC 3339 or Unix milliseconds.
fn instant(field: &str, raw: &str) -> Result<chrono::DateTime<chrono::Utc>, Reply> {
    let parsed = match raw.parse::<i64>() {
        Ok(ms) => chrono::DateTime::from_timestamp_millis(ms),
        Err(_) => chrono::DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
    };
    parsed.ok_or_else(|| {
        Reply::error(
            "INVALID_FIELD",
            format!("Invalid {field}: expected RFC 3339 or Unix milliseconds"),
        )
    })
}

/// Each symbol's realized PnL in the range and today (gross, fees, net; funding is
/// not attributed to sub-accounts: `null`) with its unrealized PnL at the read's marks.
fn by_symbol_json(symbols: &[database::portfolio::SymbolPnl], positions: &Value) -> Vec<Value> {
    let held: Vec<&Value> = positions.as_array().into_iter().flatten().collect();
    let mut names: Vec<&str> = symbols.iter().map(|s| s.symbol.as_str()).collect();
    names.extend(held.iter().filter_map(|p| p["symbol"].as_str()));
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let zero = database::portfolio::SymbolPnl {
                symbol: name.to_owned(),
                gross: Decimal::ZERO,
                fees: Decimal::ZERO,
                gross_today: Decimal::ZERO,
                fees_today: Decimal::ZERO,
            };
            let s = symbols.iter().find(|s| s.symbol == name).unwrap_or(&zero);
            let unrealized: Decimal = held
                .iter()
                .filter(|p| p["symbol"] == name)
                .filter_map(|p| p["unrealizedPnl"].to_string().parse::<Decimal>().ok())
                .sum();
            json!({"symbol": name, "realizedGross": num(s.gross), "fees": num(s.fees),
                   "funding": Value::Null, "realizedNet": num(s.gross - s.fees),
                   "realizedGrossToday": num(s.gross_today), "feesToday": num(s.fees_today),
                   "realizedNetToday": num(s.gross_today - s.fees_today),
                   "unrealizedPnl": num(unrealized)})
        })
        .collect()
}

/// The account's PnL history from the hourly snapshots, and its valuation now:
/// `{subAccountId, interval, from, to, asOf, current, points}`. `current` is computed
/// for the read (never older than the read itself); `points` are `pnl_history`'s.
async fn pnl(
    State(h): State<Http>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let daily = match q.get("interval").map_or("hour", String::as_str) {
            "hour" => false,
            "day" => true,
            _ => {
                return Err(Reply::error(
                    "INVALID_FIELD",
                    "Invalid interval: must be hour or day",
                ))
            }
        };
        let to = match q.get("to") {
            Some(t) => instant("to", t)?,
            None => chrono::Utc::now(),
        };
        let from = match q.get("from") {
            Some(f) => instant("from", f)?,
            None => to - chrono::TimeDelta::days(if daily { 90 } else { 7 }),
        };
        if from >= to {
            return Err(Reply::error(
                "INVALID_FIELD",
                "Invalid from: must be before to",
            ));
        }
        let current = valued(&h, &headers, &id).await?;
        let (_, g, _) = h.admit(&headers)?;
        let points = database::portfolio::history(&g.services.pool, &id, from, to, daily)
            .await
            .map_err(super::reply::storage)?;
        let points: Vec<Value> = points
            .iter()
            .map(|p| {
                json!({"hour": p.hour.to_rfc3339(), "balance": num(p.balance),
                       "equity": num(p.equity), "unrealizedPnl": num(p.unrealized),
                       "realizedPnl": num(p.realized), "realizedToday": num(p.realized_today),
                       "exposure": num(p.exposure), "marginRatio": num(p.margin_ratio),
                       "drawdown": num(p.drawdown), "marks": p.marks})
            })
            .collect();
        let symbols = database::portfolio::by_symbol(&g.services.pool, &id, from, to)
            .await
            .map_err(super::reply::storage)?;
        let by_symbol = by_symbol_json(&symbols, &current["positions"]);
        Ok(json!({
            "subAccountId": id,
            "interval": if daily { "day" } else { "hour" },
            "from": from.to_rfc3339(),
            "to": to.to_rfc3339(),
            "asOf": now_ms(),
            "current": current["summary"],
            "bySymbol": by_symbol,
            "points": points,
        }))
    };
    match answer.await {
        Ok(v) => reply(200, v),
        Err(r) => to_response(r),
    }
}
