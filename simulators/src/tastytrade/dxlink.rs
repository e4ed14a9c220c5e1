//! The DXLink server: SETUP, AUTH, channels, FEED_SETUP (COMPACT and FULL in the
//! client's field order), subscriptions, keepalives, and the feed itself.

#[allow(unused_imports)]
use super::*;

pub(super) const MALFORMED: [&str; 5] = [
    "{\"type\":\"FEED_DATA\",\"channel\":",
    "not json at all",
    "{\"type\":\"FEED_DATA\",\"channel\":3,\"data\":[\"Greeks\",[\".SPY\",1,2]]}",
    "[1,2,3]",
    "{\"channel\":0}",
];

/// One FEED channel as the client set it up.
#[derive(Default)]
pub(super) struct Channel {
    pub(super) compact: bool,
    pub(super) fields: HashMap<String, Vec<String>>,
    pub(super) subs: BTreeSet<(String, String)>,
}

/// Events per FEED_DATA frame: keeps frames well under the SDK's 64 KiB limit.
pub(super) const EVENTS_PER_FRAME: usize = 100;

pub(super) struct Dx {
    pub(super) id: u64,
    pub(super) authorized: Option<String>,
    pub(super) channels: HashMap<u64, Channel>,
    /// The client's keepaliveTimeout: silence longer than this gets ERROR TIMEOUT.
    pub(super) client_timeout: Duration,
    pub(super) keepalive_every: Duration,
}

impl Dx {
    pub(super) fn publish(&self, s: &SimState) {
        let mut subs = s.subs.lock().expect("subs lock");
        if self.authorized.is_some() {
            subs.insert(
                self.id,
                self.channels
                    .values()
                    .flat_map(|c| c.subs.iter().cloned())
                    .collect(),
            );
        } else {
            subs.remove(&self.id);
        }
    }

