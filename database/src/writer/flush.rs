//! One batch's way into PostgreSQL: attempts under a deadline, retries with backoff,
//! exactly once through the ledger, and the isolation of whatever the server refuses.
//!
//! Failures come in three kinds ([`Failure`]):
//! - **unavailable** (no connection, a connection that died or went silent, the
//!   server shutting down, a lock or resource wait): says nothing about the rows, so
//!   the batch is retried until it is written, however long the outage;
//! - **refused** (SQLSTATE classes 22 and 23): the content is at fault, so the batch
//!   is bisected at once;
//! - any other **server** error: retried `max_attempts` times, then bisected like a
//!   refusal, so no row can block its batch (or the shutdown) for ever.
//!
//! Bisecting first separates the rows from the `contracts` and `positions_current`
//! refreshes that ride with them, so one bad row never takes other keys' refreshes
//! with it. A single refused item goes to `rejected_snapshots` ([`dead_letter`]).

use std::sync::Arc;

use backoff::backoff::Backoff;
use chrono::Utc;
use model::{Contract, ContractKey, GreekSnapshot};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres};
use tokio::time::Instant;

use super::dead_letter::{self, DeadLetter, Kind};
use super::shared::{record_committed, Shared};
use crate::copy::CopyBuffer;

/// Contracts and positions that ride along with a batch.
#[derive(Default)]
pub(super) struct Extras {
    pub contracts: Vec<Arc<Contract>>,
    pub positions: Vec<GreekSnapshot>,
}

pub(super) struct Outcome {
    /// Rows handed to this flush (persisted, refused or abandoned).
    pub rows: usize,
    pub persisted: u64,
    pub rejected: u64,
    pub retries: u64,
    /// Contract keys that need no further attempt (written, or refused and kept).
    pub contracts: Vec<ContractKey>,
}

/// What commits together under one ledger entry.
#[derive(Default)]
struct Unit {
    rows: Vec<GreekSnapshot>,
    contracts: Vec<Arc<Contract>>,
    positions: Vec<GreekSnapshot>,
    dead: Vec<DeadLetter>,
}

impl Unit {
    /// Two smaller units holding everything this one does, or `None` if this one
    /// holds a single item. Rows part from their extras first.
    fn split(mut self) -> Result<(Unit, Unit), Unit> {
        let extras = !self.contracts.is_empty() || !self.positions.is_empty();
        if !self.rows.is_empty() && extras {
            let rows = std::mem::take(&mut self.rows);
            return Ok((self, Unit::rows(rows)));
        }
        if self.rows.len() > 1 {
            let second = self.rows.split_off(self.rows.len() / 2);
            return Ok((self, Unit::rows(second)));
        }
        if !self.contracts.is_empty() && !self.positions.is_empty() {
            let positions = std::mem::take(&mut self.positions);
            return Ok((
                self,
                Unit {
                    positions,
                    ..Unit::default()
                },
            ));
        }
        if self.contracts.len() > 1 {
            let second = self.contracts.split_off(self.contracts.len() / 2);
            return Ok((
                self,
                Unit {
                    contracts: second,
                    ..Unit::default()
                },
            ));
        }
        if self.positions.len() > 1 {
            let second = self.positions.split_off(self.positions.len() / 2);
            return Ok((
                self,
                Unit {
                    positions: second,
                    ..Unit::default()
                },
            ));
        }
        Err(self)
    }

    fn rows(rows: Vec<GreekSnapshot>) -> Unit {
        Unit {
            rows,
            ..Unit::default()
        }
    }

    /// The single item of a unit that cannot be split, as a dead letter.
    fn into_dead_letter(self, err: &sqlx::Error) -> Option<DeadLetter> {
        if let Some(r) = self.rows.first() {
            Some(DeadLetter::snapshot(r, Kind::Snapshot, err))
        } else if let Some(c) = self.contracts.first() {
            Some(DeadLetter::contract(c, err))
        } else {
            self.positions
                .first()
                .map(|p| DeadLetter::snapshot(p, Kind::Position, err))
        }
    }
}

enum Attempt {
    Committed,
    /// The ledger says an earlier attempt of this unit committed.
    AlreadyCommitted,
}

enum Failure {
    Unavailable(String),
    Refused(sqlx::Error),
    Server(sqlx::Error),
}

impl Failure {
    fn classify(err: sqlx::Error) -> Failure {
        let code = match &err {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => return Failure::Unavailable(err.to_string()),
        };
        let Some(code) = code else {
            return Failure::Server(err);
        };
        match &code[..2.min(code.len())] {
            "22" | "23" => Failure::Refused(err),
            // connection exception, transaction rollback (serialization, deadlock),
            // insufficient resources, system error
            "08" | "40" | "53" | "58" => Failure::Unavailable(err.to_string()),
            // operator intervention (shutdown, terminated backend), except a cancelled
            // statement, which the statement itself may cause
            "57" if code != "57014" => Failure::Unavailable(err.to_string()),
            // a lock wait timed out (maintenance, or our own abandoned attempt), an
            // abandoned transaction ended by the server
            _ if code == "55P03" || code == "25P03" => Failure::Unavailable(err.to_string()),
            _ => Failure::Server(err),
        }
    }
}

