//! The engine's writes to the gateway's Redis: account events (`PUBLISH
//! pms:events:{type}`, js-gateway §2.3) and snapshots (`SET pms:risk:{id} … EX`).
//!
//! Producers never wait on Redis: they stamp each event with the next `seq` and `ts`
//! and queue it in one step ([`Outbox`]); one writer task ([`run_writer`]) sends the
//! queue in order on one connection, so subscribers see events in `seq` order. While
//! Redis is down the queue holds what it can; when it is full, the periodic
//! valuations (`pnl_update`, `margin_update`, `risk:` snapshots: the next replaces
//! them) are dropped first — never fills, closes, order events or the heartbeat — and
//! every lost event is announced by an `engine:events_gap` (also in the events log)
//! with the first and last lost `seq`.
//!
//! `seq` = boot milliseconds × 1000 + n: strictly increasing across restarts while
//! fewer than a million events a second are published, and below 2^53.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::Value;
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

/// What a Redis outage may drop when the queue is full: the periodic valuations,
/// which the next tick replaces (`pnl_update`, `margin_update`, `risk:` snapshots).
/// Fills, closes, order events and the heartbeat are never dropped for them.
fn droppable(w: &BusWrite) -> bool {
    match w {
        BusWrite::Publish { channel, .. } => {
            channel.ends_with("events:pnl_update") || channel.ends_with("events:margin_update")
        }
        BusWrite::Set { key, .. } => key.contains("risk:"),
    }
}

#[derive(Debug)]
enum Queued {
    Write {
        write: BusWrite,
        /// The event's seq, if it is one.
        seq: Option<u64>,
    },
    /// Where an `events_gap` announcement goes out: its seq was taken when the first
    /// event it announces was dropped; it names every one dropped until it is sent.
    Gap { seq: u64 },
}

#[derive(Debug, Default)]
struct Lost {
    first: u64,
    last: u64,
    count: u64,
}

#[derive(Debug)]
struct State {
    seq: u64,
    queue: std::collections::VecDeque<Queued>,
    lost: Option<Lost>,
    gap_queued: bool,
    outboxes: usize,
}

#[derive(Debug)]
struct Shared {
    state: std::sync::Mutex<State>,
    ready: tokio::sync::Notify,
    capacity: usize,
}

/// Where the engine queues its Redis writes. Cheap to clone.
///
/// An event's `seq` is taken in the same step that queues it (under one lock), so
/// the queue — and Redis, which the writer feeds in queue order — sees events in
/// `seq` order whichever thread published them.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
    prefix: Arc<str>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.state.lock().expect("outbox lock").outboxes += 1;
        Self {
            shared: self.shared.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.state.lock().expect("outbox lock");
            st.outboxes -= 1;
            st.outboxes == 0
        };
        if last {
            self.shared.ready.notify_one();
        }
    }
}

/// The writer's end of the queue.
#[derive(Debug)]
pub struct Drain {
    shared: Arc<Shared>,
    prefix: Arc<str>,
}

impl Drain {
    /// The next write, in queue order; `None` once every [`Outbox`] is dropped and
    /// the queue is empty.
    pub async fn recv(&mut self) -> Option<BusWrite> {
        let shared = self.shared.clone();
        loop {
            // Registered before the look: a write queued in between still wakes us.
            let ready = shared.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(w) = self.try_recv() {
                return Some(w);
            }
            if shared.state.lock().expect("outbox lock").outboxes == 0 {
                return None;
            }
            ready.await;
        }
    }

    /// The next write if one is queued.
    pub fn try_recv(&self) -> Option<BusWrite> {
        let mut st = self.shared.state.lock().expect("outbox lock");
        match st.queue.pop_front()? {
            Queued::Write { write, .. } => Some(write),
            Queued::Gap { seq } => {
                st.gap_queued = false;
                let lost = st.lost.take().unwrap_or_default();
                let data = serde_json::json!({"seq": seq, "ts": chrono::Utc::now().timestamp_millis(),
                    "firstSeq": lost.first, "lastSeq": lost.last, "lost": lost.count});
                Some(BusWrite::Publish {
                    channel: format!("{}engine:events_gap", self.prefix),
                    payload: data.to_string(),
                    log: Some(format!("{}events:log", self.prefix)),
                })
            }
        }
    }
}

