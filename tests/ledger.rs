//! The trading repository against real PostgreSQL: fills booked as positions,
//! executions and logged balance deltas in one transaction; the balance identity the
//! operators' query checks; duplicates; concurrent writers; rules lookup.

use database::ledger::{self, AccountKind, Booked, FillBooking, LedgerError, NewAccount};
use database::testing::TestDb;
use rust_decimal::Decimal;
use sqlx::PgPool;
use trading::balance::Reason;
use trading::evaluate::LiquidationMode;
use trading::position::{apply_fill, Fill, OrderSide, Position, Side};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn new_account(pool: &PgPool, balance: &str) -> String {
    ledger::create_account(
        pool,
        &NewAccount {
            name: "alice".into(),
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

fn booking(
    account: &str,
    side: OrderSide,
    q: &str,
    px: &str,
    fee: &str,
    trade: Option<&str>,
) -> FillBooking {
    FillBooking {
        sub_account_id: account.into(),
        symbol: "BTCUSDT".into(),
        fill: Fill {
            side,
            quantity: d(q),
            price: d(px),
            leverage: d("10"),
        },
        fee: d(fee),
        exchange_order_id: Some("1".into()),
        client_order_id: None,
        exchange_trade_id: trade.map(str::to_owned),
        order_type: "MARKET".into(),
        origin: "MANUAL".into(),
        close_action: "CLOSE".into(),
        babysitter_excluded: false,
        closes: None,
        reduce_only: false,
    }
}

/// The operators' identity query (docs/trading.md): the accounts whose logs do not
/// add up to their balance.
async fn identity_breaks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM sub_accounts s
          WHERE s.initial_balance + coalesce((SELECT sum(change_amount + absorbed)
                                                FROM balance_logs l
                                               WHERE l.sub_account_id = s.id), 0)
                <> s.current_balance",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn open_position(pool: &PgPool, account: &str) -> Option<Position> {
    let mut open = ledger::open_positions(pool, Some(account)).await.unwrap();
    assert!(open.len() <= 1);
    open.pop().map(|p| p.position)
}

fn applied(b: Booked) -> ledger::Applied {
    match b {
        Booked::Applied(a) => *a,
        Booked::Duplicate => panic!("booked as a duplicate"),
        Booked::NothingLeft => panic!("nothing left to reduce"),
    }
}

#[tokio::test]
async fn a_flip_closes_the_old_side_and_opens_the_new_in_one_booking() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "1000").await;
    let open = applied(
        ledger::book_fill(
            p,
            &booking(&a, OrderSide::Buy, "1", "100", "0.05", Some("t1")),
        )
        .await
        .unwrap(),
    );
    assert_eq!(open.balance, d("999.95"));
    let old = open.open_position.clone().unwrap();
    // SELL 1.5 @ 110: +10 realized on the long, SHORT 0.5 opened; fee 0.09 split 2:1.
    let flip = applied(
        ledger::book_fill(
            p,
            &booking(&a, OrderSide::Sell, "1.5", "110", "0.09", Some("t2")),
        )
        .await
        .unwrap(),
    );
    assert_eq!(flip.closed_position.as_deref(), Some(old.as_str()));
    assert_ne!(flip.open_position.as_deref(), Some(old.as_str()));
    assert_eq!(flip.executions.len(), 2);
    assert_eq!(flip.balance, d("999.95") + d("10") - d("0.09"));
    let now = open_position(p, &a).await.unwrap();
    assert_eq!(
        (now.side, now.quantity, now.entry_price),
        (Side::Short, d("0.5"), d("110"))
    );
    let rows: Vec<(String, String, Decimal, Decimal, Option<Decimal>, String)> = sqlx::query_as(
        "SELECT action, position_id::text, quantity, fee, realized_pnl, signature
           FROM trade_executions WHERE exchange_trade_id = 't2' ORDER BY action DESC",
    )
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(rows[0].0, "OPEN");
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str()),
        ("FLIP_CLOSE", old.as_str())
    );
    assert_eq!(
        (rows[1].2, rows[1].3, rows[1].4),
        (d("1"), d("0.06"), Some(d("9.94")))
    );
    assert_eq!(
        (rows[0].2, rows[0].3, rows[0].4),
        (d("0.5"), d("0.03"), None)
    );
    assert!(rows.iter().all(|r| r.5.len() == 64));
    let (status, realized): (String, Decimal) =
        sqlx::query_as("SELECT status, realized_pnl FROM virtual_positions WHERE id = $1::uuid")
            .bind(&old)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!((status.as_str(), realized), ("CLOSED", d("10")));
    assert_eq!(identity_breaks(p).await, 0);
}

