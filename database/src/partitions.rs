//! Partition maintenance: the current month and the next ones exist before rows
//! arrive for them, at start-up and while running. The SQL side
//! (`greekstream_ensure_partitions`) also moves any rows of a newly created month out
//! of the default partition.
//!
//! Creating or dropping a partition needs strong locks on `greek_snapshots`, and an
//! analyst's long query holds a weak one that conflicts with them. Waiting for it
//! would queue every writer behind us, so each step gives up after
//! `lock_timeout` (counted in `greekstream_partition_lock_timeouts_total`) and is
//! retried after `retry`: rows meanwhile land in the default partition, and ingest
//! never stalls for longer than one `lock_timeout`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct PartitionConfig {
    pub months_back: i32,
    pub months_ahead: i32,
    pub interval: Duration,
    /// Ledger rows older than this are pruned.
    pub ledger_retention: Duration,
    /// Monthly partitions of `greek_snapshots` older than this many months are
    /// dropped; `None` keeps everything.
    pub retention_months: Option<i32>,
    /// How long one step waits for its locks before giving up.
    pub lock_timeout: Duration,
    /// After a failed step, how long until the next try (instead of `interval`).
    pub retry: Duration,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            months_back: 1,
            months_ahead: 3,
            interval: Duration::from_secs(3600),
            ledger_retention: Duration::from_secs(7 * 24 * 3600),
            retention_months: None,
            lock_timeout: Duration::from_millis(200),
            retry: Duration::from_secs(30),
        }
    }
}

pub const LOCK_TIMEOUTS: &str = "greekstream_partition_lock_timeouts_total";

/// A transaction whose lock waits end after `lock_timeout`.
async fn begin_with_lock_timeout(
    pool: &PgPool,
    lock_timeout: Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

fn count_lock_timeout<T>(result: &Result<T, sqlx::Error>) {
    if let Err(sqlx::Error::Database(db)) = result {
        if db.code().as_deref() == Some("55P03") {
            metrics::counter!(LOCK_TIMEOUTS).increment(1);
        }
    }
}

/// Creates missing partitions; returns how many were created.
pub async fn ensure_partitions(pool: &PgPool, cfg: &PartitionConfig) -> Result<i32, sqlx::Error> {
    let mut tx = begin_with_lock_timeout(pool, cfg.lock_timeout).await?;
    let created = sqlx::query_scalar("SELECT greekstream_ensure_partitions($1, $2)")
        .bind(cfg.months_back)
        .bind(cfg.months_ahead)
        .fetch_one(&mut *tx)
        .await;
    count_lock_timeout(&created);
    let created = created?;
    tx.commit().await?;
    Ok(created)
}

/// Creates the partition for one month (any date in it), moving its rows out of
/// the default partition. Returns false if it already existed.
pub async fn ensure_month(pool: &PgPool, any_day: chrono::NaiveDate) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT greekstream_ensure_partition($1)")
        .bind(any_day)
        .fetch_one(pool)
        .await
}

/// Drops the monthly partitions that ended more than `keep_months` months before
/// the current month (and deletes rows that old from the default partition).
/// Returns the dropped partitions' names.
pub async fn drop_old_partitions(
    pool: &PgPool,
    cfg: &PartitionConfig,
    keep_months: i32,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = begin_with_lock_timeout(pool, cfg.lock_timeout).await?;
    let dropped = sqlx::query_scalar("SELECT greekstream_drop_old_partitions($1)")
        .bind(keep_months)
        .fetch_all(&mut *tx)
        .await;
    count_lock_timeout(&dropped);
    let dropped = dropped?;
    tx.commit().await?;
    Ok(dropped)
}

pub async fn prune_ledger(pool: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM ingest_batches WHERE committed_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Runs maintenance every `cfg.interval` (or `cfg.retry` after a failed step) until
/// cancelled. Failures are logged and retried; they never stop ingestion (the
/// default partition catches rows meanwhile).
pub async fn run_maintenance(pool: PgPool, cfg: PartitionConfig, cancel: CancellationToken) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        wait = if maintain_once(&pool, &cfg).await {
            cfg.interval
        } else {
            cfg.retry.min(cfg.interval)
        };
    }
}

/// One round of maintenance; false if a step failed and should be retried soon.
pub async fn maintain_once(pool: &PgPool, cfg: &PartitionConfig) -> bool {
    let mut ok = true;
    match ensure_partitions(pool, cfg).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(created = n, "partitions created"),
        Err(err) => {
            ok = false;
            metrics::counter!(crate::writer::DB_ERRORS, "kind" => "maintenance").increment(1);
            tracing::warn!(error = %err, retry_in_s = cfg.retry.as_secs(),
                "partition maintenance failed (rows go to the default partition meanwhile); will retry");
        }
    }
    if let Some(keep) = cfg.retention_months {
        match drop_old_partitions(pool, cfg, keep).await {
            Ok(dropped) if dropped.is_empty() => {}
            Ok(dropped) => {
                tracing::info!(?dropped, keep_months = keep, "old partitions dropped")
            }
            Err(err) => {
                ok = false;
                metrics::counter!(crate::writer::DB_ERRORS, "kind" => "maintenance").increment(1);
                tracing::warn!(error = %err, "retention failed; will retry");
            }
        }
    }
    if let Err(err) = prune_ledger(pool, cfg.ledger_retention).await {
        tracing::warn!(error = %err, "ingest ledger pruning failed");
    }
    ok
}
