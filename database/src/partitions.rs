//! Partition maintenance: the current month and the next ones exist before rows
//! arrive for them, at start-up and while running. The SQL side
//! (`greekstream_ensure_partitions`) also moves any rows of a newly created month out
//! of the default partition.

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
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            months_back: 1,
            months_ahead: 3,
            interval: Duration::from_secs(3600),
            ledger_retention: Duration::from_secs(7 * 24 * 3600),
            retention_months: None,
        }
    }
}

/// Creates missing partitions; returns how many were created.
pub async fn ensure_partitions(pool: &PgPool, cfg: &PartitionConfig) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT greekstream_ensure_partitions($1, $2)")
        .bind(cfg.months_back)
        .bind(cfg.months_ahead)
        .fetch_one(pool)
        .await
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
    keep_months: i32,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT greekstream_drop_old_partitions($1)")
        .bind(keep_months)
        .fetch_all(pool)
        .await
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

/// Runs maintenance every `cfg.interval` until cancelled. Failures are logged and
/// retried at the next tick; they never stop ingestion (the default partition
/// catches rows meanwhile).
pub async fn run_maintenance(pool: PgPool, cfg: PartitionConfig, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        match ensure_partitions(&pool, &cfg).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(created = n, "partitions created"),
            Err(err) => {
                metrics::counter!(crate::writer::DB_ERRORS, "kind" => "maintenance").increment(1);
                tracing::warn!(error = %err, "partition maintenance failed; will retry");
            }
        }
        if let Some(keep) = cfg.retention_months {
            match drop_old_partitions(&pool, keep).await {
                Ok(dropped) if dropped.is_empty() => {}
                Ok(dropped) => {
                    tracing::info!(?dropped, keep_months = keep, "old partitions dropped")
                }
                Err(err) => tracing::warn!(error = %err, "retention failed; will retry"),
            }
        }
        if let Err(err) = prune_ledger(&pool, cfg.ledger_retention).await {
            tracing::warn!(error = %err, "ingest ledger pruning failed");
        }
    }
}
