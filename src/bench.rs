//! `greekstream bench ingest` and `bench copy`: the real pipeline (or a raw COPY of
//! the same rows) against a scratch database next to the configured one
//! (`<name>_bench`, recreated each run), printing one JSON line.
//!
//! Latency comes from the persisted rows (persisted_at − received_at), and the
//! synthetic source stamps received_at with the instant each event was due, so a
//! pipeline that falls behind or pushes back shows it.

use std::time::{Duration, Instant};

use database::copy::{copy_statement, CopyBuffer};
use database::partitions::ensure_partitions;
use processor::normalize::Normalizer;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use streaming::synthetic::{run_synthetic, Generator, SyntheticConfig};
use streaming::{Broker, BrokerEvent, BrokerPayload};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::Pipeline;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Db(#[from] database::DbError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{persisted} of {sent} events persisted: the pipeline lost data")]
    Lost { sent: u64, persisted: i64 },
}

/// Streaming past the measured window, so its last events leave the writer the way
/// they do in steady state and not through the shutdown flush (as the peer bench does).
const TAIL: Duration = Duration::from_millis(1500);

async fn scratch_database(cfg: &Config) -> Result<(PgPool, PgConnectOptions), BenchError> {
    let base = database::connect_options(cfg.database_url.expose(), "greekstream-bench")?;
    let name = format!("{}_bench", base.get_database().unwrap_or("greekstream"));
    let mut admin = base.clone().database("postgres").connect().await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let opts = base.database(&name);
    let pool = database::lazy_pool(
        cfg.db_limits.apply(opts.clone()),
        cfg.writer.policy.max_in_flight as u32 + 1,
    );
    database::migrate(&pool).await?;
    ensure_partitions(&pool, &cfg.partitions).await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    Ok((pool, opts))
}

/// user+sys CPU seconds of one /proc/<pid>/stat line; with `children`, reaped children too.
fn stat_cpu_seconds(stat: &str, children: bool) -> f64 {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let take = if children { 11..15 } else { 11..13 };
    let ticks: u64 = fields
        .get(take)
        .map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux we run on.
    ticks as f64 / 100.0
}

fn self_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .map(|s| stat_cpu_seconds(&s, false))
        .unwrap_or(0.0)
}

/// CPU of every `postgres` process on the machine, reaped backends included.
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains("(postgres)"))
        .map(|s| stat_cpu_seconds(&s, true))
        .sum()
}

fn ms(seconds: Option<f64>) -> Value {
    seconds.map_or(Value::Null, |s| json!((s * 10_000.0).round() / 10.0))
}