#[tokio::test]
async fn a_venue_trade_is_booked_once() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "100").await;
    let fill = booking(&a, OrderSide::Buy, "1", "100", "0.1", Some("t1"));
    applied(ledger::book_fill(p, &fill).await.unwrap());
    assert_eq!(
        ledger::book_fill(p, &fill).await.unwrap(),
        Booked::Duplicate
    );
    let (n, balance): (i64, Decimal) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM trade_executions), current_balance FROM sub_accounts",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((n, balance), (1, d("99.9")));
    assert_eq!(open_position(p, &a).await.unwrap().quantity, d("1"));
}

/// A deterministic stream of fills, large losses included, booked one by one: the
/// database's position is the pure model's after every fill, the balance never goes
/// below zero, and the identity holds throughout.
#[tokio::test]
async fn any_fill_sequence_keeps_the_book_and_the_balance_identity() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "50").await;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut model: Option<Position> = None;
    for i in 0..40 {
        let side = if next(2) == 0 {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        };
        let q = Decimal::new(1 + next(30) as i64, 1);
        let px = Decimal::from(50 + next(100) as i64);
        let fee = Decimal::new(next(20) as i64, 2);
        let b = booking(
            &a,
            side,
            &q.to_string(),
            &px.to_string(),
            &fee.to_string(),
            Some(&format!("t{i}")),
        );
        let booked = applied(ledger::book_fill(p, &b).await.unwrap());
        model = apply_fill(model.as_ref(), &b.fill).unwrap().after;
        assert_eq!(booked.outcome.after, model);
        let db_pos = open_position(p, &a).await;
        assert_eq!(
            db_pos.map(|p| (p.side, p.quantity, p.entry_price)),
            model.as_ref().map(|p| (p.side, p.quantity, p.entry_price)),
            "fill {i}"
        );
        assert!(booked.balance >= Decimal::ZERO);
        assert_eq!(identity_breaks(p).await, 0, "fill {i}");
    }
    let absorbed: Decimal = sqlx::query_scalar("SELECT sum(absorbed) FROM balance_logs")
        .fetch_one(p)
        .await
        .unwrap();
    assert!(
        absorbed > Decimal::ZERO,
        "the sequence should have hit the floor at least once"
    );
}

#[tokio::test]
async fn concurrent_balance_changes_serialize_on_the_account() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "100").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (p, a) = (p.clone(), a.clone());
            tokio::spawn(async move {
                ledger::change_balance(&p, &a, d("-7"), Reason::Withdrawal, None).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let row = ledger::account(p, &a).await.unwrap().unwrap();
    assert_eq!(row.current_balance, Decimal::ZERO);
    let (logs, absorbed): (i64, Decimal) =
        sqlx::query_as("SELECT count(*), sum(absorbed) FROM balance_logs")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!((logs, absorbed), (20, d("40")), "140 asked, 100 there");
    assert_eq!(identity_breaks(p).await, 0);
}

#[tokio::test]
async fn rules_come_from_the_account_then_the_global_row_then_the_defaults() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "100").await;
    let b = new_account(p, "100").await;
    assert_eq!(ledger::rules_for(p, &a).await.unwrap(), Default::default());
    sqlx::query("INSERT INTO risk_rules (is_global, max_leverage) VALUES (true, 20)")
        .execute(p)
        .await
        .unwrap();
    sqlx::query("INSERT INTO risk_rules (sub_account_id, max_leverage, liquidation_threshold) VALUES ($1::uuid, 5, 0.8)")
        .bind(&a)
        .execute(p)
        .await
        .unwrap();
    let ra = ledger::rules_for(p, &a).await.unwrap();
    assert_eq!(
        (ra.max_leverage, ra.liquidation_threshold),
        (d("5"), d("0.8"))
    );
    assert_eq!(
        ledger::rules_for(p, &b).await.unwrap().max_leverage,
        d("20")
    );
    let watched = ledger::all_watched(p).await.unwrap();
    assert_eq!(watched.len(), 2);
    let wa = watched.iter().find(|w| *w.id == *a).unwrap();
    assert_eq!(wa.threshold, d("0.8"));
    assert_eq!(ledger::watched(p, &a).await.unwrap().as_ref(), Some(wa));
}