/// An outbox for keys under `prefix` (`pms:`), and the queue its writer drains.
pub fn outbox(prefix: &str, capacity: usize, boot_ms: u64) -> (Outbox, Drain) {
    metrics::counter!(DROPPED).increment(0);
    let shared = Arc::new(Shared {
        state: std::sync::Mutex::new(State {
            seq: boot_ms * 1000,
            queue: Default::default(),
            lost: None,
            gap_queued: false,
            outboxes: 1,
        }),
        ready: tokio::sync::Notify::new(),
        capacity: capacity.max(1),
    });
    let prefix: Arc<str> = prefix.into();
    (
        Outbox {
            shared: shared.clone(),
            prefix: prefix.clone(),
        },
        Drain { shared, prefix },
    )
}

/// How far past its capacity the queue holds writes that are never dropped for room
/// (fills, closes, order events, the heartbeat) before it must drop those too.
const ESSENTIAL_HEADROOM: usize = 16;

impl Outbox {
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Queues event `kind` with `data` (an object: it gains `seq` and `ts`).
    pub fn event(&self, kind: &str, data: Value, ts_ms: i64) {
        let channel = format!("{}events:{kind}", self.prefix);
        let log = Some(format!("{}events:log", self.prefix));
        self.queue_event(channel, log, data, Some(ts_ms));
    }

    /// Queues an engine-wide event on `{prefix}engine:{kind}`: not account-scoped, so
    /// not under `events:` (which the gateway routes by `subAccountId`).
    pub fn engine_event(&self, kind: &str, data: Value) {
        let channel = format!("{}engine:{kind}", self.prefix);
        self.queue_event(channel, None, data, None);
    }

    fn queue_event(&self, channel: String, log: Option<String>, mut data: Value, ts: Option<i64>) {
        {
            let mut st = self.shared.state.lock().expect("outbox lock");
            st.seq += 1;
            let seq = st.seq;
            if let Value::Object(m) = &mut data {
                m.insert("seq".into(), seq.into());
                if let Some(ts) = ts {
                    m.insert("ts".into(), ts.into());
                }
            }
            let write = BusWrite::Publish {
                channel,
                payload: data.to_string(),
                log,
            };
            self.push_locked(&mut st, write, Some(seq));
        }
        self.shared.ready.notify_one();
    }

    /// Queues `SET {prefix}{key} value EX ttl`.
    pub fn set(&self, key: &str, value: &Value, ttl: Duration) {
        let write = BusWrite::Set {
            key: format!("{}{key}", self.prefix),
            value: value.to_string(),
            ttl,
        };
        {
            let mut st = self.shared.state.lock().expect("outbox lock");
            self.push_locked(&mut st, write, None);
        }
        self.shared.ready.notify_one();
    }

    /// Queues `write`; when the queue is full, a valuation makes room (the new one if
    /// it is one, else the oldest queued), and what is lost is announced.
    fn push_locked(&self, st: &mut State, write: BusWrite, seq: Option<u64>) {
        let capacity = self.shared.capacity;
        if st.queue.len() >= capacity {
            if droppable(&write) {
                Self::lose(st, seq);
                return;
            }
            let oldest = st
                .queue
                .iter()
                .position(|q| matches!(q, Queued::Write { write, .. } if droppable(write)));
            match oldest {
                Some(i) => {
                    if let Some(Queued::Write { seq, .. }) = st.queue.remove(i) {
                        Self::lose(st, seq);
                    }
                }
                None if st.queue.len() >= capacity * ESSENTIAL_HEADROOM => {
                    metrics::counter!(ERRORS, "kind" => "essential_dropped").increment(1);
                    tracing::error!(
                        "the engine's Redis queue is full of events that matter: one dropped"
                    );
                    Self::lose(st, seq);
                    return;
                }
                None => {}
            }
        }
        st.queue.push_back(Queued::Write { write, seq });
    }

