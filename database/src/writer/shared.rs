//! What the writer and its flush tasks share: the configuration, the health seen by
//! `/health`, the metrics and the committed rows' accounting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{Counter, Gauge, Histogram};
use model::{Broker, GreekSnapshot};
use sqlx::PgPool;

use super::dead_letter;
use super::policy::FlushPolicy;
use crate::latency::LatencyWindow;

/// How long a unit may take before its connection is presumed half-open.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

pub const INGEST_LATENCY: &str = "greekstream_ingest_latency_seconds";
pub const BATCH_ROWS: &str = "greekstream_writer_batch_rows";
pub const FLUSH_DURATION: &str = "greekstream_writer_flush_duration_seconds";
pub const EVENTS_PERSISTED: &str = "greekstream_events_persisted_total";
pub const DB_ERRORS: &str = "greekstream_db_errors_total";
pub const DB_RETRIES: &str = "greekstream_db_retries_total";
pub const BUFFER_DEPTH: &str = "greekstream_writer_buffer_rows";
pub const INFLIGHT_ROWS: &str = "greekstream_writer_inflight_rows";
pub const ROWS_REJECTED: &str = processor::pipeline::EVENTS_REJECTED;
pub const DEAD_LETTERS: &str = "greekstream_writer_dead_letters_total";
pub const DEAD_LETTER_FAILURES: &str = "greekstream_writer_dead_letter_failures_total";

/// Whether the writer can commit, for `/health`: when the current run of failed
/// attempts began (Unix milliseconds, 0 while attempts succeed).
#[derive(Debug, Default)]
pub struct WriterHealth {
    failing_since_ms: AtomicI64,
    last_commit_ms: AtomicI64,
}

impl WriterHealth {
    /// Since when every attempt has failed, if the last one did.
    pub fn failing_since(&self) -> Option<DateTime<Utc>> {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    pub fn last_commit(&self) -> Option<DateTime<Utc>> {
        match self.last_commit_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    pub fn failed(&self) {
        let now = Utc::now().timestamp_millis();
        let _ =
            self.failing_since_ms
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn committed(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
        self.last_commit_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub policy: FlushPolicy,
    /// Rows buffered (not yet in a batch) before we stop reading the input.
    pub max_buffer: usize,
    /// How often `positions_current` is refreshed.
    pub positions_interval: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// After the input ends, how long to keep trying to write what is left.
    pub shutdown_grace: Duration,
    /// One attempt (connection acquired) that takes longer is abandoned and its
    /// connection closed: the connection is presumed half-open.
    pub flush_timeout: Duration,
    /// Server errors other than refusals a batch may meet before it is bisected
    /// (see [`flush`]).
    pub max_attempts: u32,
    /// Shared with `/health`.
    pub health: Arc<WriterHealth>,
    /// How often the rolling latency line is logged.
    pub log_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            policy: FlushPolicy::default(),
            max_buffer: 100_000,
            positions_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            max_attempts: 5,
            health: Arc::default(),
            log_interval: Duration::from_secs(5),
        }
    }
}

pub(super) struct Metrics {
    pub(super) latency: Vec<Histogram>,
    pub(super) persisted: Vec<Counter>,
    pub(super) rejected: Vec<Counter>,
    /// By [`dead_letter::Kind`].
    pub(super) dead_letters: Vec<Counter>,
    pub(super) dead_letter_failures: Counter,
    pub(super) batch_rows: Histogram,
    pub(super) flush_seconds: Histogram,
    pub(super) transient_errors: Counter,
    pub(super) permanent_errors: Counter,
    pub(super) retries: Counter,
    pub(super) buffer_depth: Gauge,
    pub(super) inflight_rows: Gauge,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let per_broker = |f: &dyn Fn(&'static str) -> Counter| {
            Broker::ALL
                .iter()
                .map(|b| f(b.as_str()))
                .collect::<Vec<_>>()
        };
        Self {
            latency: Broker::ALL
                .iter()
                .map(|b| metrics::histogram!(INGEST_LATENCY, "broker" => b.as_str()))
                .collect(),
            persisted: per_broker(&|b| metrics::counter!(EVENTS_PERSISTED, "broker" => b)),
            rejected: per_broker(
                &|b| metrics::counter!(ROWS_REJECTED, "broker" => b, "reason" => "database"),
            ),
            dead_letters: [
                dead_letter::Kind::Snapshot,
                dead_letter::Kind::Contract,
                dead_letter::Kind::Position,
            ]
            .iter()
            .map(|k| metrics::counter!(DEAD_LETTERS, "kind" => k.as_str()))
            .collect(),
            dead_letter_failures: metrics::counter!(DEAD_LETTER_FAILURES),
            batch_rows: metrics::histogram!(BATCH_ROWS),
            flush_seconds: metrics::histogram!(FLUSH_DURATION),
            transient_errors: metrics::counter!(DB_ERRORS, "kind" => "transient"),
            permanent_errors: metrics::counter!(DB_ERRORS, "kind" => "permanent"),
            retries: metrics::counter!(DB_RETRIES),
            buffer_depth: metrics::gauge!(BUFFER_DEPTH),
            inflight_rows: metrics::gauge!(INFLIGHT_ROWS),
        }
    }
}

/// What the flush tasks share.
pub(super) struct Shared {
    pub(super) pool: PgPool,
    pub(super) writer_id: i64,
    pub(super) next_seq: AtomicI64,
    pub(super) copy_sql: String,
    pub(super) cfg: WriterConfig,
    pub(super) metrics: Metrics,
    pub(super) window: Mutex<LatencyWindow>,
}

pub(super) fn record_committed(
    shared: &Shared,
    rows: &[GreekSnapshot],
    committed_at: DateTime<Utc>,
) {
    let m = &shared.metrics;
    let mut window = shared.window.lock().expect("latency window lock");
    let mut per_broker = [0u64; Broker::ALL.len()];
    for r in rows {
        let us = (committed_at - r.received_at)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        m.latency[r.broker() as usize].record(us as f64 / 1e6);
        window.record_micros(us);
        per_broker[r.broker() as usize] += 1;
    }
    for (i, n) in per_broker.into_iter().enumerate() {
        if n > 0 {
            m.persisted[i].increment(n);
        }
    }
}
