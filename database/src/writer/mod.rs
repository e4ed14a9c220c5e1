//! The batch writer: snapshots in, binary COPY batches out, exactly once.
//!
//! - When: see [`policy`] (50 records / 1 s / eagerly whenever a connection is idle).
//! - Exactly once: each batch writes its ledger row `(writer_id, batch_seq)` in the
//!   same transaction as its rows. A retry after an ambiguous failure (say, the
//!   connection died during COMMIT) finds the ledger row and stops: the earlier
//!   attempt committed. No ledger row means it did not, and the batch is written.
//! - Never a silent drop: while PostgreSQL is down, batches retry with backoff and
//!   the buffer keeps filling up to `max_buffer` rows; then we stop reading the input
//!   channel, which pushes back on the processor and the sources. A row PostgreSQL
//!   rejects for its content (class 22/23 errors) is isolated by bisecting its
//!   batch, then counted and logged; the rest of the batch is written.

pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backoff::backoff::Backoff;
use chrono::{DateTime, Utc};
use metrics::{Counter, Gauge, Histogram};
use processor::{Contract, GreekSnapshot};
use sqlx::PgPool;
use streaming::Broker;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::copy::{copy_statement, CopyBuffer};
use crate::latency::LatencyWindow;
pub use policy::{Decision, FlushPolicy};

pub const INGEST_LATENCY: &str = "greekstream_ingest_latency_seconds";
pub const BATCH_ROWS: &str = "greekstream_writer_batch_rows";
pub const FLUSH_DURATION: &str = "greekstream_writer_flush_duration_seconds";
pub const EVENTS_PERSISTED: &str = "greekstream_events_persisted_total";
pub const DB_ERRORS: &str = "greekstream_db_errors_total";
pub const DB_RETRIES: &str = "greekstream_db_retries_total";
pub const BUFFER_DEPTH: &str = "greekstream_writer_buffer_rows";
pub const INFLIGHT_ROWS: &str = "greekstream_writer_inflight_rows";
pub const ROWS_REJECTED: &str = processor::pipeline::EVENTS_REJECTED;

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
            log_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterReport {
    pub persisted: u64,
    pub batches: u64,
    pub retries: u64,
    /// Rows PostgreSQL refused for their content.
    pub rejected: u64,
    /// Rows still unwritten when the shutdown grace ran out.
    pub abandoned: u64,
}

struct Metrics {
    latency: Vec<Histogram>,
    persisted: Vec<Counter>,
    rejected: Vec<Counter>,
    batch_rows: Histogram,
    flush_seconds: Histogram,
    transient_errors: Counter,
    permanent_errors: Counter,
    retries: Counter,
    buffer_depth: Gauge,
    inflight_rows: Gauge,
}

