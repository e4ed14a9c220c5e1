//! The trading tables' constraints against real PostgreSQL: the bad states the JS
//! schema allowed are refused by the database itself.

use database::ledger;
use database::testing::TestDb;
use sqlx::PgPool;

async fn sqlstate(pool: &PgPool, sql: &str) -> Option<String> {
    sqlx::raw_sql(sql).execute(pool).await.err().and_then(|e| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    })
}

const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn account(pool: &PgPool, balance: &str) -> String {
    sqlx::query_scalar::<_, String>(&format!(
        "INSERT INTO sub_accounts (name, type, initial_balance, current_balance)
         VALUES ('a', 'USER', {balance}, {balance}) RETURNING id::text"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_trading_tables_refuse_bad_states() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = account(p, "100").await;
    // Balance never below zero.
    assert_eq!(
        sqlstate(
            p,
            &format!("UPDATE sub_accounts SET current_balance = -1 WHERE id = '{a}'")
        )
        .await
        .as_deref(),
        Some("23514")
    );
    // One open position per account and symbol; a closed one does not count.
    let pos = |status: &str, closed: &str| {
        format!(
            "INSERT INTO virtual_positions (sub_account_id, symbol, side, entry_price, quantity, notional, leverage, margin, status, closed_at)
             VALUES ('{a}', 'BTCUSDT', 'LONG', 100, 1, 100, 10, 10, '{status}', {closed})"
        )
    };
    assert_eq!(sqlstate(p, &pos("OPEN", "NULL")).await, None);
    assert_eq!(sqlstate(p, &pos("CLOSED", "now()")).await, None);
    assert_eq!(
        sqlstate(p, &pos("OPEN", "NULL")).await.as_deref(),
        Some("23505")
    );
    assert_eq!(
        sqlstate(p, &pos("OPEN", "now()")).await.as_deref(),
        Some("23514"),
        "open but closed"
    );
    // A venue fill is booked once per position.
    let position: String =
        sqlx::query_scalar("SELECT id::text FROM virtual_positions WHERE status = 'OPEN'")
            .fetch_one(p)
            .await
            .unwrap();
    let fill = |position: &str| {
        format!(
            "INSERT INTO trade_executions (sub_account_id, position_id, exchange_trade_id, symbol, side, type, price, quantity, notional, action, signature)
             VALUES ('{a}', {position}, '777', 'BTCUSDT', 'BUY', 'MARKET', 100, 1, 100, 'OPEN', '{SIG}')"
        )
    };
    let here = format!("'{position}'");
    assert_eq!(sqlstate(p, &fill(&here)).await, None);
    assert_eq!(sqlstate(p, &fill(&here)).await.as_deref(), Some("23505"));
    assert_eq!(
        sqlstate(p, &fill("NULL")).await,
        None,
        "the flip's other leg"
    );
    assert_eq!(sqlstate(p, &fill("NULL")).await.as_deref(), Some("23505"));
    // A signature must be a SHA-256 in hex.
    assert_eq!(
        sqlstate(
            p,
            &fill(&here)
                .replace(SIG, "not-a-hash")
                .replace("'777'", "'778'")
        )
        .await
        .as_deref(),
        Some("23514")
    );
    // A balance log row must add up; a floor that absorbed part of a loss does.
    let log = |before: &str, after: &str, change: &str, absorbed: &str| {
        format!(
            "INSERT INTO balance_logs (sub_account_id, balance_before, balance_after, change_amount, absorbed, reason)
             VALUES ('{a}', {before}, {after}, {change}, {absorbed}, 'TRADE_PNL')"
        )
    };
    assert_eq!(sqlstate(p, &log("100", "0", "-130", "30")).await, None);
    assert_eq!(
        sqlstate(p, &log("100", "0", "-130", "0")).await.as_deref(),
        Some("23514")
    );
    // The identity operators can run: initial + Σ change + Σ absorbed = current.
    sqlx::raw_sql(&format!(
        "UPDATE sub_accounts SET current_balance = 0 WHERE id = '{a}'"
    ))
    .execute(p)
    .await
    .unwrap();
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sub_accounts s
          WHERE s.initial_balance + coalesce((SELECT sum(change_amount + absorbed) FROM balance_logs l
                                               WHERE l.sub_account_id = s.id), 0) <> s.current_balance",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(broken, 0);
    // Rules: one global row at most; an account row is not global.
    assert_eq!(
        sqlstate(p, "INSERT INTO risk_rules (is_global) VALUES (true)").await,
        None
    );
    assert_eq!(
        sqlstate(p, "INSERT INTO risk_rules (is_global) VALUES (true)")
            .await
            .as_deref(),
        Some("23505")
    );
    assert_eq!(
        sqlstate(
            p,
            &format!("INSERT INTO risk_rules (sub_account_id, is_global) VALUES ('{a}', true)")
        )
        .await
        .as_deref(),
        Some("23514")
    );
}

/// What the daily-loss check reads: the trading reasons of the account's balance
/// rows of the current UTC day, whoever wrote them; yesterday's, deposits and other
/// accounts' do not count.
#[tokio::test]
async fn realized_today_sums_the_days_trading_rows_only() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = account(p, "1000").await;
    let b = account(p, "1000").await;
    let log = |who: &str, change: &str, reason: &str, at: &str| {
        format!(
            "INSERT INTO balance_logs (sub_account_id, balance_before, balance_after, change_amount, reason, timestamp)
             VALUES ('{who}', 1000, 1000 + {change}, {change}, '{reason}', {at})"
        )
    };
    for sql in [
        log(&a, "-40", "TRADE_PNL", "now()"),
        log(&a, "-1.5", "FEE", "now()"),
        log(&a, "10", "DESYNC_CLOSE", "now()"),
        log(&a, "500", "DEPOSIT", "now()"),
        log(&a, "-300", "TRADE_PNL", "now() - interval '1 day'"),
        log(&b, "-7", "TRADE_PNL", "now()"),
    ] {
        sqlx::raw_sql(&sql).execute(p).await.unwrap();
    }
    let w = ledger::watched_with_rules(p, &a, None, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.realized_today, "-31.5".parse().unwrap());
    let w = ledger::watched_with_rules(p, &b, None, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.realized_today, "-7".parse().unwrap());
}
