//! The engine's writes to the gateway's Redis: account events (`PUBLISH
//! pms:events:{type}`, js-gateway §2.3) and snapshots (`SET pms:risk:{id} … EX`).
//!
//! Producers never wait on Redis: they stamp each event with the next `seq` and `ts`
//! and queue it ([`Outbox`]); one writer task ([`run_writer`]) sends the queue in order
//! on one connection, so subscribers see events in `seq` order. While Redis is down
//! the queue holds what it can; when it is full, new writes are dropped and counted
//! (pub/sub is at-most-once and the gateway re-fetches; a snapshot is replaced by the
//! next).
//!
//! `seq` = boot milliseconds × 1000 + n: strictly increasing across restarts while
//! fewer than a million events a second are published, and below 2^53.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::RedisLink;

pub const WRITTEN: &str = "greekstream_engine_bus_writes_total";
pub const DROPPED: &str = "greekstream_engine_bus_dropped_total";
pub const ERRORS: &str = "greekstream_engine_bus_errors_total";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusWrite {
    Publish {
        channel: String,
        payload: String,
        /// Also appended to the capped `{prefix}events:log` stream (account events:
        /// a gateway that reconnects catches up from a `seq`).
        log: Option<String>,
    },
    Set {
        key: String,
        value: String,
        ttl: Duration,
    },
}

/// Where the engine queues its Redis writes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<BusWrite>,
    seq: Arc<AtomicU64>,
    prefix: Arc<str>,
}

/// An outbox for keys under `prefix` (`pms:`), and the queue its writer drains.
pub fn outbox(prefix: &str, capacity: usize, boot_ms: u64) -> (Outbox, mpsc::Receiver<BusWrite>) {
    metrics::counter!(DROPPED).increment(0);
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let outbox = Outbox {
        tx,
        seq: Arc::new(AtomicU64::new(boot_ms * 1000)),
        prefix: prefix.into(),
    };
    (outbox, rx)
}

impl Outbox {
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Queues event `kind` with `data` (an object: it gains `seq` and `ts`).
    pub fn event(&self, kind: &str, mut data: Value, ts_ms: i64) {
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        if let Value::Object(m) = &mut data {
            m.insert("seq".into(), seq.into());
            m.insert("ts".into(), ts_ms.into());
        }
        self.push(BusWrite::Publish {
            channel: format!("{}events:{kind}", self.prefix),
            payload: data.to_string(),
            log: Some(format!("{}events:log", self.prefix)),
        });
    }

    /// Queues an engine-wide event on `{prefix}engine:{kind}`: not account-scoped, so
    /// not under `events:` (which the gateway routes by `subAccountId`).
    pub fn engine_event(&self, kind: &str, mut data: Value) {
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        if let Value::Object(m) = &mut data {
            m.insert("seq".into(), seq.into());
        }
        self.push(BusWrite::Publish {
            channel: format!("{}engine:{kind}", self.prefix),
            payload: data.to_string(),
            log: None,
        });
    }

    /// Queues `SET {prefix}{key} value EX ttl`.
    pub fn set(&self, key: &str, value: &Value, ttl: Duration) {
        self.push(BusWrite::Set {
            key: format!("{}{key}", self.prefix),
            value: value.to_string(),
            ttl,
        });
    }

    fn push(&self, w: BusWrite) {
        if self.tx.try_send(w).is_err() {
            metrics::counter!(DROPPED).increment(1);
        }
    }
}

/// How many events the `events:log` stream keeps (about: trimmed with `~`).
pub const EVENT_LOG_LEN: usize = 50_000;

const PUBLISH_AND_LOG: &str = "redis.call('PUBLISH', ARGV[1], ARGV[2]); \
     redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'channel', ARGV[1], 'data', ARGV[2])";

/// Sends the queue to Redis in order, through `link`, until `cancel` or until every
/// [`Outbox`] is dropped and the queue is empty. A write that fails is retried (after
/// the link's backoff) before the next, so order holds across an outage.
pub async fn run_writer(
    mut link: RedisLink,
    mut rx: mpsc::Receiver<BusWrite>,
    cancel: CancellationToken,
) {
    metrics::counter!(WRITTEN).increment(0);
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        let w = tokio::select! {
            w = rx.recv() => w,
            _ = cancel.cancelled() => return,
        };
        let Some(w) = w else { return };
        let cmd = match &w {
            BusWrite::Publish {
                channel,
                payload,
                log: None,
            } => {
                let mut c = redis::cmd("PUBLISH");
                c.arg(channel).arg(payload);
                c
            }
            // Published and logged in one step, so the log and the live stream agree.
            BusWrite::Publish {
                channel,
                payload,
                log: Some(stream),
            } => {
                let mut c = redis::cmd("EVAL");
                c.arg(PUBLISH_AND_LOG)
                    .arg(1)
                    .arg(stream)
                    .arg(channel)
                    .arg(payload)
                    .arg(EVENT_LOG_LEN);
                c
            }
            BusWrite::Set { key, value, ttl } => {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(value).arg("EX").arg(ttl.as_secs().max(1));
                c
            }
        };
        // A write that fails is retried before the next, so order holds.
        if !link.run_until_done(&mut conn, &cmd, &cancel).await {
            return;
        }
        metrics::counter!(WRITTEN).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_carry_a_strictly_increasing_seq_from_the_boot_time() {
        let (out, mut rx) = outbox("t:", 8, 1_700_000_000_000);
        out.event("pnl_update", serde_json::json!({"subAccountId": "a"}), 5);
        out.event("margin_update", serde_json::json!({"subAccountId": "a"}), 6);
        let mut seqs = Vec::new();
        for kind in ["pnl_update", "margin_update"] {
            let Some(BusWrite::Publish {
                channel, payload, ..
            }) = rx.recv().await
            else {
                panic!("a publish")
            };
            assert_eq!(channel, format!("t:events:{kind}"));
            let v: Value = serde_json::from_str(&payload).unwrap();
            seqs.push(v["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, [1_700_000_000_000_001, 1_700_000_000_000_002]);
        assert!(seqs[1] < 1 << 53);
    }

    #[tokio::test]
    async fn a_full_queue_drops_rather_than_blocking_the_engine() {
        let (out, mut rx) = outbox("t:", 1, 0);
        out.event("a", serde_json::json!({}), 0);
        out.event("b", serde_json::json!({}), 0);
        assert!(rx.recv().await.is_some());
        assert!(rx.try_recv().is_err(), "the second was dropped");
    }
}
