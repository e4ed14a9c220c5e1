//! The command bus (js-gateway §2.1): the gateway `RPUSH`es to `{prefix}cmd:{type}`;
//! each command is run through the [`Gateway`] on its own task, and its result
//! `RPUSH`ed to `{prefix}result:{requestId}` with a 120 s expiry.
//!
//! No command is lost between Redis and the engine: each is *moved* (`BLMOVE`) from
//! its queue to the engine's in-flight list `{prefix}inflight:{engine}`, and leaves
//! that list in the same step (one script) as its result is written. A connection that
//! dies with a command in flight, or an engine killed mid-command, leaves it in the
//! list; the next start runs every listed command again, and the request id's
//! idempotency gate makes that safe: a finished one gets its stored result, one that
//! was running gets `ENGINE_RESTARTED`, one never started starts now.
//!
//! Each supported type has its own consumer, so a kill switch never waits in Redis
//! behind a start; the account's lane puts it first in the engine. Queues of other
//! types (unknown, or not supported yet) are found by a scan and answered, not left
//! to time out. Input with no `requestId` to answer on is dropped with a logged and
//! counted reason. Nothing is taken while the engine recovers; Redis going away means
//! a reconnect with the one backoff ([`RedisLink`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::command::{self, Kind};

use super::{result_json, Gateway, UNDECODABLE};
use bus::link::RedisLink;
use engine::execution::now_ms;

pub const BUS_ERRORS: &str = "greekstream_gateway_bus_errors_total";
pub const REPLAYED: &str = "greekstream_gateway_replayed_total";
/// How long a result waits for the gateway.
pub const RESULT_TTL_S: u64 = 120;
/// How often queues of other command types are looked for.
pub const UNKNOWN_SCAN_EVERY: Duration = Duration::from_secs(2);
/// How long the heartbeat key lives; it is renewed every second.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(5);
/// How long one `BLMOVE` blocks before it is issued again.
const BLOCK_S: u64 = 1;

/// The result written and the command leaving the in-flight list, together.
const PUSH_RESULT: &str = "redis.call('RPUSH', KEYS[1], ARGV[1]); \
     redis.call('EXPIRE', KEYS[1], ARGV[2]); \
     redis.call('LREM', KEYS[2], 1, ARGV[3])";

/// What the writer does, in order.
#[derive(Debug)]
enum Write {
    /// A command's result, and the command (as taken) leaving the in-flight list.
    Result {
        key: String,
        result: String,
        raw: Vec<u8>,
    },
    /// A command that cannot be answered leaves the in-flight list.
    Drop { raw: Vec<u8> },
}

type Writes = mpsc::UnboundedSender<Write>;

#[derive(Clone)]
struct Bus {
    gateway: Gateway,
    prefix: String,
    inflight: String,
    writes: Writes,
    /// The in-flight commands this engine is running (as taken from Redis).
    running: Arc<Mutex<HashSet<Vec<u8>>>>,
}

/// Consumes the command queues until `cancel`. `engine_id` names this engine's
/// in-flight list (one per engine sharing the Redis).
pub async fn run_consumer(
    gateway: Gateway,
    redis_url: &str,
    prefix: String,
    engine_id: &str,
    cancel: CancellationToken,
) -> Result<(), bus::link::InvalidRedisUrl> {
    metrics::counter!(REPLAYED).increment(0);
    let results = RedisLink::open(redis_url, "command results", BUS_ERRORS)?;
    let inflight = format!("{prefix}inflight:{engine_id}");
    let (tx, rx) = mpsc::unbounded_channel();
    let running: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    tokio::spawn(write_results(
        results,
        rx,
        inflight.clone(),
        running.clone(),
        cancel.clone(),
    ));
    // Nothing is taken while the engine recovers.
    while !gateway.ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
    let bus = Bus {
        gateway: gateway.clone(),
        prefix: prefix.clone(),
        inflight,
        writes: tx,
        running,
    };
    let mut link = RedisLink::open(redis_url, "command replay", BUS_ERRORS)?;
    replay(&bus, &mut link, &cancel).await;
    tokio::spawn(heartbeat(gateway, cancel.clone()));
    tokio::spawn(answer_other_queues(
        bus.clone(),
        RedisLink::open(redis_url, "other command queues", BUS_ERRORS)?,
        cancel.clone(),
    ));
    for kind in Kind::ALL.iter().filter(|k| k.supported()) {
        let link = RedisLink::open(redis_url, "command bus", BUS_ERRORS)?;
        tokio::spawn(consume(bus.clone(), *kind, link, cancel.clone()));
    }
    Ok(())
}

