//! The batch writer against a real PostgreSQL: both flush triggers, and no loss and
//! no duplicates through killed connections, an unreachable server, a half-open
//! connection and an ambiguous COMMIT; refused rows kept without taking other keys'
//! refreshes with them.

mod common;

use std::time::Duration;

use chrono::Utc;
use database::testing::{TcpProxy, TestDb};
use database::{lazy_pool, run_writer, FlushPolicy, SessionLimits, WriterConfig};
use model::AccountId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use common::{count, snapshots, wait_for_count};

const ROWS: &str = "SELECT count(*) FROM greek_snapshots";
const DISTINCT: &str = "SELECT count(DISTINCT source_seq) FROM greek_snapshots";

fn quick_retries(policy: FlushPolicy) -> WriterConfig {
    WriterConfig {
        policy,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..WriterConfig::default()
    }
}

#[tokio::test]
async fn fifty_buffered_records_make_a_batch() {
    let db = TestDb::new().await;
    // Only the size trigger can fire: no eager flush, and a timer far away.
    let policy = FlushPolicy {
        eager: false,
        max_wait: Duration::from_secs(3600),
        ..FlushPolicy::default()
    };
    let (tx, rx) = mpsc::channel(1000);
    let writer = tokio::spawn(run_writer(db.pool.clone(), quick_retries(policy), rx));
    let mut rows = snapshots(100, Utc::now()).into_iter();
    for r in rows.by_ref().take(49) {
        tx.send(r).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&db.pool, ROWS).await,
        0,
        "49 records do not make a batch"
    );
    tx.send(rows.next().unwrap()).await.unwrap();
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 50, Duration::from_secs(10)).await,
        50
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM ingest_batches WHERE row_count = 50"
        )
        .await,
        1
    );
    drop(tx);
    writer.await.unwrap();
}

#[tokio::test]
async fn the_oldest_record_waits_at_most_one_second() {
    let db = TestDb::new().await;
    let policy = FlushPolicy {
        eager: false,
        ..FlushPolicy::default()
    };
    let (tx, rx) = mpsc::channel(1000);
    let writer = tokio::spawn(run_writer(db.pool.clone(), quick_retries(policy), rx));
    let sent = Instant::now();
    for r in snapshots(3, Utc::now()) {
        tx.send(r).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&db.pool, ROWS).await,
        0,
        "3 records wait for the timer"
    );
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 3, Duration::from_secs(10)).await,
        3
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "not before the second is up"
    );
    // ... and not much after it: each row's wait, as the database recorded it, is
    // the timer's second plus one flush (the bound leaves room for a loaded machine;
    // the policy's exact bound is tested with paused time in policy.rs).
    let waited: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(persisted_at - received_at))::float8 FROM greek_snapshots",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        (1.0..2.0).contains(&waited),
        "the oldest row waited {waited:.3} s"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM ingest_batches WHERE row_count = 3"
        )
        .await,
        1
    );
    drop(tx);
    writer.await.unwrap();
}

#[tokio::test]
async fn eager_policy_writes_a_lone_record_without_waiting_for_the_timer() {
    let db = TestDb::new().await;
    // The size and age triggers are out of reach, so only the eager trigger can write it.
    let policy = FlushPolicy {
        max_wait: Duration::from_secs(3600),
        ..FlushPolicy::default()
    };
    let (tx, rx) = mpsc::channel(10);
    let writer = tokio::spawn(run_writer(db.pool.clone(), quick_retries(policy), rx));
    tx.send(snapshots(1, Utc::now()).remove(0)).await.unwrap();
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 1, Duration::from_secs(10)).await,
        1
    );
    drop(tx);
    writer.await.unwrap();
}