    pub(super) fn handle(&mut self, s: &SimState, text: &str, out: &mut Vec<String>) -> bool {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            out.push(dx_error("INVALID_MESSAGE", "not JSON"));
            return true;
        };
        let channel = msg.get("channel").and_then(Value::as_u64).unwrap_or(0);
        match msg.get("type").and_then(Value::as_str).unwrap_or("") {
            "SETUP" => {
                if let Some(t) = msg.get("keepaliveTimeout").and_then(Value::as_u64) {
                    self.client_timeout = Duration::from_secs(t.max(1));
                }
                if let Some(t) = msg.get("acceptKeepaliveTimeout").and_then(Value::as_u64) {
                    self.keepalive_every =
                        self.keepalive_every.min(Duration::from_secs(t.max(2)) / 2);
                }
                out.push(
                    json!({"type": "SETUP", "channel": 0, "keepaliveTimeout": 60,
                    "acceptKeepaliveTimeout": 60, "version": "1.0-greekstream-sim"})
                    .to_string(),
                );
                out.push(auth_state(false));
            }
            "AUTH" => {
                let token = msg.get("token").and_then(Value::as_str).unwrap_or("");
                if !s.reject_auth.load(Relaxed) && SimState::valid(&s.quote_tokens, token) {
                    self.authorized = Some(token.to_owned());
                    s.stats.auths_accepted.fetch_add(1, Relaxed);
                    out.push(auth_state(true));
                } else {
                    s.stats.auths_rejected.fetch_add(1, Relaxed);
                    self.authorized = None;
                    out.push(auth_state(false));
                }
            }
            "KEEPALIVE" => {
                s.stats.keepalives_received.fetch_add(1, Relaxed);
                out.push(json!({"type": "KEEPALIVE", "channel": 0}).to_string());
            }
            _ if self.authorized.is_none() => {
                out.push(dx_error("UNAUTHORIZED", "authorize first"));
            }
            "CHANNEL_REQUEST" => {
                let service = msg.get("service").cloned().unwrap_or(json!("FEED"));
                self.channels.insert(channel, Channel::default());
                out.push(
                    json!({"type": "CHANNEL_OPENED", "channel": channel, "service": service,
                    "parameters": msg.get("parameters").cloned().unwrap_or(json!({}))})
                    .to_string(),
                );
            }
            "CHANNEL_CANCEL" => {
                self.channels.remove(&channel);
                out.push(json!({"type": "CHANNEL_CLOSED", "channel": channel}).to_string());
            }
            "FEED_SETUP" => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    out.push(dx_error("BAD_ACTION", "no such channel"));
                    return true;
                };
                ch.compact = msg.get("acceptDataFormat").and_then(Value::as_str) != Some("FULL");
                if let Some(fields) = msg.get("acceptEventFields").and_then(Value::as_object) {
                    for (t, list) in fields {
                        let names = list
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .filter_map(|f| f.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        ch.fields.insert(t.clone(), names);
                    }
                }
                out.push(json!({"type": "FEED_CONFIG", "channel": channel,
                    "aggregationPeriod": 0.1, "dataFormat": if ch.compact { "COMPACT" } else { "FULL" },
                    "eventFields": ch.fields}).to_string());
            }
            "FEED_SUBSCRIPTION" => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    out.push(dx_error("BAD_ACTION", "no such channel"));
                    return true;
                };
                if msg.get("reset").and_then(Value::as_bool) == Some(true) {
                    ch.subs.clear();
                }
                let pairs = |key: &str| -> Vec<(String, String)> {
                    msg.get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| {
                            Some((
                                e.get("type")?.as_str()?.to_owned(),
                                e.get("symbol")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                };
                for p in pairs("remove") {
                    ch.subs.remove(&p);
                }
                ch.subs.extend(pairs("add"));
            }
            _ => out.push(dx_error("INVALID_MESSAGE", "unknown message type")),
        }
        true
    }

    pub(super) fn render(&self, s: &SimState, out: &mut Vec<String>) {
        let venue = &s.venue;
        let today = s.cfg.today;
        for (channel, ch) in &self.channels {
            let mut by_type: HashMap<&str, Vec<usize>> = HashMap::new();
            for (t, sym) in &ch.subs {
                if !matches!(t.as_str(), "Greeks" | "Quote") {
                    continue;
                }
                if let Some(&idx) = venue.by_streamer.get(sym) {
                    // No Greeks for a stock.
                    if t == "Greeks" && matches!(venue.instruments[idx].kind, Kind::Stock) {
                        continue;
                    }
                    by_type.entry(t.as_str()).or_default().push(idx);
                }
            }
            for (t, idxs) in by_type {
                let default_fields: Vec<String> = match t {
                    "Greeks" => streaming::tastytrade::dxlink::GREEKS_FIELDS
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                    _ => streaming::tastytrade::dxlink::QUOTE_FIELDS
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                };
                let fields = ch
                    .fields
                    .get(t)
                    .filter(|f| !f.is_empty())
                    .unwrap_or(&default_fields);
                for chunk in idxs.chunks(EVENTS_PER_FRAME) {
                    let data = if ch.compact {
                        let mut flat = Vec::with_capacity(chunk.len() * fields.len());
                        for &idx in chunk {
                            let nan = t == "Greeks" && s.take_nan();
                            flat.extend(fields.iter().map(|f| venue.field(t, idx, f, today, nan)));
                        }
                        json!([t, flat])
                    } else {
                        let events: Vec<Value> = chunk
                            .iter()
                            .map(|&idx| {
                                let nan = t == "Greeks" && s.take_nan();
                                let mut obj = serde_json::Map::new();
                                obj.insert("eventType".into(), json!(t));
                                for f in fields {
                                    obj.insert(f.clone(), venue.field(t, idx, f, today, nan));
                                }
                                Value::Object(obj)
                            })
                            .collect();
                        json!(events)
                    };
                    out.push(
                        json!({"type": "FEED_DATA", "channel": channel, "data": data}).to_string(),
                    );
                    s.stats.feed_frames_sent.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

pub(super) fn auth_state(authorized: bool) -> String {
    let state = if authorized {
        "AUTHORIZED"
    } else {
        "UNAUTHORIZED"
    };
    json!({"type": "AUTH_STATE", "channel": 0, "state": state}).to_string()
}

pub(super) fn dx_error(error: &str, message: &str) -> String {
    json!({"type": "ERROR", "channel": 0, "error": error, "message": message}).to_string()
}

pub(super) async fn dxlink_connection(s: Arc<SimState>, mut socket: WebSocket) {
    let id = s.next_conn.fetch_add(1, Relaxed);
    s.stats.dxlink_connections.fetch_add(1, Relaxed);
    let mut events = s.events.subscribe();
    let mut steps = s.steps.clone();
    let mut dx = Dx {
        id,
        authorized: None,
        channels: HashMap::new(),
        client_timeout: Duration::from_secs(60),
        keepalive_every: s.cfg.keepalive_interval,
    };
    let mut silent = false;
    let mut out = Vec::new();
    let mut last_inbound = Instant::now();
    let mut last_keepalive = Instant::now();
    'conn: loop {
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
                last_inbound = Instant::now();
                if !silent && !dx.handle(&s, &text, &mut out) {
                    break;
                }
                dx.publish(&s);
            }
            changed = steps.changed() => {
                if changed.is_err() {
                    break;
                }
                if last_inbound.elapsed() > dx.client_timeout {
                    let msg = format!("No keepalive received for {} seconds", dx.client_timeout.as_secs());
                    let _ = socket.send(Message::text(dx_error("TIMEOUT", &msg))).await;
                    break;
                }
                if let Some(token) = dx.authorized.clone() {
                    if SimState::valid(&s.quote_tokens, &token) {
                        dx.render(&s, &mut out);
                    } else {
                        // The token expired under an open feed: say so and wait for AUTH.
                        dx.authorized = None;
                        dx.publish(&s);
                        out.push(auth_state(false));
                    }
                }
                if last_keepalive.elapsed() >= dx.keepalive_every {
                    last_keepalive = Instant::now();
                    out.push(json!({"type": "KEEPALIVE", "channel": 0}).to_string());
                }
            }
            event = events.recv() => match event {
                Ok(SimEvent::Fault(Fault::Drop)) => break,
                Ok(SimEvent::Fault(Fault::Silent)) => silent = true,
                Ok(SimEvent::Fault(Fault::Malformed(n))) => {
                    for i in 0..n {
                        out.push(MALFORMED[i as usize % MALFORMED.len()].to_owned());
                    }
                }
                Ok(SimEvent::Fault(Fault::Error)) => {
                    out.push(dx_error("UNKNOWN", "simulated server error"));
                    let _ = send_all(&mut socket, &mut out).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break 'conn;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    s.subs.lock().expect("subs lock").remove(&id);
}
