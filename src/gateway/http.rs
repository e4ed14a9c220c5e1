//! The commands over HTTP (js-gateway §2.2): `POST /v1/cmd/{type}`, body = the
//! envelope (a missing `requestId` is made up; `Idempotency-Key` header = the
//! envelope's key), reply = the result envelope with `httpStatus` as the status.
//! Authenticated by `Authorization: Bearer <GS_CONTROL_TOKEN>`; without a token
//! configured, commands over HTTP are off (503).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use streaming::secret::Secret;
use tokio::sync::OnceCell;
use trading::command::{self, MAX_COMMAND_BYTES};

use super::{result_json, Gateway, Reply, UNDECODABLE};
use crate::engine::execution::now_ms;

#[derive(Clone)]
struct Http {
    gateway: Arc<OnceCell<Gateway>>,
    token: Option<Secret>,
}

/// The routes, served before the gateway exists (the database opens after the
/// listener): until then, and while the engine recovers, commands get 503.
pub fn router(gateway: Arc<OnceCell<Gateway>>, token: Option<Secret>) -> Router {
    Router::new()
        .route("/v1/cmd/{kind}", post(command))
        // Room to read an oversized command and say so (413 with a code).
        .layer(DefaultBodyLimit::max(4 * MAX_COMMAND_BYTES))
        .with_state(Http { gateway, token })
}

fn reply(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

fn error(status: u16, code: &'static str, message: &str) -> Response {
    let r = Reply::error(status, code, message);
    reply(
        status,
        json!({"ok": false, "httpStatus": status, "code": code, "body": r.body}),
    )
}

/// Constant-time comparison: the token's length and bytes leak nothing by timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn command(
    State(h): State<Http>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &h.token else {
        return error(
            503,
            "COMMANDS_DISABLED",
            "Commands over HTTP need GS_CONTROL_TOKEN",
        );
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !same(given.as_bytes(), token.expose().as_bytes()) {
        return error(401, "UNAUTHORIZED", "Authentication required");
    }
    let Some(gateway) = h.gateway.get().filter(|g| g.ready()) else {
        return error(503, "ENGINE_RECOVERING", "Trading engine unavailable");
    };
    let started = now_ms();
    // The envelope's requestId, or one made up; the header's idempotency key.
    let mut raw = body.to_vec();
    if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&raw) {
        let mut changed = false;
        if !m.contains_key("requestId") {
            m.insert("requestId".into(), made_up_request_id().into());
            changed = true;
        }
        if let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
            m.insert("idempotencyKey".into(), k.into());
            changed = true;
        }
        if changed {
            raw = serde_json::to_vec(&Value::Object(m)).unwrap_or(raw);
        }
    }
    let env = match command::decode(&raw, &kind) {
        Ok(e) => e,
        Err(e) => {
            metrics::counter!(UNDECODABLE, "code" => e.code()).increment(1);
            return error(400, e.code(), &e.to_string());
        }
    };
    let request_id = env.request_id.clone();
    let r = gateway.execute(env).await;
    let status = r.status;
    let mut resp = reply(
        status,
        result_json(&kind, &request_id, &r, started, now_ms()),
    );
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
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
