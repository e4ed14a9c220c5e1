//! The simulator's REST answers: Binance's error body, a JSON body, a refusal.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub(crate) type Params = HashMap<String, String>;

/// A Binance error response.
pub(crate) fn error(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"code": code, "msg": msg}).to_string(),
    )
        .into_response()
}

pub(crate) fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A refused request: its HTTP status and Binance's code and message. Alone it is
/// an error response; inside a batch, one element of the answer array.
#[derive(Debug)]
pub(crate) struct Reject(StatusCode, i64, String);

impl Reject {
    pub(crate) fn response(self) -> Response {
        error(self.0, self.1, &self.2)
    }

    pub(crate) fn json(&self) -> Value {
        json!({"code": self.1, "msg": self.2})
    }
}

pub(crate) fn reject(status: StatusCode, code: i64, msg: &str) -> Reject {
    Reject(status, code, msg.to_owned())
}

pub(crate) fn missing(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}
