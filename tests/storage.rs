//! Schema, partitions and the binary COPY encoding against a real PostgreSQL.

mod common;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use database::partitions::{ensure_month, ensure_partitions, maintain_once, PartitionConfig};
use database::testing::TestDb;
use database::{run_writer, WriterConfig};
use rust_decimal::Decimal;
use std::str::FromStr;
use tokio::sync::mpsc;

use common::{count, snapshots, wait_for_count};

const ROWS: &str = "SELECT count(*) FROM greek_snapshots";

#[tokio::test]
async fn migrations_build_the_schema_on_an_empty_database() {
    let db = TestDb::empty().await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        0
    );
    database::migrate(&db.pool).await.unwrap();
    // Running again is a no-op, as at every start-up.
    database::migrate(&db.pool).await.unwrap();
    let strategy: String = sqlx::query_scalar(
        "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'greek_snapshots'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(strategy, "r");
    let key: String = sqlx::query_scalar("SELECT pg_get_partkeydef('greek_snapshots'::regclass)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(key, "RANGE (event_time)");
    let index: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'greek_snapshots_key_idx'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        index.ends_with("(event_time, broker, account_id, contract_key)"),
        "{index}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                         WHERE i.inhparent = 'greek_snapshots'::regclass AND c.relname = 'greek_snapshots_default'").await,
        1
    );
    for col in [
        "received_at",
        "persisted_at",
        "delta",
        "vega",
        "position_theta",
    ] {
        let comment: Option<String> = sqlx::query_scalar(
            "SELECT col_description('greek_snapshots'::regclass, attnum) FROM pg_attribute
             WHERE attrelid = 'greek_snapshots'::regclass AND attname = $1",
        )
        .bind(col)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(
            comment.is_some_and(|c| !c.is_empty()),
            "{col} has a comment"
        );
    }
}

#[tokio::test]
async fn maintenance_creates_months_ahead_and_rows_route_to_them() {
    let db = TestDb::new().await;
    let cfg = PartitionConfig {
        months_back: 1,
        months_ahead: 3,
        ..PartitionConfig::default()
    };
    assert_eq!(ensure_partitions(&db.pool, &cfg).await.unwrap(), 5);
    assert_eq!(
        ensure_partitions(&db.pool, &cfg).await.unwrap(),
        0,
        "idempotent"
    );
    let now = Utc::now();
    let this_month = format!("greek_snapshots_{}_{:02}", now.year(), now.month());
    let far_past = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();

    let mut rows = snapshots(10, now);
    rows.extend(snapshots(3, far_past));
    let (tx, rx) = mpsc::channel(64);
    for r in rows {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    let report = run_writer(db.pool.clone(), WriterConfig::default(), rx).await;
    assert_eq!(report.persisted, 13);

    let placed = |part: String| {
        let pool = db.pool.clone();
        async move {
            count(
                &pool,
                &format!(
                    "SELECT count(*) FROM greek_snapshots WHERE tableoid = '{part}'::regclass"
                ),
            )
            .await
        }
    };
    assert_eq!(placed(this_month).await, 10);
    assert_eq!(placed("greek_snapshots_default".into()).await, 3);

    // Creating the 2001-02 partition later moves its rows out of the default one.
    assert!(
        ensure_month(&db.pool, NaiveDate::from_ymd_opt(2001, 2, 17).unwrap())
            .await
            .unwrap()
    );
    assert_eq!(placed("greek_snapshots_2001_02".into()).await, 3);
    assert_eq!(placed("greek_snapshots_default".into()).await, 0);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM greek_snapshots").await,
        13
    );
    // and new rows for that month go straight to it
    let (tx, rx) = mpsc::channel(8);
    tx.send(snapshots(1, far_past).remove(0)).await.unwrap();
    drop(tx);
    run_writer(db.pool.clone(), WriterConfig::default(), rx).await;
    assert_eq!(placed("greek_snapshots_2001_02".into()).await, 4);
}

