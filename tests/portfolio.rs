//! The hourly portfolio snapshots against a real database: an hour written live and
//! again changes nothing; hours missed are rebuilt from the ledger exactly (balance,
//! realized, positions replayed from their bookings); the running task back-fills a
//! three-hour gap and then writes the hour on the hour; `pnl_history` reads them back
//! with the drawdown.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use database::ledger::{self, AccountKind, FillBooking, NewAccount};
use database::portfolio;
use database::testing::TestDb;
use engine::portfolio::{run_hourly, write_backfill, write_live};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use trading::evaluate::LiquidationMode;
use trading::position::{Fill, OrderSide};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn account(pool: &PgPool, balance: &str) -> String {
    ledger::create_account(
        pool,
        &NewAccount {
            name: "p".into(),
            kind: AccountKind::User,
            user_id: None,
            initial_balance: d(balance),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: d("0.005"),
        },
    )
    .await
    .unwrap()
    .id
}

async fn fill(pool: &PgPool, account: &str, side: OrderSide, q: &str, px: &str, trade: &str) {
    ledger::book_fill(
        pool,
        &FillBooking {
            sub_account_id: account.into(),
            symbol: "BTCUSDT".into(),
            fill: Fill {
                side,
                quantity: d(q),
                price: d(px),
                leverage: d("10"),
            },
            fee: d("0.5"),
            exchange_order_id: Some("1".into()),
            client_order_id: None,
            exchange_trade_id: Some(trade.into()),
            order_type: "MARKET".into(),
            origin: "MANUAL".into(),
            close_action: "CLOSE".into(),
            babysitter_excluded: false,
            closes: None,
            reduce_only: false,
        },
    )
    .await
    .unwrap();
}

fn hour_now() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap()
}

/// A long 0.2 BTC at 50 000, 0.1 of it sold at 51 000 (+100, fees 1): the account
/// holds 0.1 at 50 000 with a balance of 1 099.
async fn traded(pool: &PgPool) -> String {
    let a = account(pool, "1000").await;
    fill(pool, &a, OrderSide::Buy, "0.2", "50000", "t1").await;
    fill(pool, &a, OrderSide::Sell, "0.1", "51000", "t2").await;
    a
}

#[tokio::test]
async fn a_past_hour_rebuilt_from_the_ledger_equals_the_book_and_is_written_once() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = traded(p).await;
    let idle = account(p, "250").await;
    // The hours after the trades, rebuilt: what the ledger says the accounts were.
    let next = hour_now() + TimeDelta::hours(1);
    assert_eq!(write_backfill(p, next).await.unwrap(), 2);
    assert_eq!(
        write_backfill(p, next).await.unwrap(),
        0,
        "once per (account, hour)"
    );
    let (balance, realized, today, exposure, marks, positions): (
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        String,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT balance, realized_pnl, realized_today, exposure, marks, positions
           FROM portfolio_snapshots WHERE sub_account_id = $1::uuid AND hour = $2",
    )
    .bind(&a)
    .bind(next)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(balance, d("1099"));
    assert_eq!(realized, d("99"), "+100 realized, −1 fees");
    // Since 00:00 UTC of the hour's day: the trades' day, unless the next hour is the
    // next day's first.
    let same_day = next.date_naive() == Utc::now().date_naive();
    assert_eq!(today, if same_day { d("99") } else { d("0") });
    assert_eq!(exposure, d("5000"), "0.1 at 50 000");
    assert_eq!(marks, "LAST_FILL");
    assert_eq!(positions[0]["quantity"], 0.1, "{positions}");
    // Valued at the last fill (51 000): +100 unrealized.
    assert_eq!(positions[0]["unrealizedPnl"], 100.0, "{positions}");
    let (idle_balance,): (Decimal,) = sqlx::query_as(
        "SELECT balance FROM portfolio_snapshots WHERE sub_account_id = $1::uuid AND hour = $2",
    )
    .bind(&idle)
    .bind(next)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(idle_balance, d("250"));
    // Before the accounts existed: nothing.
    assert_eq!(
        write_backfill(p, hour_now() - TimeDelta::hours(1))
            .await
            .unwrap(),
        0
    );
    // The live valuation of the same book agrees on the money.
    let later = next + TimeDelta::hours(1);
    assert_eq!(write_live(p, None, later).await.unwrap(), 2);
    let rows = portfolio::history(p, &a, next, later + TimeDelta::hours(1), false)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].balance, rows[1].balance);
    assert_eq!(rows[0].realized, rows[1].realized);
    assert_eq!(rows[1].marks, "LIVE");
    // Without marks the live row values at the entry: equity fell by 100 from the
    // back-filled hour, so the drawdown is −100.
    assert_eq!(rows[1].equity, rows[0].equity - d("100"));
    assert_eq!(rows[1].drawdown, d("-100"));
}

/// The running task after three hours down: the hours missed are rebuilt, and the hour
/// that comes is written live, on the hour.
#[tokio::test]
async fn the_task_back_fills_a_three_hour_gap_then_writes_on_the_hour() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = traded(p).await;
    // The last snapshot before the outage, at the hour after the trades (a clock that
    // runs three hours and some ahead of the wall's says the service comes back then).
    let last = hour_now() + TimeDelta::hours(1);
    write_live(p, None, last).await.unwrap();
    let back = last + TimeDelta::hours(4);
    let start = Utc::now();
    // One second before the hour `back`, so the task sees it arrive.
    let offset = (back - TimeDelta::seconds(1)) - start;
    let clock: engine::portfolio::Clock = std::sync::Arc::new(move || Utc::now() + offset);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_hourly(p.clone(), None, clock, cancel.clone()));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let rows = loop {
        let rows = portfolio::history(p, &a, last, back + TimeDelta::hours(1), false)
            .await
            .unwrap();
        if rows.len() == 5 || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    cancel.cancel();
    task.await.unwrap();
    let hours: Vec<i64> = rows.iter().map(|r| (r.hour - last).num_hours()).collect();
    assert_eq!(hours, [0, 1, 2, 3, 4], "{rows:?}");
    let marks: Vec<&str> = rows.iter().map(|r| r.marks.as_str()).collect();
    assert_eq!(
        marks,
        ["LIVE", "LAST_FILL", "LAST_FILL", "LAST_FILL", "LIVE"]
    );
    assert!(rows.iter().all(|r| r.balance == d("1099")));
    // `pnl_history` is the analysts' way in: the same rows.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pnl_history($1::uuid, $2, $3)")
        .bind(&a)
        .bind(last)
        .bind(back + TimeDelta::hours(1))
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(n, 5);
}
