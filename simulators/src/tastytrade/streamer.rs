//! The account streamer: connect/heartbeat acks and `CurrentPosition` pushes.

#[allow(unused_imports)]
use super::*;

pub(super) async fn streamer_connection(s: Arc<SimState>, mut socket: WebSocket) {
    s.stats.streamer_connections.fetch_add(1, Relaxed);
    let mut events = s.events.subscribe();
    let session_id = format!("sim-ws-{}", s.next_conn.fetch_add(1, Relaxed));
    let mut connected: Vec<usize> = Vec::new();
    let mut silent = false;
    let mut out = Vec::new();
    loop {
        if silent {
            out.clear();
        } else if !send_all(&mut socket, &mut out).await {
            break;
        }
        tokio::select! {
            msg = socket.recv() => {
                let text = match kit::inbound(&mut socket, msg).await {
                    Inbound::Text(t) => t,
                    Inbound::Other => continue,
                    Inbound::Gone => break,
                };
                if !silent {
                    streamer_action(&s, &session_id, &text, &mut connected, &mut out);
                }
            }
            event = events.recv() => match event {
                Ok(SimEvent::Fault(Fault::Drop)) => break,
                Ok(SimEvent::Fault(Fault::Silent)) => silent = true,
                Ok(SimEvent::Position { account, instrument }) if connected.contains(&account) => {
                    let name = &s.cfg.accounts[account];
                    out.push(json!({"type": "CurrentPosition",
                        "data": s.venue.position_row(name, account, instrument),
                        "timestamp": Utc::now().timestamp_millis()}).to_string());
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

pub(super) fn streamer_action(
    s: &SimState,
    session_id: &str,
    text: &str,
    connected: &mut Vec<usize>,
    out: &mut Vec<String>,
) {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        out.push(json!({"status": "error", "action": "", "message": "invalid json"}).to_string());
        return;
    };
    let action = msg.get("action").and_then(Value::as_str).unwrap_or("");
    let request_id = msg.get("request-id").cloned().unwrap_or(Value::Null);
    let token = msg
        .get("auth-token")
        .and_then(Value::as_str)
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim())
        .unwrap_or("");
    let ack = |status: &str, message: Option<&str>, value: Value| {
        let mut v = json!({"status": status, "action": action, "web-socket-session-id": session_id,
            "request-id": request_id});
        if let Some(m) = message {
            v["message"] = json!(m);
        }
        if !value.is_null() {
            v["value"] = value;
        }
        v.to_string()
    };
    if !SimState::valid(&s.access_tokens, token) {
        out.push(ack(
            "error",
            Some("invalid or expired auth-token"),
            Value::Null,
        ));
        return;
    }
    match action {
        "connect" => {
            // The JS client sends one account as a bare string.
            let value = msg.get("value").cloned().unwrap_or(Value::Null);
            let names: Vec<String> = match &value {
                Value::String(one) => vec![one.clone()],
                Value::Array(list) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            *connected = names.iter().filter_map(|n| s.account_index(n)).collect();
            out.push(ack("ok", None, json!(names)));
        }
        _ if connected.is_empty() => {
            out.push(ack("error", Some("connect-not-completed"), Value::Null));
        }
        "heartbeat"
        | "public-watchlists-subscribe"
        | "quote-alerts-subscribe"
        | "user-message-subscribe" => out.push(ack("ok", None, Value::Null)),
        _ => out.push(ack("error", Some("unknown action"), Value::Null)),
    }
}