#[tokio::test]
async fn killed_connections_lose_and_duplicate_nothing() {
    let db = TestDb::new().await;
    let app = format!("gs-writer-kill-{}", db.name);
    let pool = lazy_pool(db.options.clone().application_name(&app), 4);
    let (tx, rx) = mpsc::channel(256);
    let writer = tokio::spawn(run_writer(pool, quick_retries(FlushPolicy::default()), rx));
    let total = 20_000;
    let feeder = tokio::spawn(async move {
        for (i, r) in snapshots(total, Utc::now()).into_iter().enumerate() {
            tx.send(r).await.unwrap();
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut kills = 0;
    while !feeder.is_finished() {
        kills += count(
            &db.pool,
            &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    feeder.await.unwrap();
    let report = writer.await.unwrap();
    // (A connection killed while idle is replaced by the pool without a retry, so the
    // retry count is not asserted; what matters is that nothing is lost or doubled.)
    assert!(kills > 0, "the test killed at least one writer connection");
    assert_eq!(report.persisted, total as u64);
    assert_eq!(count(&db.pool, ROWS).await, total as i64);
    assert_eq!(
        count(&db.pool, DISTINCT).await,
        total as i64,
        "no duplicates"
    );
}

#[tokio::test]
async fn an_unreachable_server_pushes_back_and_everything_lands_later() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let pool = lazy_pool(db.options_via(proxy.addr), 2);
    let policy = FlushPolicy {
        max_batch_rows: 100,
        ..FlushPolicy::default()
    };
    let cfg = WriterConfig {
        max_buffer: 500,
        ..quick_retries(policy)
    };
    let channel_cap = 50;
    let (tx, rx) = mpsc::channel(channel_cap);
    let writer = tokio::spawn(run_writer(pool, cfg, rx));
    let mut rows = snapshots(3000, Utc::now()).into_iter();
    for r in rows.by_ref().take(200) {
        tx.send(r).await.unwrap();
    }
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 200, Duration::from_secs(10)).await,
        200
    );

    proxy.cut();
    // Feed until the writer stops taking records: memory stays bounded.
    let mut accepted = 0;
    for r in rows.by_ref() {
        match tokio::time::timeout(Duration::from_secs(2), tx.send(r)).await {
            Ok(res) => {
                res.unwrap();
                accepted += 1;
            }
            Err(_) => break,
        }
    }
    let bound = 500 + 2 * 100 + channel_cap + 1;
    assert!(
        accepted >= 500 && accepted <= bound,
        "accepted {accepted} while down (bound {bound})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    for r in rows {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    let report = writer.await.unwrap();
    // The one record whose send timed out above was never handed over.
    let expected = 3000 - 1;
    assert!(report.retries > 0);
    assert_eq!(report.persisted, expected);
    assert_eq!(count(&db.pool, ROWS).await, expected as i64);
    assert_eq!(count(&db.pool, DISTINCT).await, expected as i64);
}

#[tokio::test]
async fn a_retry_after_an_ambiguous_commit_writes_nothing_twice() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let pool = lazy_pool(db.options_via(proxy.addr), 1);
    let (tx, rx) = mpsc::channel(100);
    let writer = tokio::spawn(run_writer(pool, quick_retries(FlushPolicy::default()), rx));
    proxy.make_next_commit_ambiguous();
    for r in snapshots(40, Utc::now()) {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    let report = writer.await.unwrap();
    assert!(
        !proxy.commit_ambiguity_pending(),
        "a COMMIT went through the trap"
    );
    assert!(
        report.retries >= 1,
        "the lost COMMIT reply was retried: {report:?}"
    );
    assert_eq!(report.persisted, 40);
    assert_eq!(count(&db.pool, ROWS).await, 40);
    assert_eq!(count(&db.pool, DISTINCT).await, 40);
}

#[tokio::test]
async fn positions_current_holds_the_latest_row_per_position() {
    let db = TestDb::new().await;
    let (tx, rx) = mpsc::channel(100);
    let writer = tokio::spawn(run_writer(db.pool.clone(), WriterConfig::default(), rx));
    let mut rows = snapshots(5000, Utc::now());
    // Distinct event times so "latest" is well defined.
    for (i, r) in rows.iter_mut().enumerate() {
        r.event_time += chrono::Duration::milliseconds(i as i64);
    }
    for r in rows {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    writer.await.unwrap();
    let distinct = count(&db.pool, "SELECT count(*) FROM (SELECT DISTINCT broker, account_id, contract_key FROM greek_snapshots) s").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM positions_current").await,
        distinct
    );
    let mismatched = count(
        &db.pool,
        "SELECT count(*) FROM positions_current p JOIN (
            SELECT DISTINCT ON (broker, account_id, contract_key) *
            FROM greek_snapshots ORDER BY broker, account_id, contract_key, event_time DESC) l
          USING (broker, account_id, contract_key)
         WHERE p.quantity <> l.quantity OR p.event_time <> l.event_time
            OR p.position_delta IS DISTINCT FROM l.position_delta",
    )
    .await;
    assert_eq!(mismatched, 0);
}

#[tokio::test]
async fn positions_are_refreshed_when_the_stream_goes_quiet() {
    let db = TestDb::new().await;
    let (tx, rx) = mpsc::channel(100);
    let cfg = WriterConfig {
        positions_interval: Duration::from_millis(200),
        ..WriterConfig::default()
    };
    let writer = tokio::spawn(run_writer(db.pool.clone(), cfg, rx));
    for r in snapshots(30, Utc::now()) {
        tx.send(r).await.unwrap();
    }
    // No more rows arrive, and the input stays open: the timer alone must refresh them.
    let distinct = "SELECT count(*) FROM (SELECT DISTINCT broker, account_id, contract_key FROM greek_snapshots) s";
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 30, Duration::from_secs(10)).await,
        30
    );
    let want = count(&db.pool, distinct).await;
    assert_eq!(
        wait_for_count(
            &db.pool,
            "SELECT count(*) FROM positions_current",
            want,
            Duration::from_secs(10)
        )
        .await,
        want
    );
    drop(tx);
    writer.await.unwrap();
}

