//! The simulator's WebSockets: market streams and the user data stream on every
//! path form real clients use, SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
//! SET_PROPERTY, combined-stream envelopes, and a ping frame every few minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::state::{canonical_stream, Frame, SimState};
use crate::kit::{inbound, Inbound};

pub(super) fn router(state: Arc<SimState>) -> Router {
    let mut r = Router::new();
    for base in ["", "/public", "/market", "/private"] {
        r = r
            .route(&format!("{base}/ws"), get(upgrade))
            .route(&format!("{base}/ws/{{*tail}}"), get(upgrade))
            .route(&format!("{base}/stream"), get(upgrade));
    }
    r.with_state(state)
}

async fn upgrade(State(state): State<Arc<SimState>>, uri: Uri, ws: WebSocketUpgrade) -> Response {
    if state.maintenance.load(Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable.").into_response();
    }
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    ws.on_upgrade(move |socket| connection(state, socket, path, query))
}

/// One client connection's view: which published streams it wants, under which
/// names, and whether payloads are wrapped.
struct Conn {
    /// Canonical stream → the name the client used.
    streams: BTreeMap<String, String>,
    listen_keys: Vec<String>,
    combined: bool,
}

impl Conn {
    fn from_url(path: &str, query: &str) -> Self {
        let mut c = Conn {
            streams: BTreeMap::new(),
            listen_keys: Vec::new(),
            combined: path.ends_with("/stream"),
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "streams" => {
                    for s in v.split('/').filter(|s| !s.is_empty()) {
                        c.add(s);
                    }
                }
                "listenKey" => c.listen_keys.push(v.into_owned()),
                _ => {}
            }
        }
        // `/ws/<stream or listenKey>` (several joined by `/` on routed paths).
        if let Some((_, tail)) = path.split_once("/ws/") {
            for s in tail.split('/').filter(|s| !s.is_empty()) {
                c.add(s);
            }
        }
        c
    }

    fn add(&mut self, name: &str) {
        if name.contains('@') {
            self.streams.insert(canonical_stream(name), name.to_owned());
        } else {
            self.listen_keys.push(name.to_owned());
        }
    }

    fn remove(&mut self, name: &str) {
        self.streams.remove(&canonical_stream(name));
        self.listen_keys.retain(|k| k != name);
    }

    fn wrap(&self, name: &str, payload: &str) -> String {
        if self.combined {
            format!(r#"{{"stream":"{name}","data":{payload}}}"#)
        } else {
            payload.to_owned()
        }
    }

    /// Answers a control message.
    fn control(&mut self, text: &str) -> String {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return json!({"code": 3, "msg": "Invalid JSON"}).to_string();
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        if !(id.is_u64() || id.is_null()) {
            return json!({"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}).to_string();
        }
        let names: Vec<String> = v
            .get("params")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        match v.get("method").and_then(Value::as_str) {
            Some("SUBSCRIBE") => {
                for n in &names {
                    self.add(n);
                }
                json!({"result": null, "id": id}).to_string()
            }
            Some("UNSUBSCRIBE") => {
                for n in &names {
                    self.remove(n);
                }
                json!({"result": null, "id": id}).to_string()
            }
            Some("LIST_SUBSCRIPTIONS") => {
                let mut all: Vec<String> = self.streams.values().cloned().collect();
                all.extend(self.listen_keys.iter().cloned());
                json!({"result": all, "id": id}).to_string()
            }
            Some("SET_PROPERTY") => {
                let params = v.get("params").and_then(Value::as_array);
                match params.map(|p| {
                    (
                        p.first().and_then(Value::as_str),
                        p.get(1).and_then(Value::as_bool),
                    )
                }) {
                    Some((Some("combined"), Some(on))) => {
                        self.combined = on;
                        json!({"result": null, "id": id}).to_string()
                    }
                    _ => json!({"code": 0, "msg": "Unknown property", "id": id}).to_string(),
                }
            }
            Some("GET_PROPERTY") => json!({"result": self.combined, "id": id}).to_string(),
            _ => json!({"code": 2, "msg": "Invalid request: unknown method", "id": id}).to_string(),
        }
    }
}

async fn connection(state: Arc<SimState>, mut socket: WebSocket, path: String, query: String) {
    state.stats.ws_connections.fetch_add(1, Relaxed);
    let mut conn = Conn::from_url(&path, &query);
    let mut frames = state.frames.subscribe();
    let mut ping = tokio::time::interval(state.cfg.ping_interval);
    ping.tick().await;
    let mut names: HashMap<Arc<str>, Option<String>> = HashMap::new();
    loop {
        let out: Option<String> = tokio::select! {
            msg = socket.recv() => match inbound(&mut socket, msg).await {
                Inbound::Text(t) => {
                    if state.silent.load(Relaxed) {
                        continue;
                    }
                    names.clear();
                    Some(conn.control(&t))
                }
                Inbound::Other => continue,
                Inbound::Gone => return,
            },
            f = frames.recv() => match f {
                Ok(Frame::Market { stream, payload }) => {
                    let name = names
                        .entry(stream.clone())
                        .or_insert_with(|| conn.streams.get(&*stream).cloned());
                    match name {
                        Some(n) if !state.silent.load(Relaxed) => Some(conn.wrap(n, &payload)),
                        _ => None,
                    }
                }
                Ok(Frame::User { listen_key, payload }) => {
                    (conn.listen_keys.iter().any(|k| **k == *listen_key) && !state.silent.load(Relaxed))
                        .then(|| {
                            let event = payload.split("\"e\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
                            conn.wrap(&format!("{listen_key}@{event}"), &payload)
                        })
                }
                Ok(Frame::Drop) => return,
                Ok(Frame::Malformed(n)) => {
                    if conn.streams.is_empty() {
                        None
                    } else {
                        for i in 0..n {
                            let bad = if i % 2 == 0 { "{\"e\":\"depthUpdate\",\"s\":".to_owned() } else { "not json".to_owned() };
                            if socket.send(Message::text(bad)).await.is_err() {
                                return;
                            }
                        }
                        None
                    }
                }
                // Too slow to keep up: the venue drops such a client.
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if !state.silent.load(Relaxed)
                    && socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                None
            }
        };
        if let Some(text) = out {
            if socket.send(Message::text(text)).await.is_err() {
                return;
            }
        }
    }
}