    /// Counts a dropped write; an event's seq joins the announced gap.
    fn lose(st: &mut State, seq: Option<u64>) {
        metrics::counter!(DROPPED).increment(1);
        let Some(seq) = seq else { return };
        let lost = st.lost.get_or_insert(Lost {
            first: seq,
            last: seq,
            count: 0,
        });
        lost.first = lost.first.min(seq);
        lost.last = lost.last.max(seq);
        lost.count += 1;
        if !st.gap_queued {
            st.gap_queued = true;
            st.seq += 1;
            let gap = st.seq;
            st.queue.push_back(Queued::Gap { seq: gap });
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
pub async fn run_writer(mut link: RedisLink, mut rx: Drain, cancel: CancellationToken) {
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
    async fn a_full_queue_drops_valuations_rather_than_blocking_the_engine() {
        let (out, mut rx) = outbox("t:", 1, 0);
        out.event("pnl_update", serde_json::json!({}), 0);
        out.event("pnl_update", serde_json::json!({}), 0);
        assert!(rx.recv().await.is_some());
        // The second was dropped, and that is announced.
        let Some(BusWrite::Publish {
            channel, payload, ..
        }) = rx.try_recv()
        else {
            panic!("the gap")
        };
        assert_eq!(channel, "t:engine:events_gap");
        let v: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            (
                v["firstSeq"].as_u64(),
                v["lastSeq"].as_u64(),
                v["lost"].as_u64()
            ),
            (Some(2), Some(2), Some(1))
        );
        assert!(rx.try_recv().is_none());
    }

    fn seq_of(w: &BusWrite) -> (String, u64) {
        let BusWrite::Publish {
            channel, payload, ..
        } = w
        else {
            panic!("a publish")
        };
        let v: Value = serde_json::from_str(payload).unwrap();
        (
            channel.rsplit(':').next().unwrap().to_owned(),
            v["seq"].as_u64().unwrap(),
        )
    }

    #[tokio::test]
    async fn under_an_outage_valuations_go_first_and_what_matters_stays_in_order() {
        let (out, rx) = outbox("t:", 3, 0);
        out.event("order_filled", serde_json::json!({}), 0); // 1
        for _ in 0..5 {
            out.event("pnl_update", serde_json::json!({}), 0); // 2..=6
        }
        out.set("risk:a", &serde_json::json!({}), Duration::from_secs(5));
        out.set(
            "engine:heartbeat",
            &serde_json::json!({}),
            Duration::from_secs(5),
        );
        out.event("position_closed", serde_json::json!({}), 0);
        out.event("order_cancelled", serde_json::json!({}), 0);
        let mut got = Vec::new();
        let mut gap = Value::Null;
        while let Some(w) = rx.try_recv() {
            match &w {
                BusWrite::Set { key, .. } => got.push((key.clone(), 0)),
                BusWrite::Publish {
                    payload, channel, ..
                } => {
                    if channel.ends_with("events_gap") {
                        gap = serde_json::from_str(payload).unwrap();
                    }
                    got.push(seq_of(&w))
                }
            }
        }
        let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert!(kinds.contains(&"order_filled") && kinds.contains(&"position_closed"));
        assert!(kinds.contains(&"order_cancelled") && kinds.contains(&"t:engine:heartbeat"));
        assert!(kinds.contains(&"events_gap"), "{got:?}");
        let seqs: Vec<u64> = got
            .iter()
            .filter(|(_, s)| *s > 0)
            .map(|(_, s)| *s)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        // Every lost seq (only valuations were) is in the announced range, counted.
        let sent: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        let last = *seqs.iter().max().unwrap();
        let missing: Vec<u64> = (1..=last).filter(|s| !sent.contains(s)).collect();
        let (first, end) = (
            gap["firstSeq"].as_u64().unwrap(),
            gap["lastSeq"].as_u64().unwrap(),
        );
        assert!(
            missing.iter().all(|s| (first..=end).contains(s)),
            "{missing:?} {gap}"
        );
        assert_eq!(gap["lost"].as_u64(), Some(missing.len() as u64), "{gap}");
        assert_eq!(missing.len(), 5, "the five pnl_updates: {got:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn events_from_many_threads_are_queued_in_seq_order() {
        let (out, rx) = outbox("t:", 1_000_000, 0);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5_000 {
                    let kind = if t % 2 == 0 {
                        "order_filled"
                    } else {
                        "pnl_update"
                    };
                    out.event(kind, serde_json::json!({"subAccountId": "a"}), 0);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut last = 0;
        let mut n = 0;
        while let Some(w) = rx.try_recv() {
            let (_, seq) = seq_of(&w);
            assert!(seq > last, "seq {seq} queued after {last}");
            last = seq;
            n += 1;
        }
        assert_eq!(n, 40_000);
    }
}
