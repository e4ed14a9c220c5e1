//! The engine killed for real: `greekstream order place` (the executor in its own
//! process) is killed with SIGKILL after it wrote the order and the venue executed
//! it, before the venue's reply reached it. A new engine on the same database then
//! adopts what the venue did — the order filled, its fill booked once — and nothing
//! is sent twice.

use std::process::{Command, Stdio};
use std::time::Duration;

use database::ledger::{self, AccountKind, NewAccount};
use database::orders;
use database::testing::TestDb;
use rust_decimal::Decimal;
use simulators::binance::failures::{OrderFault, Selector};
use simulators::binance::{BinanceSim, BinanceSimConfig};
use trading::evaluate::LiquidationMode;
use trading::order::OrderState;

fn engine(db: &TestDb, sim: &BinanceSim, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_greekstream"));
    c.arg("order")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("GS_BINANCE_API_KEY", &sim.config().api_key)
        .env("GS_BINANCE_API_SECRET", &sim.config().secret)
        .env("GS_BINANCE_REST_URL", sim.rest_url())
        .env("GS_BINANCE_WS_URL", sim.ws_url())
        .env(
            "GS_HOUSE_POSITIONS",
            "BTCUSDT:0.5,ETHUSDT:-4,BTCUSDT_261225:-0.2",
        )
        // This test's own Redis keys (the reconciliation lock among them).
        .env(
            "GS_REDIS_PREFIX",
            format!("gs-crash-{}:", db.url().rsplit('/').next().unwrap_or("x")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_order_written_and_venue_reply_the_next_engine_adopts_it_once() {
    let sim = BinanceSim::bind(
        BinanceSimConfig {
            hang: Duration::from_secs(60),
            ..BinanceSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let db = TestDb::new().await;
    let account = ledger::create_account(
        &db.pool,
        &NewAccount {
            name: "crash".into(),
            kind: AccountKind::User,
            user_id: None,
            initial_balance: Decimal::from(10_000),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap()
    .id;
    // The venue executes the next order and holds its reply for a minute.
    sim.order_fault(OrderFault::AcceptThenTimeout, Selector::Next(1));
    let mut child = engine(
        &db,
        &sim,
        &[
            "place",
            "--account",
            &account,
            "--symbol",
            "BTCUSDT",
            "--side",
            "buy",
            "--quantity",
            "0.002",
        ],
    )
    .spawn()
    .unwrap();
    // Written, and executed by the venue: now the process dies.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let written = loop {
        let rows: Vec<String> = sqlx::query_scalar("SELECT client_order_id FROM orders")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        let executed = sim
            .stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed);
        if let (Some(cid), 1) = (rows.first(), executed) {
            break cid.clone();
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the engine exited first ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no order written and executed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let left = orders::by_client_id(&db.pool, &written)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        left.order.state,
        OrderState::Submitted,
        "the dead engine never heard back"
    );

    // The next engine reconciles.
    let out = engine(&db, &sim, &["reconcile"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ordersChanged"], 1, "{report}");
    let after = orders::by_client_id(&db.pool, &written)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.order.state, after.order.filled),
        (OrderState::Filled, "0.002".parse().unwrap())
    );
    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM trade_executions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(booked, 1);
    assert_eq!(
        sim.stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "nothing sent twice"
    );
    // And once more changes nothing.
    let out = engine(&db, &sim, &["reconcile"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ordersChanged"], 0, "{report}");
    let positions = ledger::open_positions(&db.pool, Some(&account))
        .await
        .unwrap();
    assert_eq!(
        positions[0].position.quantity,
        "0.002".parse::<Decimal>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_order_commands_say_why_with_a_code_and_exit_2() {
    let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = TestDb::new().await;
    let out = engine(
        &db,
        &sim,
        &[
            "place",
            "--account",
            "nope",
            "--symbol",
            "BTCUSDT",
            "--side",
            "buy",
            "--quantity",
            "0.002",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["code"], "ACCOUNT_NOT_FOUND", "{e}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&sim.config().secret),
        "no secret in errors"
    );
}