/// What a dead engine (or a dropped connection) left in flight, run again.
async fn replay(bus: &Bus, link: &mut RedisLink, cancel: &CancellationToken) {
    let Some(mut c) = link.connect(cancel).await else {
        return;
    };
    let left: Vec<Vec<u8>> = match redis::cmd("LRANGE")
        .arg(&bus.inflight)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the in-flight commands could not be read; they are replayed at the next start");
            return;
        }
    };
    if !left.is_empty() {
        tracing::warn!(
            commands = left.len(),
            "commands left in flight are run again (their request ids keep it safe)"
        );
        metrics::counter!(REPLAYED).increment(left.len() as u64);
    }
    for raw in left {
        answer(bus.clone(), String::new(), raw).await;
    }
}

/// Moves `kind`'s commands in flight, one at a time, each run on its own task.
async fn consume(bus: Bus, kind: Kind, mut link: RedisLink, cancel: CancellationToken) {
    let queue = format!("{}cmd:{}", bus.prefix, kind.name());
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        if conn.is_none() {
            conn = link.connect(&cancel).await;
            if let Some(c) = conn.as_mut() {
                // The move blocks for up to BLOCK_S: its reply may take that long.
                c.set_response_timeout(Duration::from_secs(BLOCK_S + 5));
            }
        }
        let Some(c) = conn.as_mut() else { return };
        let mut blmove = redis::cmd("BLMOVE");
        blmove
            .arg(&queue)
            .arg(&bus.inflight)
            .arg("LEFT")
            .arg("RIGHT")
            .arg(BLOCK_S);
        let moved = tokio::select! {
            r = blmove.query_async::<Option<Vec<u8>>>(c) => r,
            _ = cancel.cancelled() => return,
        };
        match moved {
            Ok(None) => link.succeeded(),
            Ok(Some(raw)) => {
                link.succeeded();
                bus.running
                    .lock()
                    .expect("running lock")
                    .insert(raw.clone());
                tokio::spawn(answer(bus.clone(), kind.name().to_owned(), raw));
            }
            Err(e) => {
                conn = None;
                if !link.failed(&e, &cancel).await {
                    return;
                }
            }
        }
    }
}

