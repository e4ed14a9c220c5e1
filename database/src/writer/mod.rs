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
//!   refuses is isolated by bisecting its batch and kept in `rejected_snapshots`;
//!   the rest of the batch, and every other key's contract and position refresh, is
//!   written (see [`flush`]).
//! - Never a hang: each attempt has a deadline (`flush_timeout`) after which its
//!   connection is closed as half-open, and the writer's sessions carry server-side
//!   limits ([`crate::pool::SessionLimits`]) so the server ends what we abandoned.

pub mod dead_letter;
mod flush;
pub mod policy;
mod shared;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::Broker;
use model::{AccountId, ContractKey, GreekSnapshot};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::copy::copy_statement;
use crate::latency::LatencyWindow;
use flush::{flush, Extras, Outcome};
pub use policy::{Decision, FlushPolicy};
pub use shared::*;
use shared::{Metrics, Shared};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterReport {
    pub persisted: u64,
    pub batches: u64,
    pub retries: u64,
    /// Rows PostgreSQL refused (kept in `rejected_snapshots`).
    pub rejected: u64,
    /// Rows still unwritten when the shutdown grace ran out.
    pub abandoned: u64,
}

/// Registers the writer's metrics at zero so they are exported before the first row.
pub fn register_metrics() {
    let m = Metrics::new();
    for c in m.persisted.iter().chain(&m.rejected).chain(&m.dead_letters) {
        c.increment(0);
    }
    m.dead_letter_failures.increment(0);
    m.transient_errors.increment(0);
    m.permanent_errors.increment(0);
    m.retries.increment(0);
    m.buffer_depth.set(0.0);
    m.inflight_rows.set(0.0);
}

/// Contract keys remembered as already in `contracts`.
const MAX_KNOWN_CONTRACTS: usize = 100_000;

type PositionKey = (Broker, AccountId, ContractKey, model::PositionSide);

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
    let mut w = WriterLoop::new(shared.clone());
    let cfg = &shared.cfg;
    let mut log_tick = tokio::time::interval(cfg.log_interval);
    log_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Take whatever has already arrived, so a batch holds all of it.
        while w.open && w.buffer.len() < cfg.max_buffer {
            match rx.try_recv() {
                Ok(s) => w.accept(s),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => w.close(),
            }
        }
        let deadline = w.start_flushes();
        shared.metrics.buffer_depth.set(w.buffer.len() as f64);
        shared.metrics.inflight_rows.set(w.inflight_rows as f64);
        if w.is_done() {
            break;
        }
        let far = || Instant::now() + Duration::from_secs(3600);
        let wait = deadline.unwrap_or_else(far);
        let grace = w.grace_deadline.unwrap_or_else(far);
        tokio::select! {
            msg = rx.recv(), if w.open && w.buffer.len() < cfg.max_buffer => match msg {
                Some(s) => w.accept(s),
                None => w.close(),
            },
            Some(done) = w.tasks.join_next_with_id(), if !w.tasks.is_empty() => match done {
                Ok((id, out)) => w.finished(id, out),
                Err(err) => w.task_failed(err),
            },
            _ = tokio::time::sleep_until(wait), if deadline.is_some() => {}
            _ = tokio::time::sleep_until(grace), if w.grace_deadline.is_some() => {
                let left = w.buffer.len() + w.inflight_rows;
                w.tasks.abort_all();
                w.report.abandoned = left as u64;
                tracing::error!(rows = left, "shutdown grace ran out: rows left unwritten");
                break;
            }
            _ = log_tick.tick() => w.log_latency(),
        }
    }
    shared.metrics.buffer_depth.set(0.0);
    shared.metrics.inflight_rows.set(0.0);
    w.report
}

/// The writer's state between two wake-ups: what is buffered, what is in flight, and
/// what the database is known to hold.
struct WriterLoop {
    shared: Arc<Shared>,
    report: WriterReport,
    buffer: Vec<GreekSnapshot>,
    oldest: Option<Instant>,
    tasks: JoinSet<Outcome>,
    /// Per task: its rows and the contract keys it carries, to account for a task
    /// that fails.
    in_tasks: HashMap<tokio::task::Id, (usize, Vec<ContractKey>)>,
    inflight_rows: usize,
    known_contracts: HashSet<ContractKey>,
    pending_contracts: HashSet<ContractKey>,
    dirty_positions: HashMap<PositionKey, GreekSnapshot>,
    last_positions: Instant,
    /// False once the channel closed: drain, then stop.
    open: bool,
    grace_deadline: Option<Instant>,
    rows_since_log: u64,
    last_log: Instant,
}

impl WriterLoop {
    fn new(shared: Arc<Shared>) -> Self {
        let cap = shared.cfg.policy.max_batch_rows.min(shared.cfg.max_buffer);
        Self {
            shared,
            report: WriterReport::default(),
            buffer: Vec::with_capacity(cap),
            oldest: None,
            tasks: JoinSet::new(),
            in_tasks: HashMap::new(),
            inflight_rows: 0,
            known_contracts: HashSet::new(),
            pending_contracts: HashSet::new(),
            dirty_positions: HashMap::new(),
            last_positions: Instant::now(),
            open: true,
            grace_deadline: None,
            rows_since_log: 0,
            last_log: Instant::now(),
        }
    }

