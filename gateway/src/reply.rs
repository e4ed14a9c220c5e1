//! A command's answer, its result envelope, and the answer to a storage failure.

use database::ledger;
use serde_json::{json, Value};
use trading::command::Rejected;

/// A command's answer: what the gateway's route returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// Stable, when it failed.
    pub code: Option<&'static str>,
    pub body: Value,
    pub headers: Option<Value>,
}

impl Reply {
    pub fn ok(status: u16, body: Value) -> Self {
        Self {
            status,
            code: None,
            body,
            headers: None,
        }
    }

    /// A failure with `code` (its status is the code's: `command::status_of`).
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Rejected::new(code, message).into()
    }
}

impl From<Rejected> for Reply {
    fn from(r: Rejected) -> Self {
        Self {
            status: r.status,
            code: Some(r.code),
            body: r.body,
            headers: None,
        }
    }
}

/// The result envelope (§2.1) for `env`'s request.
pub fn result_json(kind: &str, request_id: &str, r: &Reply, started: i64, finished: i64) -> Value {
    let mut v = json!({
        "v": 1, "type": kind, "requestId": request_id, "ok": r.status < 400,
        "httpStatus": r.status, "body": r.body, "startedAt": started, "finishedAt": finished,
    });
    if let Some(c) = r.code {
        v["code"] = c.into();
    }
    if let Some(h) = &r.headers {
        v["headers"] = h.clone();
    }
    v
}

pub fn storage(e: ledger::LedgerError) -> Reply {
    tracing::error!(error = %e, "command storage failed");
    Reply::error(
        "DATABASE_ERROR",
        "Internal error: the database did not answer",
    )
}