#[tokio::test]
async fn a_refused_row_is_kept_and_takes_no_other_keys_refresh_with_it() {
    let db = TestDb::new().await;
    // The model refuses what PostgreSQL would (a NUL in an id never gets this far), so
    // the refusal is raised by the database itself: this row, and its position's
    // refresh, fail with SQLSTATE 22021 (bad data). Everything else must be written.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.account_id = 'REFUSED' THEN
                 RAISE EXCEPTION 'invalid byte sequence' USING ERRCODE = '22021';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON greek_snapshots
             FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON positions_current
             FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut rows = snapshots(100, Utc::now());
    rows[37].position.account_id = AccountId::new("REFUSED").unwrap();
    let (tx, rx) = mpsc::channel(200);
    for r in rows {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    // One batch carrying every row, every new contract and every position refresh.
    let policy = FlushPolicy {
        eager: false,
        batch_size: 100,
        ..FlushPolicy::default()
    };
    let cfg = WriterConfig {
        positions_interval: Duration::ZERO,
        ..quick_retries(policy)
    };
    let report = run_writer(db.pool.clone(), cfg, rx).await;
    assert_eq!((report.persisted, report.rejected), (99, 1));
    let good_positions = count(
        &db.pool,
        "SELECT count(*) FROM (SELECT DISTINCT broker, account_id, contract_key FROM greek_snapshots) s",
    )
    .await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM positions_current").await,
        good_positions,
        "every good key's position is refreshed"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM (SELECT DISTINCT contract_key FROM greek_snapshots) s
              WHERE contract_key NOT IN (SELECT contract_key FROM contracts)"
        )
        .await,
        0,
        "every contract is in contracts"
    );
    type Letter = (String, Option<String>, Option<String>, String, String);
    let letters: Vec<Letter> = sqlx::query_as(
        "SELECT kind, broker, sqlstate, row_json->>'account_id', coalesce(row_json->>'source_seq', '')
           FROM rejected_snapshots ORDER BY kind DESC",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        letters,
        vec![
            (
                "snapshot".to_owned(),
                Some("synthetic".to_owned()),
                Some("22021".to_owned()),
                "REFUSED".to_owned(),
                "37".to_owned()
            ),
            (
                "position".to_owned(),
                Some("synthetic".to_owned()),
                Some("22021".to_owned()),
                "REFUSED".to_owned(),
                "37".to_owned()
            ),
        ]
    );
}