#[tokio::test]
async fn unknown_and_malformed_accounts_are_not_found() {
    let db = TestDb::new().await;
    let p = &db.pool;
    for id in [
        "00000000-0000-0000-0000-000000000000",
        "nope",
        "'; DROP TABLE sub_accounts; --",
    ] {
        assert_eq!(ledger::account(p, id).await.unwrap(), None);
        assert_eq!(ledger::watched(p, id).await.unwrap(), None);
        let e = ledger::change_balance(p, id, d("1"), Reason::Deposit, None)
            .await
            .unwrap_err();
        assert!(matches!(e, LedgerError::AccountNotFound(_)), "{e}");
        assert_eq!(e.code(), "ACCOUNT_NOT_FOUND");
        let e = ledger::book_fill(p, &booking(id, OrderSide::Buy, "1", "1", "0", None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "ACCOUNT_NOT_FOUND");
    }
    let a = new_account(p, "1").await;
    let e = ledger::book_fill(p, &booking(&a, OrderSide::Buy, "0", "1", "0", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_FILL");
    assert_eq!(identity_breaks(p).await, 0);
}

/// Two closes of one position racing (a user's close and reconciliation's): the
/// second finds the position gone and books nothing — it must not open a new one.
#[tokio::test]
async fn a_close_of_a_position_already_closed_books_nothing() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "1000").await;
    applied(
        ledger::book_fill(p, &booking(&a, OrderSide::Buy, "1", "100", "0", Some("t1")))
            .await
            .unwrap(),
    );
    let pos = ledger::open_positions(p, Some(&a)).await.unwrap().remove(0);
    let close = || FillBooking {
        closes: Some(pos.id.clone()),
        reduce_only: false,
        close_action: "RECONCILE".into(),
        ..booking(&a, OrderSide::Sell, "1", "105", "0", None)
    };
    let (c1, c2) = (close(), close());
    let (first, second) = tokio::join!(ledger::book_fill(p, &c1), ledger::book_fill(p, &c2));
    let results = [first.unwrap(), second.unwrap()];
    assert_eq!(
        results.iter().filter(|b| **b == Booked::Duplicate).count(),
        1,
        "{results:?}"
    );
    assert!(
        ledger::open_positions(p, Some(&a))
            .await
            .unwrap()
            .is_empty(),
        "no short opened"
    );
    assert_eq!(
        ledger::account(p, &a)
            .await
            .unwrap()
            .unwrap()
            .current_balance,
        d("1005")
    );
    assert_eq!(identity_breaks(p).await, 0);
}

/// A fill being booked for an account does not hold up writing that account's next
/// order: the booking locks the account row against other bookings and balance
/// changes only (`FOR NO KEY UPDATE`), not against the order row's foreign-key check
/// (`FOR KEY SHARE`), which `FOR UPDATE` would block until the booking commits.
#[tokio::test]
async fn an_order_is_written_while_a_fill_of_its_account_is_being_booked() {
    use database::orders::{self, NewOrder, OrderKind};
    let db = TestDb::new().await;
    let account = new_account(&db.pool, "1000").await;
    let mut booking_tx = db.pool.begin().await.unwrap();
    ledger::book_fill_in(
        &mut booking_tx,
        &booking(&account, OrderSide::Buy, "0.01", "50000", "0.1", Some("t1")),
    )
    .await
    .unwrap();
    // The booking is still open (not committed): the order's write must not wait.
    let order = NewOrder {
        sub_account_id: account.clone(),
        symbol: "BTCUSDT".into(),
        side: OrderSide::Buy,
        kind: OrderKind::Market,
        quantity: d("0.01"),
        price: None,
        leverage: d("10"),
        reduce_only: false,
        origin: "MANUAL".into(),
        request_id: None,
        position_id: None,
        close_reason: None,
    };
    let ids = orders::OrderIds::from_random([7; 16]);
    let write = orders::insert_submitted(&db.pool, &ids, &order, 1, None);
    let written = tokio::time::timeout(std::time::Duration::from_secs(5), write).await;
    match written {
        Ok(r) => {
            r.unwrap();
        }
        Err(_) => panic!("the order waited for the booking's lock"),
    }
    booking_tx.commit().await.unwrap();
    // Bookings still serialize on the account.
    let mut first = db.pool.begin().await.unwrap();
    ledger::book_fill_in(
        &mut first,
        &booking(&account, OrderSide::Buy, "0.01", "50000", "0.1", Some("t2")),
    )
    .await
    .unwrap();
    let later = booking(&account, OrderSide::Buy, "0.01", "50000", "0.1", Some("t3"));
    let second = ledger::book_fill(&db.pool, &later);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(500), second).await;
    assert!(waited.is_err(), "a second booking must wait for the first");
    first.commit().await.unwrap();
}