pub async fn ingest(
    cfg: &Config,
    rate: Option<f64>,
    seconds: f64,
    seed: u64,
) -> Result<Value, BenchError> {
    let (pool, _) = scratch_database(cfg).await?;
    let window = Duration::from_secs_f64(seconds);
    let synthetic = SyntheticConfig {
        seed,
        rate,
        duration: Some(if rate.is_some() {
            window + TAIL
        } else {
            window
        }),
        ..SyntheticConfig::default()
    };
    let (cpu0, pg0, wall0) = (self_cpu_seconds(), postgres_cpu_seconds(), Instant::now());
    let pipeline = Pipeline::start(
        pool.clone(),
        cfg.channel_capacity,
        cfg.writer.clone(),
        processor::position_stream::PositionHub::new(cfg.position_stream_capacity),
        cfg.model,
        Default::default(),
        Default::default(),
    );
    let sent = run_synthetic(synthetic, pipeline.sender(), CancellationToken::new()).await;
    let report = pipeline.finish().await;
    let (cpu, pg_cpu, wall) = (
        self_cpu_seconds() - cpu0,
        postgres_cpu_seconds() - pg0,
        wall0.elapsed().as_secs_f64(),
    );
    let measured = match rate {
        Some(r) => ((r * seconds).floor() as u64).min(sent.events_sent),
        None => sent.events_sent,
    } as i64;

    let persisted: i64 = sqlx::query_scalar("SELECT count(*) FROM greek_snapshots")
        .fetch_one(&pool)
        .await?;
    if persisted as u64 != report.processor.forwarded {
        return Err(BenchError::Lost {
            sent: report.processor.forwarded,
            persisted,
        });
    }
    let row: (i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM persisted_at - received_at))::float8,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM persisted_at - received_at))::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM persisted_at - received_at))::float8,
                extract(epoch FROM max(persisted_at) - min(received_at))::float8
         FROM greek_snapshots WHERE source_seq < $1",
    )
    .bind(measured)
    .fetch_one(&pool)
    .await?;
    let halves: (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM persisted_at - received_at))
                    FILTER (WHERE source_seq < $1 / 2)::float8,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM persisted_at - received_at))
                    FILTER (WHERE source_seq >= $1 / 2)::float8
         FROM greek_snapshots WHERE source_seq < $1",
    )
    .bind(measured)
    .fetch_one(&pool)
    .await?;
    let (events, p50, p95, p99, span) = row;
    let throughput = span
        .filter(|s| *s > 0.0)
        .map(|s| (events - 1).max(1) as f64 / s);
    // Sustained: the achieved rate is within 1% of the target and the latency does
    // not grow over the run (second half's p95 within 2× the first half's + 10 ms).
    let steady = match halves {
        (Some(a), Some(b)) => b <= 2.0 * a + 0.010,
        _ => false,
    };
    let sustained = rate.map(|r| throughput.is_some_and(|t| (t - r).abs() <= 0.01 * r) && steady);
    let stats = report.writer;
    Ok(json!({
        "rate": rate.map_or(json!("max"), |r| json!(r)),
        "events": events,
        "throughput_eps": throughput.map(|t| t.round()),
        "p50_ms": ms(p50),
        "p95_ms": ms(p95),
        "p99_ms": ms(p99),
        "p95_first_half_ms": ms(halves.0),
        "p95_second_half_ms": ms(halves.1),
        "sustained": sustained,
        "cpu_s": (cpu * 100.0).round() / 100.0,
        "cpu_postgres_s": (pg_cpu * 100.0).round() / 100.0,
        "wall_s": (wall * 100.0).round() / 100.0,
        "batches": stats.batches,
        "mean_batch": if stats.batches > 0 { json!((stats.persisted as f64 / stats.batches as f64 * 10.0).round() / 10.0) } else { Value::Null },
        "retries": stats.retries,
    }))
}

/// Raw PostgreSQL: one binary COPY of `rows` synthetic rows into the same
/// partitioned, indexed table, in one transaction. The ceiling the writer is
/// measured against.
pub async fn copy(cfg: &Config, rows: usize, seed: u64) -> Result<Value, BenchError> {
    let (pool, _) = scratch_database(cfg).await?;
    let mut generator = Generator::new(&SyntheticConfig {
        seed,
        ..SyntheticConfig::default()
    });
    let mut normalizer = Normalizer::new();
    let mut buf = CopyBuffer::with_capacity(rows);
    let now = chrono::Utc::now();
    for _ in 0..rows {
        let (account, tick) = generator.next_tick(now);
        let event = BrokerEvent {
            broker: Broker::Synthetic,
            account,
            received_at: now,
            payload: BrokerPayload::Synthetic(tick),
        };
        if let Ok(n) = normalizer.normalize(event) {
            buf.push(&n.snapshot);
        }
    }
    let n = buf.rows();
    let bytes = buf.finish();
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    let mut copy = tx.copy_in_raw(&copy_statement()).await?;
    copy.send(bytes.as_slice()).await?;
    copy.finish().await?;
    tx.commit().await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "method": "copy_binary",
        "rows": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "rows_per_s": (n as f64 / secs).round(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fields_from_proc_stat() {
        let line = "42 (post gres) S 1 2 3 4 5 6 7 8 9 10 150 50 7 3 20 0";
        assert!((stat_cpu_seconds(line, false) - 2.0).abs() < 1e-9);
        assert!((stat_cpu_seconds(line, true) - 2.1).abs() < 1e-9);
        assert_eq!(stat_cpu_seconds("garbage", true), 0.0);
    }
}
