//! The command bus (js-gateway §2.1): `BLPOP` over every `{prefix}cmd:{type}` queue
//! — kill switches listed first, so they are never taken after a waiting start —
//! each command run through the [`Gateway`] on its own task, and its result
//! `RPUSH`ed to `{prefix}result:{requestId}` with a 120 s expiry (one step).
//!
//! Nothing is taken while the engine recovers. A command is removed by `BLPOP`
//! (at-most-once, as the gateway expects): from then on it gets a result, or — when it
//! has no `requestId` to answer on — a logged and counted reason. Results are written
//! in order by one writer that retries through Redis outages; Redis restarting under
//! the consumer means a reconnect with the one backoff ([`RedisLink`]).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::command::{self, Kind};

use super::{result_json, Gateway, UNDECODABLE};
use crate::bus::link::RedisLink;
use crate::engine::execution::now_ms;

pub const BUS_ERRORS: &str = "greekstream_gateway_bus_errors_total";
/// How long a result waits for the gateway.
pub const RESULT_TTL_S: u64 = 120;
/// How long the heartbeat key lives; it is renewed every second.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(5);

const PUSH_RESULT: &str =
    "redis.call('RPUSH', KEYS[1], ARGV[1]); redis.call('EXPIRE', KEYS[1], ARGV[2])";

/// The queues, kill switches first (BLPOP serves the first non-empty key).
pub fn queues(prefix: &str) -> Vec<String> {
    let mut kinds: Vec<Kind> = Kind::ALL.to_vec();
    kinds.sort_by_key(|k| !k.kill_switch());
    kinds
        .iter()
        .map(|k| format!("{prefix}cmd:{}", k.name()))
        .collect()
}

/// Consumes the command queues until `cancel`.
pub async fn run_consumer(
    gateway: Gateway,
    redis_url: &str,
    prefix: String,
    cancel: CancellationToken,
) -> Result<(), crate::bus::link::InvalidRedisUrl> {
    let mut link = RedisLink::open(redis_url, "command bus", BUS_ERRORS)?;
    let results = RedisLink::open(redis_url, "command results", BUS_ERRORS)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_results(results, rx, cancel.clone()));
    // Nothing is taken while the engine recovers.
    while !gateway.ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
    tokio::spawn(heartbeat(gateway.clone(), cancel.clone()));
    let keys = queues(&prefix);
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        if conn.is_none() {
            conn = link.connect(&cancel).await;
            if let Some(c) = conn.as_mut() {
                // BLPOP blocks for up to a second: the reply may take that long.
                c.set_response_timeout(Duration::from_secs(10));
            }
        }
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        let mut blpop = redis::cmd("BLPOP");
        blpop.arg(&keys).arg(1);
        let popped = tokio::select! {
            r = blpop.query_async::<Option<(String, Vec<u8>)>>(c) => r,
            _ = cancel.cancelled() => return Ok(()),
        };
        match popped {
            Ok(None) => link.succeeded(),
            Ok(Some((key, raw))) => {
                link.succeeded();
                let kind = key.rsplit(':').next().unwrap_or_default().to_owned();
                let (g, tx, prefix) = (gateway.clone(), tx.clone(), prefix.clone());
                tokio::spawn(async move {
                    let started = now_ms();
                    let env = match command::decode(&raw, &kind) {
                        Ok(e) => e,
                        Err(e) => {
                            metrics::counter!(UNDECODABLE, "code" => e.code()).increment(1);
                            tracing::warn!(queue = %kind, bytes = raw.len(), code = e.code(), error = %e,
                                           "a command without a requestId to answer on is dropped");
                            return;
                        }
                    };
                    let reply = g.execute(env.clone()).await;
                    let result = result_json(&kind, &env.request_id, &reply, started, now_ms());
                    let _ = tx.send((
                        format!("{prefix}result:{}", env.request_id),
                        result.to_string(),
                    ));
                });
            }
            Err(e) => {
                conn = None;
                if !link.failed(&e, &cancel).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Writes results in order, each retried until Redis takes it.
async fn write_results(
    mut link: RedisLink,
    mut rx: mpsc::UnboundedReceiver<(String, String)>,
    cancel: CancellationToken,
) {
    let mut conn = None;
    while let Some((key, value)) = tokio::select! {
        r = rx.recv() => r,
        _ = cancel.cancelled() => None,
    } {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUSH_RESULT)
            .arg(1)
            .arg(&key)
            .arg(value)
            .arg(RESULT_TTL_S);
        if !link.run_until_done(&mut conn, &cmd, &cancel).await {
            tracing::warn!(key = %key, "a command result was not written: shutting down");
            return;
        }
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
        gateway.outbox.set(
            "engine:heartbeat",
            &serde_json::json!({"ts": now_ms(), "pid": std::process::id()}),
            HEARTBEAT_TTL,
        );
    }
}
