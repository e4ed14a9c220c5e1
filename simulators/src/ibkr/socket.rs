//! The `/v1/api/ws` socket: greeting, `sts`, `system` heartbeats, `smd` subscriptions
//! with only-changed fields, server-side expiry, and malformed frames on request.

#[allow(unused_imports)]
use super::*;

pub(super) fn greeting(s: &SimState) -> Vec<String> {
    let accounts = &s.cfg.accounts;
    vec![
        json!({"topic": "system", "success": "greeksim", "isFT": false, "isPaper": true}).to_string(),
        json!({"topic": "act", "args": {"accounts": accounts, "acctProps": {}, "aliases": {},
            "allowFeatures": {}, "chartPeriods": {"STK": [], "OPT": []}, "groups": [], "profiles": [],
            "selectedAccount": accounts.first(), "serverInfo": {"serverName": "GreekSim1",
            "serverVersion": "sim"}, "sessionId": s.session(), "isFT": false, "isPaper": true}})
        .to_string(),
        json!({"topic": "sts", "args": {"connected": true, "authenticated": s.authenticated.load(Relaxed),
            "established": true, "competing": false, "message": "", "fail": ""}})
        .to_string(),
    ]
}

pub(super) const MALFORMED: [&str; 5] = [
    "{\"topic\":\"smd+",
    "not json at all",
    "{\"topic\":\"smd+x\",\"conid\":\"abc\",\"31\":\"1\"}",
    "[1,2,3]",
    "{\"no_topic\":true}",
];

pub(super) struct ConnSub {
    pub(super) expires: Instant,
    pub(super) sent: [Option<String>; 9],
    pub(super) first: bool,
}

/// One socket: greeting, commands, changed fields on every price step, heartbeats,
/// and faults.
pub(super) async fn connection(s: Arc<SimState>, mut socket: WebSocket, mut authed: bool) {
    let id = s.next_conn.fetch_add(1, Relaxed);
    s.stats.connections.fetch_add(1, Relaxed);
    s.subs.lock().expect("subs lock").insert(id, HashMap::new());
    let mut faults = s.faults.subscribe();
    let mut steps = s.steps.clone();
    let mut hb = tokio::time::interval(s.cfg.heartbeat_interval);
    let mut subs: HashMap<i64, ConnSub> = HashMap::new();
    let mut silent = false;
    let mut out: Vec<String> = if authed {
        greeting(&s)
    } else {
        vec![json!({"message": "waiting for session"}).to_string()]
    };
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
                if silent {
                    continue;
                }
                if !authed {
                    // The documented text handshake: {"session":"<id from /tickle>"}.
                    let session = serde_json::from_str::<Value>(&text).ok()
                        .and_then(|v| v.get("session")?.as_str().map(str::to_owned));
                    if session.as_deref() == Some(s.session().as_str()) {
                        authed = true;
                        out.extend(greeting(&s));
                    } else {
                        let head: String = text.chars().take(3).collect();
                        out.push(json!({"error": format!("Topic unknown '{head}'"), "code": 1}).to_string());
                    }
                    continue;
                }
                command(&s, id, &text, &mut subs, &mut out);
            }
            changed = steps.changed() => {
                if changed.is_err() {
                    break;
                }
                if authed && s.authenticated.load(Relaxed) {
                    render(&s, &mut subs, &mut out);
                }
            }
            _ = hb.tick() => {
                out.push(json!({"topic": "system", "hb": Utc::now().timestamp_millis()}).to_string());
            }
            fault = faults.recv() => match fault {
                Ok(Fault::Drop) => break,
                Ok(Fault::Silent) => silent = true,
                Ok(Fault::ExpireSession) => {
                    let _ = socket.send(Message::text(sts_unauthenticated())).await;
                    break;
                }
                Ok(Fault::AuthLoss) => out.push(sts_unauthenticated()),
                Ok(Fault::Malformed(n)) => {
                    for i in 0..n {
                        out.push(MALFORMED[i as usize % MALFORMED.len()].to_owned());
                    }
                    if socket.send(Message::Binary(vec![0xff, 0xfe, 0x00].into())).await.is_err() {
                        break;
                    }
                }
                Err(_) => {}
            },
        }
    }
    s.subs.lock().expect("subs lock").remove(&id);
}

