//! `cargo bench --bench portfolio -- [--accounts N]`: the hourly portfolio snapshot of
//! N accounts (10 000 by default, two open positions each) written to a scratch
//! database, live and rebuilt from the ledger; prints the wall time of each write.
//! Goal (issue 27): 10 000 accounts in ≤ 2 s.

use std::time::Instant;

use chrono::{DurationRound, TimeDelta, Utc};
use database::testing::TestDb;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let accounts: i64 = args
        .iter()
        .position(|a| a == "--accounts")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let db = TestDb::new().await;
    let p = &db.pool;
    let seeded = Instant::now();
    sqlx::raw_sql(&format!(
        "INSERT INTO sub_accounts (id, name, type, initial_balance, current_balance, created_at)
         SELECT gen_random_uuid(), 'bench-' || i, 'USER', 1000, 1000 + i % 97, now() - interval '1 day'
           FROM generate_series(1, {accounts}) i;
         INSERT INTO virtual_positions (sub_account_id, symbol, side, entry_price, quantity,
                                        notional, leverage, margin, opened_at)
         SELECT s.id, sym, CASE WHEN random() < 0.5 THEN 'LONG' ELSE 'SHORT' END, px, 0.01,
                px * 0.01, 10, px * 0.001, now() - interval '2 hours'
           FROM sub_accounts s,
                (VALUES ('BTCUSDT', 60000::numeric), ('ETHUSDT', 3000::numeric)) v(sym, px);
         ANALYZE;"
    ))
    .execute(p)
    .await
    .expect("seed");
    println!(
        "seeded {accounts} accounts, {} positions in {:.1} s",
        accounts * 2,
        seeded.elapsed().as_secs_f64()
    );
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    for k in 1..=3 {
        let t = Instant::now();
        let n = engine::portfolio::write_live(p, None, hour + TimeDelta::hours(k))
            .await
            .expect("live");
        println!(
            "live snapshot: {n} accounts in {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let n = engine::portfolio::write_backfill(p, hour + TimeDelta::hours(4))
        .await
        .expect("backfill");
    println!(
        "back-filled hour: {n} accounts in {:.3} s",
        t.elapsed().as_secs_f64()
    );
}
