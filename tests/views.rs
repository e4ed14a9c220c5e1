//! The analysts' views and retention against a real PostgreSQL: expected numbers
//! on a seeded dataset, partition pruning in the history function's plan, and
//! retention dropping only the old months.

mod common;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use database::partitions::{drop_old_partitions, ensure_month, PartitionConfig};
use database::testing::TestDb;
use sqlx::PgPool;

use common::count;

#[allow(clippy::too_many_arguments)]
async fn position(
    pool: &PgPool,
    broker: &str,
    account: &str,
    key: &str,
    underlying: &str,
    qty: i64,
    delta: Option<f64>,
    rho: Option<f64>,
    und_price: Option<f64>,
    minutes_ago: i64,
) {
    let pd = delta.map(|d| d * qty as f64);
    sqlx::query(
        "INSERT INTO positions_current (broker, account_id, contract_key, underlying, quantity, multiplier,
            underlying_price, delta, gamma, rho, position_delta, position_gamma, position_theta, position_vega,
            position_rho, greeks_source, event_time)
         VALUES ($1, $2, $3, $4, $5, 1, $6, $7, 0.01, $8, $9, $10, $11, $12, $13, $14, now() - make_interval(mins => $15))",
    )
    .bind(broker)
    .bind(account)
    .bind(key)
    .bind(underlying)
    .bind(rust_decimal::Decimal::from(qty))
    .bind(und_price)
    .bind(delta)
    .bind(rho)
    .bind(pd)
    .bind(delta.map(|_| 0.01 * qty as f64))
    .bind(delta.map(|_| -(qty as f64)))
    .bind(delta.map(|_| 2.0 * qty as f64))
    .bind(rho.map(|r| r * qty as f64))
    .bind(delta.map(|_| "venue"))
    .bind(minutes_ago as i32)
    .execute(pool)
    .await
    .unwrap();
}

async fn portfolio(pool: &PgPool, kind: &str, filter: &str) -> (i64, f64, i64, i64, Option<f64>) {
    sqlx::query_as(&format!(
        "SELECT positions, delta, missing_rho, without_greeks, dollar_delta FROM portfolio_greeks
         WHERE group_kind = '{kind}' {filter}"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn portfolio_and_latest_greeks_views_on_a_seeded_book() {
    let db = TestDb::new().await;
    let p = &db.pool;
    position(
        p,
        "ibkr",
        "U1",
        "SPY 20261218 C 600",
        "SPY",
        2,
        Some(50.0),
        Some(0.1),
        Some(600.0),
        5,
    )
    .await;
    position(
        p,
        "tastytrade",
        "5WT1",
        "SPY 20261218 C 600",
        "SPY",
        -3,
        Some(48.0),
        Some(0.1),
        Some(601.0),
        1,
    )
    .await;
    position(
        p,
        "binance",
        "bn",
        "ETHUSDT PERP",
        "ETHUSDT",
        -4,
        Some(1.0),
        Some(0.0),
        Some(3000.0),
        2,
    )
    .await;
    position(
        p,
        "binance",
        "bn",
        "ETHUSDT 20261225 C 3000",
        "ETHUSDT",
        10,
        Some(0.3),
        None,
        None,
        2,
    )
    .await;
    position(
        p,
        "binance",
        "bn",
        "ETHUSDT 20261225 P 3000",
        "ETHUSDT",
        1,
        None,
        None,
        Some(3000.0),
        2,
    )
    .await;
    // Closed: not in any sum.
    position(
        p,
        "ibkr",
        "U1",
        "QQQ 20261218 C 500",
        "QQQ",
        0,
        Some(0.5),
        Some(0.1),
        Some(500.0),
        2,
    )
    .await;

    // Total delta: 100 − 144 − 4 + 3 = −45; rho unknown for two positions.
    let (n, delta, missing_rho, without, _) = portfolio(p, "total", "").await;
    assert_eq!((n, missing_rho, without), (5, 2, 1));
    assert!((delta - -45.0).abs() < 1e-9, "{delta}");
    let (n, delta, _, _, dollar) = portfolio(p, "underlying", "AND underlying = 'SPY'").await;
    assert_eq!(n, 2);
    assert!((delta - -44.0).abs() < 1e-9);
    assert!((dollar.unwrap() - (100.0 * 600.0 - 144.0 * 601.0)).abs() < 1e-6);
    let (n, delta, ..) =
        portfolio(p, "account", "AND broker = 'binance' AND account_id = 'bn'").await;
    assert_eq!(n, 3);
    assert!((delta - -1.0).abs() < 1e-9);
    let (n, ..) = portfolio(p, "broker", "AND broker = 'tastytrade'").await;
    assert_eq!(n, 1);

    // The SPY call held at two brokers: the more recent one's Greeks win.
    let (broker, delta): (String, f64) = sqlx::query_as(
        "SELECT broker, delta FROM latest_greeks WHERE contract_key = 'SPY 20261218 C 600'",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((broker.as_str(), delta), ("tastytrade", 48.0));
    // The put without Greeks has no latest Greeks to show.
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM latest_greeks WHERE contract_key LIKE '%P 3000'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn history_buckets_one_account_and_prunes_to_one_partition() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let day = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    for m in [day, NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()] {
        ensure_month(p, m).await.unwrap();
    }
    let t0 = Utc.from_utc_datetime(&day.and_hms_opt(14, 0, 10).unwrap());
    // Account A: 3 rows in minute 0, 2 in minute 1; account B: noise in the same minutes.
    for (acct, secs, qty) in [
        ("A", 0, 1),
        ("A", 20, 2),
        ("A", 40, 3),
        ("A", 60, 4),
        ("A", 90, 5),
        ("B", 5, 9),
        ("B", 65, 9),
    ] {
        sqlx::query(
            "INSERT INTO greek_snapshots (event_time, received_at, broker, account_id, contract_key, underlying,
                quantity, multiplier, implied_vol, position_delta)
             VALUES ($1, $1, 'ibkr', $2, 'SPY 20261218 C 600', 'SPY', $3, 100, 0.2, $4)",
        )
        .bind(t0 + Duration::seconds(secs))
        .bind(acct)
        .bind(rust_decimal::Decimal::from(qty))
        .bind(qty as f64 * 50.0)
        .execute(p)
        .await
        .unwrap();
    }
    let rows: Vec<(chrono::DateTime<Utc>, i64, rust_decimal::Decimal, f64)> = sqlx::query_as(
        "SELECT bucket, samples, quantity, position_delta FROM greeks_history('A', $1, $2) ORDER BY bucket",
    )
    .bind(t0 - Duration::hours(1))
    .bind(t0 + Duration::hours(1))
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].1, rows[0].2, rows[0].3), (3, 3.into(), 150.0));
    assert_eq!((rows[1].1, rows[1].2, rows[1].3), (2, 5.into(), 250.0));
    assert_eq!(
        rows[0].0,
        Utc.from_utc_datetime(&day.and_hms_opt(14, 0, 0).unwrap())
    );
    // The plan touches the March partition only.
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT * FROM greeks_history('A', '2026-03-10 00:00+00', '2026-03-11 00:00+00')",
    )
    .fetch_all(p)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("greek_snapshots_2026_03"), "{plan}");
    assert!(
        !plan.contains("greek_snapshots_2026_04") && !plan.contains("greek_snapshots_default"),
        "{plan}"
    );
}