#[tokio::test]
async fn a_reduce_only_fill_is_booked_up_to_what_the_position_holds_and_never_opens() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a = new_account(p, "1000").await;
    applied(
        ledger::book_fill(p, &booking(&a, OrderSide::Buy, "1", "100", "0", Some("t1")))
            .await
            .unwrap(),
    );
    // A reduce-only sell of 1.5 against a long of 1: 1 is booked (closing it), with
    // its share of the fee; nothing short is opened.
    let over = FillBooking {
        reduce_only: true,
        ..booking(&a, OrderSide::Sell, "1.5", "110", "0.15", Some("t2"))
    };
    let closed = applied(ledger::book_fill(p, &over).await.unwrap());
    assert_eq!(closed.outcome.change, trading::position::Change::Closed);
    assert_eq!(closed.outcome.closed, d("1"));
    assert_eq!(closed.balance, d("1000") + d("10") - d("0.1"));
    assert!(open_position(p, &a).await.is_none());
    // Another reduce-only fill with nothing left: nothing booked.
    let late = FillBooking {
        reduce_only: true,
        ..booking(&a, OrderSide::Sell, "0.5", "110", "0.05", Some("t3"))
    };
    assert_eq!(
        ledger::book_fill(p, &late).await.unwrap(),
        Booked::NothingLeft
    );
    assert!(open_position(p, &a).await.is_none());
    // What the venue sold past the position is the house's: 0.5 and 0.5, short.
    let house = ledger::house_taken(p).await.unwrap();
    assert_eq!(house.get("BTCUSDT").copied(), Some(d("-1")));
    assert_eq!(identity_breaks(p).await, 0);
}

/// The order path's book read leaves out the pending orders its own engine sent (it
/// counts them from memory) and keeps every other one: another engine's, and those a
/// journal replay wrote without a sender.
#[tokio::test]
async fn the_book_read_leaves_out_only_the_reading_engines_own_pending_orders() {
    use database::orders::{self, NewOrder, OrderKind};
    let db = TestDb::new().await;
    let account = new_account(&db.pool, "1000").await;
    let order = |q: &str| NewOrder {
        sub_account_id: account.clone(),
        symbol: "BTCUSDT".into(),
        side: OrderSide::Buy,
        kind: OrderKind::Market,
        quantity: d(q),
        price: None,
        leverage: d("10"),
        reduce_only: false,
        origin: "MANUAL".into(),
        request_id: None,
        position_id: None,
        close_reason: None,
    };
    let me = orders::OrderIds::from_random([1; 16]).id;
    let other = orders::OrderIds::from_random([2; 16]).id;
    for (seed, q, sender) in [
        (11u8, "0.001", Some(me.as_str())),
        (12, "0.002", Some(other.as_str())),
        (13, "0.004", None),
    ] {
        let ids = orders::OrderIds::from_random([seed; 16]);
        orders::insert_submitted(&db.pool, &ids, &order(q), 1, sender)
            .await
            .unwrap();
    }
    let quantities = |w: ledger::Watched| {
        let mut q: Vec<_> = w.pending.iter().map(|r| r.order.remaining).collect();
        q.sort();
        q
    };
    let mine = ledger::watched_with_rules(&db.pool, &account, Some(&me), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quantities(mine), vec![d("0.002"), d("0.004")]);
    let all = ledger::watched_with_rules(&db.pool, &account, None, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quantities(all), vec![d("0.001"), d("0.002"), d("0.004")]);
}