impl Metrics {
    fn new() -> Self {
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

/// Registers the writer's metrics at zero so they are exported before the first row.
pub fn register_metrics() {
    let m = Metrics::new();
    for c in m.persisted.iter().chain(&m.rejected) {
        c.increment(0);
    }
    m.transient_errors.increment(0);
    m.permanent_errors.increment(0);
    m.retries.increment(0);
    m.buffer_depth.set(0.0);
    m.inflight_rows.set(0.0);
}

/// What the flush tasks share.
struct Shared {
    pool: PgPool,
    writer_id: i64,
    next_seq: AtomicI64,
    copy_sql: String,
    cfg: WriterConfig,
    metrics: Metrics,
    window: Mutex<LatencyWindow>,
}

/// Contracts and positions that ride along with a batch.
#[derive(Default)]
struct Extras {
    contracts: Vec<Arc<Contract>>,
    positions: Vec<GreekSnapshot>,
}

struct Outcome {
    rows: usize,
    persisted: u64,
    rejected: u64,
    retries: u64,
    /// Contract keys now known to be in the database.
    contracts: Vec<Arc<str>>,
}

type PositionKey = (Broker, Arc<str>, Arc<str>);

/// Runs until `rx` is closed and everything is written (or the shutdown grace runs out).
pub async fn run_writer(
    pool: PgPool,
    cfg: WriterConfig,
    mut rx: mpsc::Receiver<GreekSnapshot>,
) -> WriterReport {
    let shared = Arc::new(Shared {
        pool,
        writer_id: writer_id(),
        next_seq: AtomicI64::new(0),
        copy_sql: copy_statement(),
        metrics: Metrics::new(),
        window: Mutex::new(LatencyWindow::default()),
        cfg,
    });
    let cfg = &shared.cfg;
    let policy = cfg.policy;
    let mut report = WriterReport::default();
    let mut buffer: Vec<GreekSnapshot> =
        Vec::with_capacity(policy.max_batch_rows.min(cfg.max_buffer));
    let mut oldest: Option<Instant> = None;
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut inflight_rows = 0usize;
    let mut known_contracts: HashSet<Arc<str>> = HashSet::new();
    let mut pending_contracts: HashSet<Arc<str>> = HashSet::new();
    let mut dirty_positions: HashMap<PositionKey, GreekSnapshot> = HashMap::new();
    let mut last_positions = Instant::now();
    let mut open = true;
    let mut grace_deadline: Option<Instant> = None;
    let mut log_tick = tokio::time::interval(cfg.log_interval);
    log_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut rows_since_log, mut last_log) = (0u64, Instant::now());

    let accept = |s: GreekSnapshot,
                  buffer: &mut Vec<GreekSnapshot>,
                  oldest: &mut Option<Instant>,
                  dirty: &mut HashMap<PositionKey, GreekSnapshot>| {
        if buffer.is_empty() {
            *oldest = Some(Instant::now());
        }
        let key = (
            s.broker(),
            s.position.account_id.clone(),
            s.contract().key.clone(),
        );
        dirty.insert(key, s.clone());
        buffer.push(s);
    };

    loop {
        // Take whatever has already arrived, so a batch holds all of it.
        while open && buffer.len() < cfg.max_buffer {
            match rx.try_recv() {
                Ok(s) => accept(s, &mut buffer, &mut oldest, &mut dirty_positions),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    grace_deadline = Some(Instant::now() + cfg.shutdown_grace);
                }
            }
        }
        let mut deadline = None;
        loop {
            match policy.decide(buffer.len(), oldest, tasks.len(), !open, Instant::now()) {
                Decision::Flush(n) => {
                    let rest = buffer.split_off(n);
                    let rows = std::mem::replace(&mut buffer, rest);
                    oldest = (!buffer.is_empty()).then(Instant::now);
                    let mut extras = Extras::default();
                    for r in &rows {
                        let key = &r.contract().key;
                        if !known_contracts.contains(key) && pending_contracts.insert(key.clone()) {
                            extras.contracts.push(r.position.contract.clone());
                        }
                    }
                    if !dirty_positions.is_empty()
                        && (last_positions.elapsed() >= cfg.positions_interval || !open)
                    {
                        extras.positions = dirty_positions.drain().map(|(_, v)| v).collect();
                        last_positions = Instant::now();
                    }
                    inflight_rows += rows.len();
                    tasks.spawn(flush(shared.clone(), rows, extras));
                }
                Decision::WaitUntil(t) => {
                    deadline = Some(t);
                    break;
                }
                Decision::Idle => break,
            }
        }
        // Positions that changed are refreshed on their own timer even when no rows
        // follow them (a quiet stream, or shutdown).
        if !dirty_positions.is_empty() {
            let due = last_positions + cfg.positions_interval;
            if (Instant::now() >= due || !open) && tasks.len() < policy.max_in_flight.max(1) {
                let extras = Extras {
                    contracts: Vec::new(),
                    positions: dirty_positions.drain().map(|(_, v)| v).collect(),
                };
                last_positions = Instant::now();
                tasks.spawn(flush(shared.clone(), Vec::new(), extras));
            } else {
                deadline = Some(deadline.map_or(due, |d: Instant| d.min(due)));
            }
        }
        shared.metrics.buffer_depth.set(buffer.len() as f64);
        shared.metrics.inflight_rows.set(inflight_rows as f64);
        if !open && buffer.is_empty() && tasks.is_empty() && dirty_positions.is_empty() {
            break;
        }
        let wait = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let grace = grace_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = rx.recv(), if open && buffer.len() < cfg.max_buffer => match msg {
                Some(s) => accept(s, &mut buffer, &mut oldest, &mut dirty_positions),
                None => {
                    open = false;
                    grace_deadline = Some(Instant::now() + cfg.shutdown_grace);
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let out = done.expect("flush tasks do not panic");
                inflight_rows -= out.rows;
                report.batches += 1;
                report.persisted += out.persisted;
                report.rejected += out.rejected;
                report.retries += out.retries;
                rows_since_log += out.persisted;
                for key in out.contracts {
                    pending_contracts.remove(&key);
                    known_contracts.insert(key);
                }
            }
            _ = tokio::time::sleep_until(wait), if deadline.is_some() => {}
            _ = tokio::time::sleep_until(grace), if grace_deadline.is_some() => {
                let left = buffer.len() + inflight_rows;
                tasks.abort_all();
                report.abandoned = left as u64;
                tracing::error!(rows = left, "shutdown grace ran out: rows left unwritten");
                break;
            }
            _ = log_tick.tick() => {
                let mut w = shared.window.lock().expect("latency window lock");
                let secs = last_log.elapsed().as_secs_f64().max(1e-9);
                if w.count() > 0 {
                    tracing::info!(
                        p50_ms = w.quantile_ms(0.50),
                        p95_ms = w.quantile_ms(0.95),
                        p99_ms = w.quantile_ms(0.99),
                        rows_per_s = (rows_since_log as f64 / secs).round(),
                        buffered = buffer.len(),
                        in_flight = inflight_rows,
                        "ingest latency (received -> committed), last {:.0}s", secs
                    );
                }
                w.reset();
                rows_since_log = 0;
                last_log = Instant::now();
            }
        }
    }
    shared.metrics.buffer_depth.set(0.0);
    shared.metrics.inflight_rows.set(0.0);
    report
}

