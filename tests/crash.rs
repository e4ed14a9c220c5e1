//! The engine killed for real: `greekstream order place` (the executor in its own
//! process) is killed with SIGKILL after it wrote the order and the venue executed
//! it, before the venue's reply reached it. A new engine on the same database then
//! adopts what the venue did — the order filled, its fill booked once — and nothing
//! is sent twice. And the same process killed after the send but before the order's
//! row was written: the next engine recovers the order from the journal.

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

/// A sub-account with 10 000 USDT.
async fn account(db: &TestDb, name: &str) -> String {
    ledger::create_account(
        &db.pool,
        &NewAccount {
            name: name.into(),
            kind: AccountKind::User,
            user_id: None,
            initial_balance: Decimal::from(10_000),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap()
    .id
}

/// Where a test's processes journal their orders: a folder per test database.
fn journal_dir(db: &TestDb) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("journal")
        .join(db.url().rsplit('/').next().unwrap_or("x"))
}

/// Removes a test's journal folder when the test ends: its killed processes leave
/// their files behind, and nobody else will replay them.
struct Journals(std::path::PathBuf);

impl Journals {
    fn of(db: &TestDb) -> Self {
        Self(journal_dir(db))
    }
}

impl Drop for Journals {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary on this test's database and simulator, nothing else inherited.
fn binary(db: &TestDb, sim: &BinanceSim) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_greekstream"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("GS_BINANCE_API_KEY", &sim.config().api_key)
        .env("GS_BINANCE_API_SECRET", &sim.config().secret)
        .env("GS_BINANCE_REST_URL", sim.rest_url())
        .env("GS_BINANCE_WS_URL", sim.ws_url())
        .env("GS_ORDER_JOURNAL_DIR", journal_dir(db))
        .env(
            "GS_HOUSE_POSITIONS",
            "BTCUSDT:0.5,ETHUSDT:-4,BTCUSDT_261225:-0.2",
        );
    c
}

/// Fails the test with what the process said if it has exited.
fn fail_if_exited(child: &mut std::process::Child) {
    if let Ok(Some(status)) = child.try_wait() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("the engine exited first ({status}): {err}");
    }
}

fn engine(db: &TestDb, sim: &BinanceSim, args: &[&str]) -> Command {
    let mut c = binary(db, sim);
    c.arg("order")
        .args(args)
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
    let _journals = Journals::of(&db);
    let account = account(&db, "crash").await;
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
        fail_if_exited(&mut child);
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
    let _journals = Journals::of(&db);
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

/// The service itself (`greekstream`, the whole process) with the engine on.
fn service(db: &TestDb, sim: &BinanceSim, prefix: &str) -> Command {
    let mut c = binary(db, sim);
    c.env("GS_SYNTHETIC", "false")
        .env("GS_IBKR", "false")
        .env("GS_TASTYTRADE", "false")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("CONTROL_ADDR", "127.0.0.1:0")
        .env("GS_REDIS_PREFIX", prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The engine's events under `prefix` (`recovery_complete` among them), subscribed
/// before a service is started.
async fn engine_events(prefix: &str) -> impl futures_util::Stream<Item = redis::Msg> + Unpin {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("Redis (README set-up)");
    pubsub
        .psubscribe(format!("{prefix}engine:*"))
        .await
        .unwrap();
    pubsub.into_on_message()
}

/// Waits for the service's `recovery_complete` on `events` (subscribed before it
/// started), or fails with what the process said.
async fn recovered(
    events: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin),
    child: &mut std::process::Child,
) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_millis(200), events.next()).await {
            Ok(Some(m)) if m.get_channel_name().ends_with("engine:recovery_complete") => return,
            Ok(_) => {}
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the service exited ({status}) before it recovered");
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the service did not recover"
                );
            }
        }
    }
}