#[tokio::test]
async fn retention_drops_only_the_old_months() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let now = Utc::now().date_naive();
    let month = |back: i32| {
        let m0 = now.year() * 12 + now.month0() as i32 - back;
        NaiveDate::from_ymd_opt(m0.div_euclid(12), m0.rem_euclid(12) as u32 + 1, 15).unwrap()
    };
    let name = |d: NaiveDate| format!("greek_snapshots_{}", d.format("%Y_%m"));
    for back in [6, 3, 2, 0] {
        ensure_month(p, month(back)).await.unwrap();
        sqlx::query(
            "INSERT INTO greek_snapshots (event_time, received_at, broker, account_id, contract_key, underlying, quantity, multiplier)
             VALUES ($1, $1, 'ibkr', 'A', 'SPY', 'SPY', 1, 1)",
        )
        .bind(Utc.from_utc_datetime(&month(back).and_hms_opt(12, 0, 0).unwrap()))
        .execute(p)
        .await
        .unwrap();
    }
    // A stray old row in the default partition (its month has no partition).
    sqlx::query(
        "INSERT INTO greek_snapshots (event_time, received_at, broker, account_id, contract_key, underlying, quantity, multiplier)
         VALUES ('2001-01-01 00:00+00', now(), 'ibkr', 'A', 'SPY', 'SPY', 1, 1)",
    )
    .execute(p)
    .await
    .unwrap();
    assert!(
        drop_old_partitions(p, &PartitionConfig::default(), 0)
            .await
            .is_err(),
        "0 months would drop everything"
    );
    // Keep 3 months back: the month 6 back goes, 3 back stays (it ends after the cutoff
    // only if it is within the kept range).
    let dropped = drop_old_partitions(p, &PartitionConfig::default(), 3)
        .await
        .unwrap();
    assert_eq!(dropped, vec![name(month(6))]);
    for back in [3, 2, 0] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name(month(back)))
            .fetch_one(p)
            .await
            .unwrap();
        assert!(exists, "{}", name(month(back)));
    }
    assert_eq!(count(p, "SELECT count(*) FROM greek_snapshots").await, 3);
    assert!(drop_old_partitions(p, &PartitionConfig::default(), 3)
        .await
        .unwrap()
        .is_empty());
}