fn writer_id() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = streaming::rng::SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32));
    (rng.next_u64() >> 1) as i64
}

/// One unit of work: rows that commit together under one ledger entry.
struct Unit {
    rows: Vec<GreekSnapshot>,
    extras: Option<Extras>,
}

enum Attempt {
    Committed,
    /// The ledger says an earlier attempt of this batch committed.
    AlreadyCommitted,
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity violation): the content is
/// at fault and a retry would fail the same way.
fn is_permanent(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

async fn flush(shared: Arc<Shared>, rows: Vec<GreekSnapshot>, extras: Extras) -> Outcome {
    let m = &shared.metrics;
    let started = Instant::now();
    let mut out = Outcome {
        rows: rows.len(),
        persisted: 0,
        rejected: 0,
        retries: 0,
        contracts: Vec::new(),
    };
    let mut units = vec![Unit {
        rows,
        extras: Some(extras),
    }];
    while let Some(unit) = units.pop() {
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = CopyBuffer::with_capacity(unit.rows.len());
        for r in &unit.rows {
            buf.push(r);
        }
        let bytes = buf.finish();
        let mut backoff = backoff::ExponentialBackoff {
            initial_interval: shared.cfg.retry_initial,
            max_interval: shared.cfg.retry_max,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        loop {
            match attempt(&shared, seq, &bytes, &unit).await {
                Ok(result) => {
                    let committed_at = Utc::now();
                    if matches!(result, Attempt::AlreadyCommitted) {
                        tracing::info!(
                            seq,
                            "batch found committed by an earlier attempt; not written again"
                        );
                    }
                    record_committed(&shared, &unit.rows, committed_at);
                    out.persisted += unit.rows.len() as u64;
                    if let Some(extras) = &unit.extras {
                        out.contracts
                            .extend(extras.contracts.iter().map(|c| c.key.clone()));
                    }
                    break;
                }
                Err(err) if is_permanent(&err) => {
                    m.permanent_errors.increment(1);
                    split_or_reject(&shared, unit, &err, &mut units, &mut out);
                    break;
                }
                Err(err) => {
                    m.transient_errors.increment(1);
                    m.retries.increment(1);
                    out.retries += 1;
                    let wait = backoff.next_backoff().unwrap_or(shared.cfg.retry_max);
                    tracing::warn!(error = %err, seq, rows = unit.rows.len(), retry_in_ms = wait.as_millis() as u64,
                        "batch write failed; will retry");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    if out.rows > 0 {
        m.flush_seconds.record(started.elapsed().as_secs_f64());
        m.batch_rows.record(out.rows as f64);
    }
    out
}

fn split_or_reject(
    shared: &Shared,
    mut unit: Unit,
    err: &sqlx::Error,
    units: &mut Vec<Unit>,
    out: &mut Outcome,
) {
    if unit.rows.len() > 1 {
        let second = unit.rows.split_off(unit.rows.len() / 2);
        units.push(Unit {
            rows: second,
            extras: None,
        });
        units.push(unit);
    } else if unit.extras.is_some() {
        // The contracts or positions may be at fault rather than the row: try the row alone.
        tracing::warn!(error = %err, "contract/position refresh rejected; dropped for this batch");
        units.push(Unit {
            rows: unit.rows,
            extras: None,
        });
    } else if let Some(row) = unit.rows.first() {
        tracing::error!(error = %err, broker = %row.broker(), contract = %row.contract().key,
            account = %row.position.account_id, "row rejected by PostgreSQL");
        shared.metrics.rejected[row.broker() as usize].increment(1);
        out.rejected += 1;
    }
}

fn record_committed(shared: &Shared, rows: &[GreekSnapshot], committed_at: DateTime<Utc>) {
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

async fn attempt(
    shared: &Shared,
    seq: i64,
    bytes: &[u8],
    unit: &Unit,
) -> Result<Attempt, sqlx::Error> {
    let mut tx = shared.pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO ingest_batches (writer_id, batch_seq, row_count) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(shared.writer_id)
    .bind(seq)
    .bind(unit.rows.len() as i32)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        tx.rollback().await?;
        return Ok(Attempt::AlreadyCommitted);
    }
    if let Some(extras) = &unit.extras {
        if !extras.contracts.is_empty() {
            crate::upsert::contracts(&mut tx, &extras.contracts).await?;
        }
    }
    if !unit.rows.is_empty() {
        let mut copy = tx.copy_in_raw(&shared.copy_sql).await?;
        copy.send(bytes).await?;
        copy.finish().await?;
    }
    if let Some(extras) = &unit.extras {
        if !extras.positions.is_empty() {
            crate::upsert::positions(&mut tx, &extras.positions).await?;
        }
    }
    tx.commit().await?;
    Ok(Attempt::Committed)
}