pub(super) fn sts_unauthenticated() -> String {
    json!({"topic": "sts", "args": {"connected": true, "authenticated": false, "established": false,
        "competing": false, "message": "session expired", "fail": ""}})
    .to_string()
}

pub(super) fn command(
    s: &SimState,
    id: u64,
    text: &str,
    subs: &mut HashMap<i64, ConnSub>,
    out: &mut Vec<String>,
) {
    let mut parts = text.trim().splitn(3, '+');
    let topic = parts.next().unwrap_or_default();
    let arg = parts.next().unwrap_or_default();
    match topic {
        "smd" => {
            s.stats.smd_commands.fetch_add(1, Relaxed);
            let conid = arg.split('@').next().and_then(|c| c.parse::<i64>().ok());
            let Some(conid) = conid.filter(|c| s.venue.by_conid.contains_key(c)) else {
                out.push(
                    json!({"topic": format!("smd+{arg}"), "error": "invalid conid"}).to_string(),
                );
                return;
            };
            let expires = Instant::now() + s.cfg.smd_expiry;
            let sub = subs.entry(conid).or_insert(ConnSub {
                expires,
                sent: Default::default(),
                first: true,
            });
            sub.expires = expires;
            // Like the gateway, an early frame carries only the ids.
            out.push(json!({"topic": format!("smd+{conid}"), "conid": conid, "conidEx": conid.to_string(),
                "server_id": "q0", "6119": "q0"}).to_string());
            let mut live = s.subs.lock().expect("subs lock");
            live.entry(id).or_default().insert(conid, expires);
        }
        "umd" => {
            if let Ok(conid) = arg.parse::<i64>() {
                subs.remove(&conid);
                if let Some(m) = s.subs.lock().expect("subs lock").get_mut(&id) {
                    m.remove(&conid);
                }
            }
        }
        "tic" if s.cfg.answer_tic => out.push(
            json!({"topic": "tic", "alive": true, "id": s.session(),
            "lastAccessed": Utc::now().timestamp_millis()})
            .to_string(),
        ),
        "tic" => {}
        "ech" => out.push("ech+hb".to_owned()),
        "spl" => out.push(json!({"topic": "spl", "args": {}}).to_string()),
        "sor" => out.push(json!({"topic": "sor", "args": []}).to_string()),
        "upl" | "uor" | "usd" | "uld" | "utr" => {}
        _ => {
            let head: String = text.chars().take(3).collect();
            out.push(json!({"error": format!("Topic unknown '{head}'"), "code": 1}).to_string());
        }
    }
}

pub(super) fn render(s: &SimState, subs: &mut HashMap<i64, ConnSub>, out: &mut Vec<String>) {
    let now = Instant::now();
    let updated = Utc::now().timestamp_millis();
    for (conid, sub) in subs.iter_mut() {
        if sub.expires <= now {
            continue;
        }
        let Some(&idx) = s.venue.by_conid.get(conid) else {
            continue;
        };
        let values = s.venue.fields(idx, s.cfg.today);
        let mut frame = serde_json::Map::new();
        for (i, v) in values.iter().enumerate() {
            if v.is_some() && *v != sub.sent[i] {
                let mut text = v.clone().unwrap_or_default();
                // A fresh subscription first shows the previous close, `C`-prefixed.
                if sub.first && MdField::ALL[i] == MdField::Last {
                    text.insert(0, 'C');
                }
                frame.insert(MdField::ALL[i].id().to_owned(), Value::String(text));
                sub.sent[i].clone_from(v);
            }
        }
        sub.first = false;
        if frame.is_empty() {
            continue;
        }
        frame.insert("conid".into(), json!(conid));
        frame.insert("conidEx".into(), json!(conid.to_string()));
        frame.insert("_updated".into(), json!(updated));
        frame.insert("server_id".into(), json!("q0"));
        frame.insert("6119".into(), json!("q0"));
        frame.insert("topic".into(), json!(format!("smd+{conid}")));
        out.push(Value::Object(frame).to_string());
        s.stats.md_frames_sent.fetch_add(1, Relaxed);
    }
}
