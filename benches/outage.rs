//! The writer across real database faults, measured (not a pass/fail test): the real
//! pipeline (synthetic source → processor → writer) writes into a scratch database
//! through a TCP proxy, and in one run
//!
//! 1. an analyst's transaction holds a read on `greek_snapshots` while partition
//!    maintenance tries to create the next months (the largest gap between commits
//!    is reported: ingest must not stall behind the maintenance);
//! 2. the proxy blackholes the database connection for `--blackhole` seconds (open
//!    connections go half-open for good, new ones hang), then lets new connections
//!    through again (the time until rows flow again is reported, and the writer
//!    thread's CPU while it waited);
//!
//! then everything is checked for loss and duplicates.
//!
//! `cargo bench --bench outage -- [--rate 1000] [--blackhole 30] [--seed 1]`
//! (`DATABASE_URL` names the server; the scratch database is `<name>_outage`).

use std::time::{Duration, Instant};

use database::partitions::{ensure_partitions, maintain_once, PartitionConfig};
use database::testing::TcpProxy;
use database::{run_writer, WriterConfig};
use greekstream::config::Config;
use processor::pipeline::{run_processor, SourceActivity};
use processor::position_stream::PositionHub;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, PgPool};
use streaming::synthetic::{run_synthetic, SyntheticConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// user+sys CPU seconds of one thread of this process.
fn thread_cpu_seconds(tid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return 0.0;
    };
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11..13]
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM greek_snapshots")
        .fetch_one(pool)
        .await
        .expect("count rows")
}