/// Runs one command taken from queue `kind` (empty: the envelope's `type`) and
/// hands its result to the writer.
async fn answer(bus: Bus, kind: String, raw: Vec<u8>) {
    bus.running
        .lock()
        .expect("running lock")
        .insert(raw.clone());
    let started = now_ms();
    // Taken back from the in-flight list, the queue is not known: the envelope's
    // `type` says it.
    let kind = match kind.as_str() {
        "" => command::decode(&raw, "")
            .ok()
            .and_then(|e| {
                e.fields
                    .get("type")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
        _ => kind,
    };
    let env = match command::decode(&raw, &kind) {
        Ok(e) => e,
        Err(e) => {
            metrics::counter!(UNDECODABLE, "code" => e.code()).increment(1);
            tracing::warn!(queue = %kind, bytes = raw.len(), code = e.code(), error = %e,
                           "a command without a requestId to answer on is dropped");
            let _ = bus.writes.send(Write::Drop { raw });
            return;
        }
    };
    let reply = bus.gateway.execute(env.clone()).await;
    let result = result_json(&env.kind, &env.request_id, &reply, started, now_ms());
    let _ = bus.writes.send(Write::Result {
        key: format!("{}result:{}", bus.prefix, env.request_id),
        result: result.to_string(),
        raw,
    });
}

/// Every few seconds, queues `{prefix}cmd:{type}` of types without a consumer (not
/// known, or not supported yet) are emptied, each command answered
/// (`UNKNOWN_COMMAND`, `NOT_SUPPORTED_YET`) rather than left for the gateway to time
/// out on.
async fn answer_other_queues(bus: Bus, mut link: RedisLink, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(UNKNOWN_SCAN_EVERY);
    let mut conn: Option<MultiplexedConnection> = None;
    let queues = format!("{}cmd:", bus.prefix);
    let mut stranded = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if conn.is_none() {
            conn = link.connect(&cancel).await;
        }
        let Some(c) = conn.as_mut() else { return };
        let keys = match scan(c, &format!("{queues}*")).await {
            Ok(k) => k,
            Err(e) => {
                conn = None;
                if !link.failed(&e, &cancel).await {
                    return;
                }
                continue;
            }
        };
        link.succeeded();
        stranded = adopt_stranded(&bus, c, stranded).await;
        for key in keys {
            let kind = key[queues.len()..].to_owned();
            if Kind::parse(&kind).is_some_and(|k| k.supported()) {
                continue;
            }
            while let Ok(Some(raw)) = redis::cmd("LMOVE")
                .arg(&key)
                .arg(&bus.inflight)
                .arg("LEFT")
                .arg("RIGHT")
                .query_async::<Option<Vec<u8>>>(c)
                .await
            {
                answer(bus.clone(), kind.clone(), raw).await;
            }
        }
    }
}

/// Commands in the in-flight list that this engine is not running — their move's
/// reply was lost with a connection — are run, once seen on two scans in a row (a
/// command whose move is being answered right now is not taken for lost). Returns
/// what this scan saw not running.
async fn adopt_stranded(
    bus: &Bus,
    c: &mut MultiplexedConnection,
    seen_before: HashSet<Vec<u8>>,
) -> HashSet<Vec<u8>> {
    let listed: Vec<Vec<u8>> = match redis::cmd("LRANGE")
        .arg(&bus.inflight)
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
    {
        Ok(l) => l,
        Err(_) => return seen_before,
    };
    let not_running: HashSet<Vec<u8>> = {
        let running = bus.running.lock().expect("running lock");
        listed
            .into_iter()
            .filter(|r| !running.contains(r))
            .collect()
    };
    for raw in not_running.intersection(&seen_before) {
        metrics::counter!(REPLAYED).increment(1);
        tracing::warn!("a command whose move was lost with its connection is run now");
        tokio::spawn(answer(bus.clone(), String::new(), raw.clone()));
    }
    not_running.difference(&seen_before).cloned().collect()
}

/// The keys matching `pattern`, by SCAN (KEYS would block a shared Redis).
async fn scan(c: &mut MultiplexedConnection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Writes results in order, each retried until Redis takes it.
async fn write_results(
    mut link: RedisLink,
    mut rx: mpsc::UnboundedReceiver<Write>,
    inflight: String,
    running: Arc<Mutex<HashSet<Vec<u8>>>>,
    cancel: CancellationToken,
) {
    let mut conn = None;
    while let Some(w) = tokio::select! {
        r = rx.recv() => r,
        _ = cancel.cancelled() => None,
    } {
        let cmd = match &w {
            Write::Result { key, result, raw } => {
                let mut c = redis::cmd("EVAL");
                c.arg(PUSH_RESULT)
                    .arg(2)
                    .arg(key)
                    .arg(&inflight)
                    .arg(result)
                    .arg(RESULT_TTL_S)
                    .arg(raw.as_slice());
                c
            }
            Write::Drop { raw } => {
                let mut c = redis::cmd("LREM");
                c.arg(&inflight).arg(1).arg(raw.as_slice());
                c
            }
        };
        if !link.run_until_done(&mut conn, &cmd, &cancel).await {
            tracing::warn!("a command result was not written: shutting down (the command stays in flight and is answered at the next start)");
            return;
        }
        let (Write::Result { raw, .. } | Write::Drop { raw }) = &w;
        running.lock().expect("running lock").remove(raw);
    }
}

/// `{prefix}engine:heartbeat`, renewed every second while the engine takes commands:
/// the gateway answers 503 "engine down" when it is missing.
async fn heartbeat(gateway: Gateway, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        gateway.services.outbox.set(
            "engine:heartbeat",
            &serde_json::json!({"ts": now_ms(), "pid": std::process::id()}),
            HEARTBEAT_TTL,
        );
    }
}