/// user + system CPU seconds this process has used (Linux).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the comm.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_abandoned_and_nothing_is_lost_or_doubled() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.server_addr()).await;
    let limits = SessionLimits {
        statement: Duration::from_secs(2),
        lock: Duration::from_secs(1),
        idle_in_transaction: Duration::from_secs(2),
        ..SessionLimits::default()
    };
    let pool = lazy_pool(limits.apply(db.options_via(proxy.addr)), 2);
    let cfg = WriterConfig {
        flush_timeout: Duration::from_secs(1),
        // Positions fall due while every connection hangs: the writer must wait
        // for a connection, not spin on the timer.
        positions_interval: Duration::from_millis(50),
        ..quick_retries(FlushPolicy::default())
    };
    let (tx, rx) = mpsc::channel(1000);
    let writer = tokio::spawn(run_writer(pool, cfg, rx));
    let mut rows = snapshots(600, Utc::now()).into_iter();
    for r in rows.by_ref().take(100) {
        tx.send(r).await.unwrap();
    }
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 100, Duration::from_secs(10)).await,
        100
    );

    // The network fails in the middle of a batch's transaction: its COPY never
    // arrives and no answer ever comes back.
    proxy.blackhole_when_client_sends(b"COPY ");
    for r in rows.by_ref().take(300) {
        tx.send(r).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        !proxy.blackhole_trigger_pending(),
        "a COPY met the blackhole"
    );
    let cpu_before = process_cpu_seconds();
    let waited = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = process_cpu_seconds() - cpu_before;
    let wall = waited.elapsed().as_secs_f64();
    assert!(
        cpu < 0.3 * wall,
        "the writer idles while the database is unreachable: {cpu:.2} s CPU in {wall:.2} s"
    );
    assert!(
        count(&db.pool, ROWS).await < 400,
        "the blackhole held rows back"
    );

    proxy.restore();
    for r in rows {
        tx.send(r).await.unwrap();
    }
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 600, Duration::from_secs(60)).await,
        600,
        "everything lands once the network is back"
    );
    drop(tx);
    let report = writer.await.unwrap();
    assert!(report.retries > 0, "{report:?}");
    assert_eq!(report.persisted, 600);
    assert_eq!(count(&db.pool, DISTINCT).await, 600, "no duplicates");
}

#[tokio::test]
async fn a_row_that_keeps_failing_for_another_reason_is_isolated_after_bounded_attempts() {
    let db = TestDb::new().await;
    // A server-side error outside the "bad data" classes (P0001, raised by a
    // trigger) for one row: retrying can never help, so it must not block the rest.
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.account_id = 'POISON' THEN RAISE EXCEPTION 'poisoned row'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER poison BEFORE INSERT ON greek_snapshots
             FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut rows = snapshots(60, Utc::now());
    rows[12].position.account_id = AccountId::new("POISON").unwrap();
    let (tx, rx) = mpsc::channel(100);
    for r in rows {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    let policy = FlushPolicy {
        eager: false,
        batch_size: 60,
        ..FlushPolicy::default()
    };
    let cfg = WriterConfig {
        max_attempts: 3,
        ..quick_retries(policy)
    };
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run_writer(db.pool.clone(), cfg, rx),
    )
    .await
    .expect("the writer finishes: the poisoned row does not block it");
    assert_eq!((report.persisted, report.rejected), (59, 1), "{report:?}");
    assert_eq!(count(&db.pool, DISTINCT).await, 59);
    let kept: (String, String, String) = sqlx::query_as(
        "SELECT sqlstate, message, row_json->>'account_id' FROM rejected_snapshots WHERE kind = 'snapshot'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        ("P0001".into(), "poisoned row".into(), "POISON".into())
    );
}
