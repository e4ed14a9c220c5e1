//! The account streamer's wire format (positions, balances and orders pushed by
//! Tastytrade). Every client message carries the access token; `connect` must come
//! first. Pure: no IO.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum StreamerMessage {
    /// The answer to one of our actions, matched by `request-id`.
    Ack {
        action: String,
        ok: bool,
        request_id: Option<u64>,
        message: String,
    },
    /// A pushed notification: `CurrentPosition`, `AccountBalance`, `Order`, ...
    Notification { kind: String, data: Value },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamerError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is neither an ack (status) nor a notification (type + data)")]
    Shape,
}

/// Parses one frame. The official JS client also accepts a `{"results": [...]}`
/// batch; we do too.
pub fn parse(text: &str) -> Result<Vec<StreamerMessage>, StreamerError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| StreamerError::NotJson(e.to_string()))?;
    match value.get("results").and_then(Value::as_array) {
        Some(items) => items.iter().map(one).collect(),
        None => one(&value).map(|m| vec![m]),
    }
}

fn one(v: &Value) -> Result<StreamerMessage, StreamerError> {
    let obj = v.as_object().ok_or(StreamerError::Shape)?;
    if let Some(status) = obj.get("status").and_then(Value::as_str) {
        return Ok(StreamerMessage::Ack {
            action: obj
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            ok: status == "ok",
            request_id: obj.get("request-id").and_then(Value::as_u64),
            message: obj
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    match (obj.get("type").and_then(Value::as_str), obj.get("data")) {
        (Some(kind), Some(data)) => Ok(StreamerMessage::Notification {
            kind: kind.to_owned(),
            data: data.clone(),
        }),
        _ => Err(StreamerError::Shape),
    }
}

const SOURCE: &str = concat!("greekstream/", env!("CARGO_PKG_VERSION"));

/// `connect`: subscribe to the accounts' notifications.
pub fn connect(access_token: &str, accounts: &[String], request_id: u64) -> String {
    json!({"auth-token": format!("Bearer {access_token}"), "action": "connect",
        "value": accounts, "request-id": request_id, "source": SOURCE})
    .to_string()
}

pub fn heartbeat(access_token: &str, request_id: u64) -> String {
    json!({"auth-token": format!("Bearer {access_token}"), "action": "heartbeat",
        "request-id": request_id, "source": SOURCE})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_notifications_and_batches() {
        let m = parse(
            r#"{"status":"ok","action":"connect","web-socket-session-id":"x","value":["5WT1"],"request-id":1}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            vec![StreamerMessage::Ack {
                action: "connect".into(),
                ok: true,
                request_id: Some(1),
                message: String::new()
            }]
        );
        let m = parse(
            r#"{"status":"error","action":"connect","message":"invalid token","request-id":2}"#,
        )
        .unwrap();
        assert!(
            matches!(&m[0], StreamerMessage::Ack { ok: false, message, .. } if message == "invalid token")
        );
        let m = parse(
            r#"{"type":"CurrentPosition","data":{"symbol":"SPY"},"timestamp":1688595114405}"#,
        )
        .unwrap();
        assert!(
            matches!(&m[0], StreamerMessage::Notification { kind, .. } if kind == "CurrentPosition")
        );
        let m = parse(
            r#"{"results":[{"type":"Order","data":{}},{"type":"AccountBalance","data":{}}]}"#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(parse(r#"{"hello":1}"#), Err(StreamerError::Shape));
        assert!(matches!(parse("{"), Err(StreamerError::NotJson(_))));
    }

    #[test]
    fn our_messages_carry_the_bearer_token_and_request_id() {
        let v: Value = serde_json::from_str(&connect("tok", &["5WT1".into()], 7)).unwrap();
        assert_eq!(v["auth-token"], "Bearer tok");
        assert_eq!(v["action"], "connect");
        assert_eq!(v["value"][0], "5WT1");
        assert_eq!(v["request-id"], 7);
        let v: Value = serde_json::from_str(&heartbeat("tok", 8)).unwrap();
        assert_eq!(v["action"], "heartbeat");
    }
}