/// Samples the row count every 20 ms for `d`; returns the longest time the count
/// stood still.
async fn longest_stall(pool: &PgPool, d: Duration) -> Duration {
    let end = Instant::now() + d;
    let (mut last, mut since, mut worst) = (count(pool).await, Instant::now(), Duration::ZERO);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = count(pool).await;
        if n != last {
            worst = worst.max(since.elapsed());
            (last, since) = (n, Instant::now());
        }
    }
    worst.max(since.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench --list` / test harness probes: nothing to list.
        return;
    }
    let rate = arg("--rate", 1000.0);
    let blackhole = Duration::from_secs_f64(arg("--blackhole", 30.0));
    let seed = arg("--seed", 1.0) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(run(rate, blackhole, seed));
    println!("{out}");
}

async fn run(rate: f64, blackhole: Duration, seed: u64) -> serde_json::Value {
    let _ = dotenvy::dotenv();
    let cfg = Config::from_env().expect("configuration");
    let base = database::connect_options(cfg.database_url.expose(), "greekstream-outage")
        .expect("DATABASE_URL");
    let name = format!("{}_outage", base.get_database().unwrap_or("greekstream"));
    let mut admin = base
        .clone()
        .database("postgres")
        .connect()
        .await
        .expect("admin");
    for sql in [
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        format!("CREATE DATABASE \"{name}\""),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
    }
    let opts = base.database(&name);
    let direct = database::lazy_pool(opts.clone(), 4);
    database::migrate(&direct).await.expect("migrate");
    let partitions = PartitionConfig {
        months_ahead: 0,
        ..cfg.partitions
    };
    ensure_partitions(&direct, &partitions)
        .await
        .expect("partitions");

    let host = opts.get_host();
    let server = format!(
        "{}:{}",
        if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        },
        opts.get_port()
    );
    let proxy = TcpProxy::start(server.parse().expect("server address")).await;
    let via_proxy = cfg.db_limits.apply(
        opts.clone()
            .host(&proxy.addr.ip().to_string())
            .port(proxy.addr.port())
            .ssl_mode(sqlx::postgres::PgSslMode::Disable),
    );

    // The writer runs alone on a thread of its own, so its CPU can be read apart.
    let (snapshots_tx, snapshots_rx) = mpsc::channel(cfg.channel_capacity);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let writer_cfg = WriterConfig {
        ..cfg.writer.clone()
    };
    let conns = writer_cfg.policy.max_in_flight as u32 + 1;
    let writer = std::thread::spawn(move || {
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        tid_tx.send(tid).expect("tid");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("writer runtime");
        rt.block_on(async move {
            let pool = database::lazy_pool(via_proxy, conns);
            run_writer(pool, writer_cfg, snapshots_rx).await
        })
    });
    let tid = tid_rx.recv().expect("writer thread id");

    let (events_tx, events_rx) = mpsc::channel(cfg.channel_capacity);
    let processor = tokio::spawn(run_processor(
        events_rx,
        snapshots_tx,
        PositionHub::new(1024),
        cfg.model,
        std::sync::Arc::new(SourceActivity::default()),
    ));
    let warm = Duration::from_secs(5);
    let maintenance_window = Duration::from_secs(5);
    let after = Duration::from_secs(10);
    let total = warm + maintenance_window + blackhole + after + Duration::from_secs(5);
    let source = tokio::spawn(run_synthetic(
        SyntheticConfig {
            seed,
            rate: Some(rate),
            duration: Some(total),
            ..SyntheticConfig::default()
        },
        events_tx,
        CancellationToken::new(),
    ));
    tokio::time::sleep(warm).await;

    // 1. An analyst's open read while maintenance wants new months.
    let mut analyst = opts.connect().await.expect("analyst");
    let mut reading = analyst.begin().await.expect("begin");
    sqlx::query("SELECT count(*) FROM greek_snapshots")
        .execute(&mut *reading)
        .await
        .expect("read");
    let wanting = PartitionConfig {
        months_ahead: 2,
        ..cfg.partitions
    };
    let maintenance = {
        let direct = direct.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            let end = Instant::now() + maintenance_window;
            while Instant::now() < end {
                if !maintain_once(&direct, &wanting).await {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            failed
        })
    };
    let stall_under_maintenance = longest_stall(&direct, maintenance_window).await;
    let maintenance_failures: u32 = maintenance.await.expect("maintenance");
    reading.commit().await.expect("commit");
    let created_after_reader = maintain_once(&direct, &wanting).await;

    // 2. The database connection blackholed.
    proxy.blackhole();
    let (cpu0, t0) = (thread_cpu_seconds(&tid), Instant::now());
    let frozen_at = count(&direct).await;
    tokio::time::sleep(blackhole).await;
    let writer_cpu = thread_cpu_seconds(&tid) - cpu0;
    let waited = t0.elapsed().as_secs_f64();
    let frozen = count(&direct).await;
    proxy.restore();
    let restored = Instant::now();
    let recovery = loop {
        if count(&direct).await > frozen {
            break restored.elapsed();
        }
        if restored.elapsed() > Duration::from_secs(120) {
            break restored.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let sent = source.await.expect("source");
    let processed = processor.await.expect("processor");
    let report = writer.join().expect("writer thread");
    let stored = count(&direct).await;
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT source_seq) FROM greek_snapshots")
            .fetch_one(&direct)
            .await
            .expect("distinct");
    json!({
        "rate": rate,
        "events_sent": sent.events_sent,
        "forwarded": processed.forwarded,
        "stored": stored,
        "lost": processed.forwarded as i64 - distinct,
        "duplicated": stored - distinct,
        "maintenance": {
            "window_s": maintenance_window.as_secs(),
            "failed_rounds_behind_reader": maintenance_failures,
            "created_after_reader_commits": created_after_reader,
            "longest_ingest_stall_ms": stall_under_maintenance.as_millis() as u64,
        },
        "blackhole": {
            "seconds": blackhole.as_secs_f64(),
            "rows_committed_during": frozen - frozen_at,
            "writer_cpu_s": (writer_cpu * 100.0).round() / 100.0,
            "writer_cpu_share_of_a_core": (writer_cpu / waited * 1000.0).round() / 1000.0,
            "rows_flowing_again_after_s": (recovery.as_secs_f64() * 100.0).round() / 100.0,
        },
        "writer": {
            "persisted": report.persisted,
            "retries": report.retries,
            "rejected": report.rejected,
            "abandoned": report.abandoned,
        },
    })
}