/// The service killed (SIGKILL) after the venue filled an order and the fill frame
/// reached it, before the fill was booked: the booking transaction is held up by a
/// lock on the account row (taken by this test), so the kill lands inside it. The
/// restarted service recovers: the order FILLED, its fill booked once, the position
/// there, and nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_venue_fill_and_booking_the_restarted_service_books_it_once() {
    let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = TestDb::new().await;
    let _journals = Journals::of(&db);
    let prefix = simulators::testkit::unique_prefix("crash-fill");
    let account = account(&db, "crash-fill").await;
    // A bid resting at the best bid, placed by a first engine process.
    sim.pause_market(true);
    let (bids, _, _) = sim.book("BTCUSDT").unwrap();
    let (&best_bid, _) = bids.iter().next_back().unwrap();
    let out = engine(
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
            "--price",
            &best_bid.to_string(),
        ],
    )
    .env("GS_REDIS_PREFIX", &prefix)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(placed["state"], "SUBMITTED", "{placed}");
    let cid = placed["clientOrderId"].as_str().unwrap().to_owned();

    let mut events = engine_events(&prefix).await;
    let mut running = service(&db, &sim, &prefix).spawn().unwrap();
    recovered(&mut events, &mut running).await;

    // The account row locked: the service's booking of the fill will wait on it.
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sub_accounts WHERE id = $1::uuid FOR UPDATE")
        .bind(&account)
        .execute(&mut *lock)
        .await
        .unwrap();
    // The market trades down through the bid: the venue fills it and tells the stream.
    sim.move_price("BTCUSDT", -50);
    sim.pause_market(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // A backend of this database waiting for a row lock: the booking, in flight.
        let waiting: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        // The booking waits on the account row; others may wait behind the booking
        // (on the order's row), and are not what this test waits for.
        if waiting.iter().any(|q| q.contains("FROM sub_accounts")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fill never reached the booking"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.kill().unwrap();
    running.wait().unwrap();
    lock.rollback().await.unwrap();
    let left = orders::by_client_id(&db.pool, &cid).await.unwrap().unwrap();
    assert_eq!(
        (left.order.state, left.order.filled),
        (OrderState::Submitted, Decimal::ZERO),
        "the dead service booked nothing"
    );
    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM trade_executions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(booked, 0);

    // Restarted: recovery reconciles the order with the venue before it is healthy.
    let mut restarted = service(&db, &sim, &prefix).spawn().unwrap();
    recovered(&mut events, &mut restarted).await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    let after = orders::by_client_id(&db.pool, &cid).await.unwrap().unwrap();
    assert_eq!(
        (after.order.state, after.order.filled),
        (OrderState::Filled, "0.002".parse().unwrap())
    );
    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM trade_executions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(booked, 1, "the fill booked once");
    let positions = ledger::open_positions(&db.pool, Some(&account))
        .await
        .unwrap();
    assert_eq!(positions.len(), 1);
    assert_eq!(
        positions[0].position.quantity,
        "0.002".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        sim.stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "nothing sent twice"
    );
}

/// `greekstream order place` killed after its order went on the wire and before the
/// order's row was written (this test holds the account row, which the row's
/// foreign-key check waits on; the waiting statement is ended with the process).
/// The order is then only on the venue and in the dead process's journal. The next
/// engine writes its row from the journal and adopts the venue's order, instead of
/// cancelling it as an orphan; nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_send_before_the_row_the_next_engine_recovers_it_from_the_journal() {
    let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = TestDb::new().await;
    let _journals = Journals::of(&db);
    let account = account(&db, "crash-journal").await;
    sim.pause_market(true);
    let (bids, _, _) = sim.book("BTCUSDT").unwrap();
    let (&best_bid, _) = bids.iter().next_back().unwrap();
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sub_accounts WHERE id = $1::uuid FOR UPDATE")
        .bind(&account)
        .execute(&mut *lock)
        .await
        .unwrap();
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
            "--price",
            &best_bid.to_string(),
        ],
    )
    .spawn()
    .unwrap();
    let waiting_row = "SELECT pid FROM pg_stat_activity
                        WHERE datname = current_database() AND wait_event_type = 'Lock'
                          AND query LIKE '%INSERT INTO orders%'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent = sim
            .stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed);
        let waiting: Vec<i32> = sqlx::query_scalar(waiting_row)
            .fetch_all(&db.pool)
            .await
            .unwrap();
        if sent == 1 && !waiting.is_empty() {
            break;
        }
        fail_if_exited(&mut child);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order was not sent with its row waiting (sent {sent})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The dead process's statement dies with it (left alone, it would finish once
    // the lock is gone).
    loop {
        let ended: Vec<bool> = sqlx::query_scalar(&format!(
            "SELECT pg_terminate_backend(pid) FROM ({waiting_row}) w"
        ))
        .fetch_all(&db.pool)
        .await
        .unwrap();
        if ended.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the order's row was never written");

    let out = engine(&db, &sim, &["reconcile"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ordersJournaled"], 1, "{report}");
    assert_eq!(report["orphansCancelled"], 0, "{report}");
    let (state, venue_id): (String, Option<String>) =
        sqlx::query_as("SELECT state, venue_order_id FROM orders")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, "SUBMITTED", "still working on the venue");
    assert!(venue_id.is_some(), "the venue's order adopted");
    assert_eq!(
        sim.stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "nothing sent twice"
    );
    // The journal was replayed once and is gone.
    let db_name = db.url().rsplit('/').next().unwrap().to_owned();
    let left = std::fs::read_dir(journal_dir(&db))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&db_name))
        .count();
    assert_eq!(left, 0, "this database's journals are all replayed");
    let out = engine(&db, &sim, &["reconcile"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ordersJournaled"], 0, "{report}");
}

/// The service killed (SIGKILL) in the middle of a liquidation: an INSTANT_CLOSE
/// account holding BTC and ETH crosses its threshold, the account is marked and its
/// forced closes go out, and the fills' bookings are held up (this test holds the
/// account's position rows `FOR SHARE`: reads and the orders' references pass, a
/// booking's update of a position waits) when the kill lands. Restarted, the service books what the venue did and finishes the
/// liquidation: each position closed by one forced order, each fill booked once, the
/// venue back at the house.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_liquidation_the_restarted_service_liquidates_the_account_once() {
    use trading::command::RulesPatch;
    let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = TestDb::new().await;
    let _journals = Journals::of(&db);
    let prefix = simulators::testkit::unique_prefix("crash-liq");
    let account = ledger::create_account(
        &db.pool,
        &NewAccount {
            name: "crash-liq".into(),
            kind: AccountKind::User,
            user_id: None,
            initial_balance: Decimal::from(40),
            liquidation_mode: LiquidationMode::InstantClose,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap()
    .id;
    ledger::set_rules(
        &db.pool,
        Some(&account),
        &RulesPatch {
            max_notional_per_trade: Some(Decimal::from(10_000)),
            max_total_exposure: Some(Decimal::from(10_000)),
            ..RulesPatch::default()
        },
    )
    .await
    .unwrap();
    sim.pause_market(true);
    for (symbol, q) in [("BTCUSDT", "0.01"), ("ETHUSDT", "0.05")] {
        let out = engine(
            &db,
            &sim,
            &[
                "place",
                "--account",
                &account,
                "--symbol",
                symbol,
                "--side",
                "buy",
                "--quantity",
                q,
                "--leverage",
                "20",
            ],
        )
        .env("GS_REDIS_PREFIX", &prefix)
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let opened = sim
        .stats()
        .orders
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut events = engine_events(&prefix).await;
    let mut running = service(&db, &sim, &prefix).spawn().unwrap();
    recovered(&mut events, &mut running).await;
    let held = |db: &TestDb| {
        let (pool, account) = (db.pool.clone(), account.clone());
        async move {
            ledger::open_positions(&pool, Some(&account))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(held(&db).await, 2, "both opened before the service started");

    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM virtual_positions WHERE sub_account_id = $1::uuid FOR SHARE")
        .bind(&account)
        .execute(&mut *lock)
        .await
        .unwrap();
    // BTC falls 10 %: 0.01 BTC loses about 600 USDT of the 40, far past T.
    sim.move_price("BTCUSDT", -60_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
                .bind(&account)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE '%virtual_positions%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let forced = sim
            .stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed)
            - opened;
        if status == "LIQUIDATED" && waiting > 0 && forced > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no liquidation in flight (status {status}, {waiting} waiting, {forced} sent)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.kill().unwrap();
    running.wait().unwrap();
    lock.rollback().await.unwrap();
    let booked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM trade_executions WHERE action = 'LIQUIDATE'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(booked, 0, "the dead service booked no forced fill");
    assert_eq!(held(&db).await, 2);

    let mut restarted = service(&db, &sim, &prefix).spawn().unwrap();
    recovered(&mut events, &mut restarted).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while held(&db).await > 0 {
        fail_if_exited(&mut restarted);
        if tokio::time::Instant::now() > deadline {
            let orders: Vec<(String, String, String, Decimal, Decimal)> = sqlx::query_as(
                "SELECT symbol, origin, state, quantity, filled FROM orders ORDER BY created_at",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            panic!(
                "the liquidation was not finished after the restart: {orders:?}, venue {:?}",
                sim.positions()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    let per_position: Vec<(String, i64, Decimal)> = sqlx::query_as(
        "SELECT p.symbol, count(DISTINCT t.client_order_id), sum(t.quantity)
           FROM virtual_positions p JOIN trade_executions t ON t.position_id = p.id
          WHERE t.action = 'LIQUIDATE' GROUP BY p.symbol ORDER BY p.symbol",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        per_position,
        [
            ("BTCUSDT".to_owned(), 1, "0.01".parse().unwrap()),
            ("ETHUSDT".to_owned(), 1, "0.05".parse().unwrap())
        ],
        "each position closed by one forced order, its fill booked once"
    );
    let forced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE origin = 'LIQUIDATION'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(forced, 2);
    assert_eq!(
        sim.stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed)
            - opened,
        2,
        "nothing sent twice"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
        .bind(&account)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "LIQUIDATED");
    let venue = sim.positions();
    assert_eq!(venue.get("BTCUSDT").copied(), Some("0.5".parse().unwrap()));
    assert_eq!(venue.get("ETHUSDT").copied(), Some("-4".parse().unwrap()));
}