pub(super) async fn flush(
    shared: Arc<Shared>,
    rows: Vec<GreekSnapshot>,
    extras: Extras,
) -> Outcome {
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
        contracts: extras.contracts,
        positions: extras.positions,
        dead: Vec::new(),
    }];
    while let Some(unit) = units.pop() {
        let seq = shared
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut buf = CopyBuffer::with_capacity(unit.rows.len());
        for r in &unit.rows {
            buf.push(r);
        }
        let bytes = buf.finish();
        let mut backoff =
            streaming::retry::exponential(shared.cfg.retry_initial, shared.cfg.retry_max);
        let mut server_errors = 0u32;
        loop {
            let failure = match attempt(&shared, seq, &bytes, &unit).await {
                Ok(result) => {
                    if matches!(result, Attempt::AlreadyCommitted) {
                        tracing::info!(
                            seq,
                            "batch found committed by an earlier attempt; not written again"
                        );
                    }
                    shared.cfg.health.committed();
                    record_committed(&shared, &unit.rows, Utc::now());
                    out.persisted += unit.rows.len() as u64;
                    out.contracts
                        .extend(unit.contracts.iter().map(|c| c.key().clone()));
                    for d in &unit.dead {
                        m.dead_letters[d.kind as usize].increment(1);
                    }
                    break;
                }
                Err(f) => f,
            };
            let refused = match failure {
                Failure::Refused(err) => Some(err),
                Failure::Server(err) if server_errors + 1 >= shared.cfg.max_attempts.max(1) => {
                    Some(err)
                }
                Failure::Server(err) => {
                    server_errors += 1;
                    retry_later(
                        &shared,
                        &mut backoff,
                        &mut out,
                        seq,
                        &unit,
                        &err.to_string(),
                    )
                    .await;
                    None
                }
                Failure::Unavailable(reason) => {
                    retry_later(&shared, &mut backoff, &mut out, seq, &unit, &reason).await;
                    None
                }
            };
            if let Some(err) = refused {
                m.permanent_errors.increment(1);
                isolate(&shared, unit, &err, &mut units, &mut out);
                break;
            }
        }
    }
    if out.rows > 0 {
        m.flush_seconds.record(started.elapsed().as_secs_f64());
        m.batch_rows.record(out.rows as f64);
    }
    out
}

async fn retry_later(
    shared: &Shared,
    backoff: &mut backoff::ExponentialBackoff,
    out: &mut Outcome,
    seq: i64,
    unit: &Unit,
    reason: &str,
) {
    let m = &shared.metrics;
    shared.cfg.health.failed();
    m.transient_errors.increment(1);
    m.retries.increment(1);
    out.retries += 1;
    let wait = backoff.next_backoff().unwrap_or(shared.cfg.retry_max);
    tracing::warn!(error = %reason, seq, rows = unit.rows.len(), retry_in_ms = wait.as_millis() as u64,
        "batch write failed; will retry");
    tokio::time::sleep(wait).await;
}

/// Splits a refused unit, or turns its single item into a dead letter.
fn isolate(
    shared: &Shared,
    unit: Unit,
    err: &sqlx::Error,
    units: &mut Vec<Unit>,
    out: &mut Outcome,
) {
    if !unit.dead.is_empty() {
        shared
            .metrics
            .dead_letter_failures
            .increment(unit.dead.len() as u64);
        tracing::error!(error = %err, count = unit.dead.len(),
            "rejected_snapshots refused the dead letters; they are lost");
        return;
    }
    match unit.split() {
        Ok((a, b)) => {
            units.push(b);
            units.push(a);
        }
        Err(single) => {
            if let Some(row) = single.rows.first() {
                tracing::error!(error = %err, broker = %row.broker(), contract = %row.contract().key(),
                    account = %row.position.account_id, "row rejected by PostgreSQL; kept in rejected_snapshots");
                shared.metrics.rejected[row.broker() as usize].increment(1);
                out.rejected += 1;
            } else {
                tracing::error!(error = %err, "contract or position refresh rejected by PostgreSQL; kept in rejected_snapshots");
            }
            out.contracts
                .extend(single.contracts.iter().map(|c| c.key().clone()));
            if let Some(letter) = single.into_dead_letter(err) {
                units.push(Unit {
                    dead: vec![letter],
                    ..Unit::default()
                });
            }
        }
    }
}

async fn attempt(shared: &Shared, seq: i64, bytes: &[u8], unit: &Unit) -> Result<Attempt, Failure> {
    let mut conn = shared.pool.acquire().await.map_err(Failure::classify)?;
    let deadline = shared.cfg.flush_timeout;
    match tokio::time::timeout(deadline, write(&mut conn, shared, seq, bytes, unit)).await {
        Ok(result) => result.map_err(Failure::classify),
        Err(_) => {
            // The connection may be half-open: close it here rather than let the pool
            // test it with a ping that may never be answered. The ledger decides, on
            // the next attempt, whether this one committed.
            drop(PoolConnection::detach(conn));
            Err(Failure::Unavailable(format!(
                "no answer within {} ms",
                deadline.as_millis()
            )))
        }
    }
}

async fn write(
    conn: &mut PoolConnection<Postgres>,
    shared: &Shared,
    seq: i64,
    bytes: &[u8],
    unit: &Unit,
) -> Result<Attempt, sqlx::Error> {
    let mut tx = Connection::begin(&mut **conn).await?;
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
    if !unit.contracts.is_empty() {
        crate::upsert::contracts(&mut tx, &unit.contracts).await?;
    }
    if !unit.rows.is_empty() {
        let mut copy = tx.copy_in_raw(&shared.copy_sql).await?;
        copy.send(bytes).await?;
        copy.finish().await?;
    }
    if !unit.positions.is_empty() {
        crate::upsert::positions(&mut tx, &unit.positions).await?;
    }
    if !unit.dead.is_empty() {
        dead_letter::insert(&mut tx, &unit.dead).await?;
    }
    tx.commit().await?;
    Ok(Attempt::Committed)
}