    fn accept(&mut self, s: GreekSnapshot) {
        if self.buffer.is_empty() {
            self.oldest = Some(Instant::now());
        }
        let key = (
            s.broker(),
            s.position.account_id.clone(),
            s.contract().key().clone(),
            s.position.side,
        );
        self.dirty_positions.insert(key, s.clone());
        self.buffer.push(s);
    }

    fn close(&mut self) {
        self.open = false;
        self.grace_deadline = Some(Instant::now() + self.shared.cfg.shutdown_grace);
    }

    fn is_done(&self) -> bool {
        !self.open
            && self.buffer.is_empty()
            && self.tasks.is_empty()
            && self.dirty_positions.is_empty()
    }

    fn spawn(&mut self, rows: Vec<GreekSnapshot>, extras: Extras) {
        let work = (
            rows.len(),
            extras.contracts.iter().map(|c| c.key().clone()).collect(),
        );
        self.inflight_rows += rows.len();
        let id = self
            .tasks
            .spawn(flush(self.shared.clone(), rows, extras))
            .id();
        self.in_tasks.insert(id, work);
    }

    fn positions_due(&self) -> bool {
        self.last_positions.elapsed() >= self.shared.cfg.positions_interval || !self.open
    }

    fn take_positions(&mut self) -> Vec<GreekSnapshot> {
        self.last_positions = Instant::now();
        self.dirty_positions.drain().map(|(_, v)| v).collect()
    }

    /// Starts every flush the policy allows now; returns when to look again.
    fn start_flushes(&mut self) -> Option<Instant> {
        let policy = self.shared.cfg.policy;
        let mut deadline = None;
        loop {
            let decision = policy.decide(
                self.buffer.len(),
                self.oldest,
                self.tasks.len(),
                !self.open,
                Instant::now(),
            );
            match decision {
                Decision::Flush(n) => {
                    let rest = self.buffer.split_off(n);
                    let rows = std::mem::replace(&mut self.buffer, rest);
                    self.oldest = (!self.buffer.is_empty()).then(Instant::now);
                    let mut extras = Extras::default();
                    for r in &rows {
                        let key = r.contract().key();
                        if !self.known_contracts.contains(key)
                            && self.pending_contracts.insert(key.clone())
                        {
                            extras.contracts.push(r.position.contract.clone());
                        }
                    }
                    if !self.dirty_positions.is_empty() && self.positions_due() {
                        extras.positions = self.take_positions();
                    }
                    self.spawn(rows, extras);
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
        if !self.dirty_positions.is_empty() {
            let due = self.last_positions + self.shared.cfg.positions_interval;
            let is_due = self.positions_due();
            if is_due && self.tasks.len() < policy.max_in_flight.max(1) {
                let extras = Extras {
                    contracts: Vec::new(),
                    positions: self.take_positions(),
                };
                self.spawn(Vec::new(), extras);
            } else if !is_due {
                deadline = Some(deadline.map_or(due, |d: Instant| d.min(due)));
            }
            // Due with every connection busy: a finishing batch wakes us, not a timer
            // that has already fired (that would spin for as long as the database is down).
        }
        deadline
    }

    fn finished(&mut self, id: tokio::task::Id, out: Outcome) {
        self.in_tasks.remove(&id);
        self.inflight_rows -= out.rows;
        let r = &mut self.report;
        r.batches += 1;
        r.persisted += out.persisted;
        r.rejected += out.rejected;
        r.retries += out.retries;
        self.rows_since_log += out.persisted;
        for key in out.contracts {
            self.pending_contracts.remove(&key);
            self.known_contracts.insert(key);
        }
        if self.known_contracts.len() > MAX_KNOWN_CONTRACTS {
            // Bounded memory: forgetting only costs a harmless re-upsert
            // (ON CONFLICT DO NOTHING) of the contracts still streaming.
            self.known_contracts.clear();
        }
    }

    /// A bug, not the database: the writer goes on, and says what the batch cost.
    fn task_failed(&mut self, err: tokio::task::JoinError) {
        let (rows, contracts) = self.in_tasks.remove(&err.id()).unwrap_or_default();
        metrics::counter!(processor::pipeline::PANICS, "task" => "writer").increment(1);
        tracing::error!(error = %err, rows, "a batch's task failed; its rows are lost (counted as abandoned)");
        self.inflight_rows -= rows;
        self.report.abandoned += rows as u64;
        for key in contracts {
            self.pending_contracts.remove(&key);
        }
    }

    fn log_latency(&mut self) {
        let mut w = self.shared.window.lock().expect("latency window lock");
        let secs = self.last_log.elapsed().as_secs_f64().max(1e-9);
        if w.count() > 0 {
            tracing::info!(
                p50_ms = w.quantile_ms(0.50),
                p95_ms = w.quantile_ms(0.95),
                p99_ms = w.quantile_ms(0.99),
                rows_per_s = (self.rows_since_log as f64 / secs).round(),
                buffered = self.buffer.len(),
                in_flight = self.inflight_rows,
                "ingest latency (received -> committed), last {:.0}s",
                secs
            );
        }
        w.reset();
        self.rows_since_log = 0;
        self.last_log = Instant::now();
    }
}

fn writer_id() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = streaming::rng::SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32));
    (rng.next_u64() >> 1) as i64
}