#[tokio::test]
async fn partition_bounds_are_utc_whatever_the_session_time_zone() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET TimeZone = 'America/New_York'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let created: bool = sqlx::query_scalar("SELECT greekstream_ensure_partition('2030-05-01')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(created);
    drop(conn);
    let bound: String = sqlx::query_scalar(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'greek_snapshots_2030_05'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Rendered in the pool's session zone (UTC by default here); the instants must be UTC midnights.
    let lo: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT min(x) FROM (SELECT '2030-05-01 00:00:00+00'::timestamptz AS x) s",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(bound.contains("FROM ('"), "{bound}");
    let from: chrono::DateTime<Utc> = sqlx::query_scalar(&format!(
        "SELECT ({})::timestamptz",
        bound
            .split("FROM (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
    ))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(from, lo);
}

#[tokio::test]
async fn values_round_trip_exactly_through_binary_copy() {
    let db = TestDb::new().await;
    let mut rows = snapshots(3, Utc::now());
    rows[0].position.quantity = Decimal::from_str("-12345.678").unwrap();
    rows[1].position.quantity = Decimal::from_str("0.0001").unwrap();
    rows[1].unit.delta = None;
    rows[1].total.delta = None;
    rows[1].greeks_source = None;
    rows[2].position.quantity = Decimal::from_str("79228162514264337593543950335").unwrap();
    rows[2].mark_price = Some(1.0e-300);
    let expect = rows.clone();
    let (tx, rx) = mpsc::channel(8);
    for r in rows {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    run_writer(db.pool.clone(), WriterConfig::default(), rx).await;

    type Row = (
        chrono::DateTime<Utc>,
        chrono::DateTime<Utc>,
        String,
        String,
        String,
        String,
        Decimal,
        Decimal,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<String>,
        Option<i64>,
    );
    let got: Vec<Row> = sqlx::query_as(
        "SELECT event_time, received_at, broker, account_id, contract_key, underlying, quantity, multiplier,
                mark_price, delta, position_delta, greeks_source, source_seq
         FROM greek_snapshots ORDER BY source_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(got.len(), 3);
    for (g, e) in got.iter().zip(&expect) {
        assert_eq!(g.0.timestamp_micros(), e.event_time.timestamp_micros());
        assert_eq!(g.1.timestamp_micros(), e.received_at.timestamp_micros());
        assert_eq!(g.2, "synthetic");
        assert_eq!(g.3, &*e.position.account_id);
        assert_eq!(g.4, e.contract().key().as_str());
        assert_eq!(g.5, e.contract().underlying());
        assert_eq!(g.6, e.position.quantity);
        assert_eq!(g.7, e.contract().multiplier());
        assert_eq!(g.8, e.mark_price);
        assert_eq!(g.9, e.unit.delta);
        assert_eq!(g.10, e.total.delta);
        assert_eq!(g.11.as_deref(), e.greeks_source.map(|s| s.as_str()));
        assert_eq!(g.12, e.source_seq);
    }
    // numerics compare as text too (scale preserved)
    let q: String = sqlx::query_scalar(
        "SELECT quantity::text FROM greek_snapshots ORDER BY source_seq LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(q, "-12345.678");
    // the contract dimension holds each contract once
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM contracts").await,
        count(
            &db.pool,
            "SELECT count(DISTINCT contract_key) FROM greek_snapshots"
        )
        .await
    );
}

#[tokio::test]
async fn partition_maintenance_under_an_open_reader_never_stalls_ingest() {
    use sqlx::{ConnectOptions, Connection};
    let db = TestDb::new().await;
    let now_only = PartitionConfig {
        months_back: 0,
        months_ahead: 0,
        lock_timeout: std::time::Duration::from_millis(300),
        ..PartitionConfig::default()
    };
    ensure_partitions(&db.pool, &now_only).await.unwrap();
    let (tx, rx) = mpsc::channel(64);
    let writer = tokio::spawn(run_writer(db.pool.clone(), WriterConfig::default(), rx));
    let mut rows = snapshots(40, Utc::now()).into_iter();
    for r in rows.by_ref().take(20) {
        tx.send(r).await.unwrap();
    }
    let wait = std::time::Duration::from_secs(10);
    assert_eq!(wait_for_count(&db.pool, ROWS, 20, wait).await, 20);

    // An analyst's transaction has read the table and stays open.
    let mut analyst = db.options.connect().await.unwrap();
    let mut reading = analyst.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM greek_snapshots")
        .execute(&mut *reading)
        .await
        .unwrap();
    // Maintenance now wants the next months, which needs locks the reader blocks.
    let ahead = PartitionConfig {
        months_ahead: 2,
        ..now_only
    };
    let pool = db.pool.clone();
    let maintenance = tokio::spawn(async move { maintain_once(&pool, &ahead).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for r in rows {
        tx.send(r).await.unwrap();
    }
    assert_eq!(
        wait_for_count(&db.pool, ROWS, 40, wait).await,
        40,
        "rows keep landing while maintenance waits behind the reader"
    );
    assert!(
        !maintenance.await.unwrap(),
        "maintenance gave up on its locks, to retry later"
    );
    let next_month = "SELECT count(*) FROM pg_class WHERE relname = to_char(now() AT TIME ZONE 'UTC' + interval '1 month', '\"greek_snapshots_\"YYYY_MM')";
    assert_eq!(count(&db.pool, next_month).await, 0);

    reading.commit().await.unwrap();
    assert!(maintain_once(&db.pool, &ahead).await, "the retry succeeds");
    assert_eq!(count(&db.pool, next_month).await, 1);
    drop(tx);
    assert_eq!(writer.await.unwrap().persisted, 40);
}
