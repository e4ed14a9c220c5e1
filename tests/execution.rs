//! Execution on the Binance simulator with its failure switches, against real
//! PostgreSQL: each order written before it is sent and placed once; an ambiguous
//! reply resolved by asking the venue, never by resending; every fill booked once
//! on the sub-account's position and balance, whatever the user stream does.

use std::sync::Arc;
use std::time::Duration;

use bus::outbox::{outbox, BusWrite};
use database::ledger::{self, AccountKind, NewAccount};
use database::orders::{self, OrderKind};
use database::testing::TestDb;
use engine::closing::CloseError;
use engine::execution::{ExecutionConfig, Executor, PlaceError, PlaceOrder};
use engine::journal;
use engine::prices::{PriceChain, PriceChainConfig};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;
use simulators::binance::failures::{OrderFault, Selector, StreamFault};
use simulators::binance::{BinanceSim, BinanceSimConfig};
use streaming::binance::rest::{Keys, Rest};
use streaming::binance::{run_binance, BinanceConfig, BinanceStats};
use streaming::secret::Secret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::evaluate::LiquidationMode;
use trading::order::OrderState;
use trading::position::{OrderSide, Side};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

struct Venue {
    sim: BinanceSim,
    db: TestDb,
    exec: Executor,
    rest: Rest,
    account: String,
    events: bus::outbox::Drain,
    stream: Arc<streaming::binance::prices::Prices>,
    cancel: CancellationToken,
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The simulator, the Binance client feeding its user stream to the executor, and a
/// sub-account with 10 000 USDT. Replies held back ("accepted then timeout") outlast
/// the client's 1 s timeout.
async fn venue() -> Venue {
    venue_with(BinanceSimConfig {
        hang: Duration::from_secs(3),
        ..BinanceSimConfig::default()
    })
    .await
}

async fn venue_with(sim_cfg: BinanceSimConfig) -> Venue {
    let sim = BinanceSim::bind(sim_cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let keys = Keys {
        api_key: Secret::new(sim.config().api_key.clone()),
        secret: Secret::new(sim.config().secret.clone()),
    };
    let db = TestDb::new().await;
    let account = ledger::create_account(
        &db.pool,
        &NewAccount {
            name: "trader".into(),
            kind: AccountKind::User,
            user_id: None,
            initial_balance: d("10000"),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: d("0.005"),
        },
    )
    .await
    .unwrap()
    .id;
    let cancel = CancellationToken::new();
    let (feed_tx, feed_rx) = mpsc::channel(1024);
    let mut cfg = BinanceConfig::new(sim.rest_url(), sim.ws_url(), keys.clone());
    cfg.orders = Some(feed_tx);
    cfg.positions_refresh = Duration::from_secs(3600);
    cfg.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into()];
    let (tx, mut rx) = mpsc::channel(4096);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    // The client's in-process prices are the executor's first price source, as in
    // the service.
    let stats = Arc::new(BinanceStats::default());
    let stream = stats.prices.clone();
    tokio::spawn(run_binance(cfg, tx, stats, cancel.clone()));
    let rest = Rest::new(&sim.rest_url(), keys, Duration::from_secs(1)).unwrap();
    let prices = PriceChain::new(PriceChainConfig::default())
        .with_stream(stream.clone())
        .with_rest(reqwest::Client::new(), &sim.rest_url());
    let (out, events) = outbox("pms:", 10_000, 1);
    // The simulator's own positions belong to no sub-account.
    let house = [
        ("BTCUSDT", "0.5"),
        ("ETHUSDT", "-4"),
        ("BTCUSDT_261225", "-0.2"),
    ]
    .into_iter()
    .map(|(s, q)| (s.to_owned(), d(q)))
    .collect();
    let exec = Executor::start(
        ExecutionConfig {
            house,
            fill_debounce: Duration::ZERO,
            ..ExecutionConfig::default()
        },
        db.pool.clone(),
        rest.clone(),
        prices,
        Some(stream.clone()),
        out,
        None,
        cancel.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(exec.clone().run_feed(feed_rx));
    // The user stream must be up before orders, or their updates precede it.
    simulators::testkit::wait_for("the user stream", Duration::from_secs(10), || {
        sim.listen_key().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Venue {
        sim,
        db,
        exec,
        rest,
        account,
        events,
        stream,
        cancel,
    }
}

fn market(account: &str, side: OrderSide, q: &str) -> PlaceOrder {
    PlaceOrder {
        sub_account_id: account.into(),
        symbol: "BTCUSDT".into(),
        side,
        kind: OrderKind::Market,
        quantity: d(q),
        price: None,
        leverage: d("10"),
        reduce_only: false,
        origin: "MANUAL".into(),
        request_id: None,
        position_id: None,
        close_reason: None,
    }
}

impl Venue {
    async fn order_state(&self, client_id: &str) -> (OrderState, Decimal) {
        let o = orders::by_client_id(&self.db.pool, client_id)
            .await
            .unwrap()
            .unwrap();
        (o.order.state, o.order.filled)
    }

    async fn wait_state(&self, client_id: &str, want: OrderState, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (s, _) = self.order_state(client_id).await;
            if s == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {client_id} is {s:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The venue's orders with this client id (allOrders, the venue's own record).
    async fn venue_orders(&self, client_id: &str) -> usize {
        let body = self
            .rest
            .signed(
                Method::GET,
                "/fapi/v1/allOrders",
                &[("symbol", "BTCUSDT".to_owned())],
            )
            .await
            .unwrap();
        let all: Vec<Value> = serde_json::from_str(&body).unwrap();
        all.iter()
            .filter(|o| o["clientOrderId"] == client_id)
            .count()
    }

    async fn venue_orders_all(&self) -> usize {
        let body = self
            .rest
            .signed(
                Method::GET,
                "/fapi/v1/allOrders",
                &[("symbol", "BTCUSDT".to_owned())],
            )
            .await
            .unwrap();
        serde_json::from_str::<Vec<Value>>(&body).unwrap().len()
    }

    async fn executions(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM trade_executions")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    fn events(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(w) = self.events.try_recv() {
            if let BusWrite::Publish {
                channel, payload, ..
            } = w
            {
                out.push((
                    channel.rsplit(':').next().unwrap().to_owned(),
                    serde_json::from_str(&payload).unwrap(),
                ));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_order_is_written_placed_filled_and_booked_once() {
    let mut v = venue().await;
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    // Accepted; already filled if the stream told first (a market order fills at once).
    assert!(
        matches!(o.order.state, OrderState::Submitted | OrderState::Filled),
        "{:?}",
        o.order
    );
    assert!(o.order.venue_id.is_some());
    v.wait_state(
        &o.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    assert_eq!(pos.len(), 1);
    assert_eq!(
        (pos[0].position.side, pos[0].position.quantity),
        (Side::Long, d("0.002"))
    );
    let balance = ledger::account(&v.db.pool, &v.account)
        .await
        .unwrap()
        .unwrap()
        .current_balance;
    assert!(balance < d("10000"), "the taker fee was charged: {balance}");
    assert_eq!(v.venue_orders(&o.client_order_id).await, 1);
    let events = v.events();
    let filled: Vec<_> = events.iter().filter(|(k, _)| k == "order_filled").collect();
    assert!(!filled.is_empty());
    assert_eq!(filled[0].1["subAccountId"], v.account.as_str());
    assert!(events
        .iter()
        .any(|(k, e)| k == "position_updated" && e["side"] == "LONG"));
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT source || ':' || event FROM order_events ORDER BY id")
            .fetch_all(&v.db.pool)
            .await
            .unwrap();
    assert_eq!(
        sources[0], "ENGINE:Sent",
        "written before it was sent: {sources:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_timeout_and_accepted_then_503_are_adopted_not_resent() {
    let v = venue().await;
    for fault in [
        OrderFault::AcceptThenTimeout,
        OrderFault::AcceptThen503,
        OrderFault::AcceptThen1007,
    ] {
        v.sim.order_fault(fault, Selector::Next(1));
        // The stream stays silent about it: only asking the venue can resolve it.
        v.sim.stream_fault(StreamFault::Drop, Selector::Next(1));
        let before = v
            .exec
            .stats()
            .ambiguous
            .load(std::sync::atomic::Ordering::Relaxed);
        let o = v
            .exec
            .place(market(&v.account, OrderSide::Buy, "0.002"))
            .await
            .unwrap();
        assert_eq!(
            o.order.state,
            OrderState::Unknown,
            "{fault:?}: an ambiguous reply is unknown, not failed"
        );
        assert_eq!(
            v.exec
                .stats()
                .ambiguous
                .load(std::sync::atomic::Ordering::Relaxed),
            before + 1
        );
        v.wait_state(
            &o.client_order_id,
            OrderState::Filled,
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(
            v.venue_orders(&o.client_order_id).await,
            1,
            "{fault:?}: placed once"
        );
    }
    // Three fills, each booked once, from the venue's own trade records.
    assert_eq!(v.executions().await, 3);
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    assert_eq!(pos[0].position.quantity, d("0.006"));
    let resolved = v
        .exec
        .stats()
        .resolved
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(resolved, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_reply_the_stream_answers_first_is_booked_once() {
    let v = venue().await;
    v.sim
        .order_fault(OrderFault::AcceptThenTimeout, Selector::Next(1));
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    // The fill came on the stream while the reply hung: filled, or unknown; never rejected.
    assert!(
        matches!(o.order.state, OrderState::Unknown | OrderState::Filled),
        "{:?}",
        o.order.state
    );
    v.wait_state(
        &o.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(v.executions().await, 1);
    assert_eq!(v.venue_orders(&o.client_order_id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_before_the_venue_is_rejected_once_the_venue_says_it_never_existed() {
    let v = venue().await;
    v.sim
        .order_fault(OrderFault::RejectBeforeEngine, Selector::Next(1));
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    assert_eq!(o.order.state, OrderState::Unknown);
    // Not before the request could no longer be accepted (timestamp + receive window).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        v.order_state(&o.client_order_id).await.0,
        OrderState::Unknown
    );
    v.wait_state(
        &o.client_order_id,
        OrderState::Rejected,
        Duration::from_secs(15),
    )
    .await;
    let row = orders::by_client_id(&v.db.pool, &o.client_order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.order.reject_code.as_deref(), Some("NOT_FOUND"));
    assert_eq!(v.venue_orders(&o.client_order_id).await, 0);
    assert_eq!(v.executions().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_delayed_and_reordered_stream_events_book_each_fill_once() {
    let v = venue().await;
    let faults = [
        StreamFault::Duplicate,
        StreamFault::Delay(Duration::from_millis(500)),
        StreamFault::Reorder,
    ];
    let mut ids = Vec::new();
    for f in faults {
        v.sim.stream_fault(f, Selector::Next(1));
        let o = v
            .exec
            .place(market(&v.account, OrderSide::Buy, "0.002"))
            .await
            .unwrap();
        ids.push(o.client_order_id);
    }
    for id in &ids {
        v.wait_state(id, OrderState::Filled, Duration::from_secs(10))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(v.executions().await, 3);
    let balance = ledger::account(&v.db.pool, &v.account)
        .await
        .unwrap()
        .unwrap()
        .current_balance;
    let fees: Decimal = sqlx::query_scalar("SELECT sum(fee) FROM trade_executions")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();
    assert_eq!(balance, d("10000") - fees, "each fee charged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_order_is_neither_written_nor_sent() {
    let v = venue().await;
    // 0.01 BTC is ~600 USDT: over the default 200 per trade.
    let e = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.01"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "MAX_NOTIONAL_EXCEEDED");
    let e = v
        .exec
        .place(market(
            "00000000-0000-0000-0000-000000000000",
            OrderSide::Buy,
            "0.002",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ACCOUNT_NOT_FOUND");
    let mut bad = market(&v.account, OrderSide::Buy, "0.002");
    bad.symbol = "NOPEUSDT".into();
    assert_eq!(
        v.exec.place(bad).await.unwrap_err().code(),
        "INVALID_SYMBOL"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let body = v
        .rest
        .signed(
            Method::GET,
            "/fapi/v1/allOrders",
            &[("symbol", "BTCUSDT".to_owned())],
        )
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 0);
}

fn limit(account: &str, side: OrderSide, q: &str, price: Decimal) -> PlaceOrder {
    PlaceOrder {
        kind: OrderKind::Limit,
        price: Some(price),
        ..market(account, side, q)
    }
}

/// A buy price 3 % under the mark, on the tick: rests on the book.
fn resting_bid(v: &Venue) -> Decimal {
    (v.sim.mark("BTCUSDT").unwrap() * d("0.97")).round_dp(1)
}

async fn second_account(v: &Venue) -> String {
    ledger::create_account(
        &v.db.pool,
        &NewAccount {
            name: "other".into(),
            kind: AccountKind::Bot,
            user_id: None,
            initial_balance: d("10000"),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: d("0.005"),
        },
    )
    .await
    .unwrap()
    .id
}

async fn venue_open_orders(v: &Venue) -> Vec<String> {
    let body = v
        .rest
        .signed(
            Method::GET,
            "/fapi/v1/openOrders",
            &[("symbol", "BTCUSDT".to_owned())],
        )
        .await
        .unwrap();
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    all.iter()
        .map(|o| o["clientOrderId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_all_cancels_only_the_requesting_accounts_orders() {
    let mut v = venue().await;
    let other = second_account(&v).await;
    let px = resting_bid(&v);
    let mine = v
        .exec
        .place(limit(&v.account, OrderSide::Buy, "0.002", px))
        .await
        .unwrap();
    let theirs = v
        .exec
        .place(limit(&other, OrderSide::Buy, "0.002", px))
        .await
        .unwrap();
    assert_eq!(mine.order.state, OrderState::Submitted);
    let done = v.exec.cancel_all(&v.account, None).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].order.state, OrderState::Canceled);
    assert_eq!(
        venue_open_orders(&v).await,
        vec![theirs.client_order_id.clone()]
    );
    assert_eq!(
        v.order_state(&theirs.client_order_id).await.0,
        OrderState::Submitted
    );
    assert!(v
        .events()
        .iter()
        .any(|(k, e)| k == "order_cancelled" && e["orderId"] == mine.id.as_str()));
    // A second cancel of the same order says so; someone else's order is not found.
    let e = v.exec.cancel(&v.account, &mine.id).await.unwrap_err();
    assert_eq!(e.code(), "ORDER_NOT_OPEN");
    let e = v.exec.cancel(&v.account, &theirs.id).await.unwrap_err();
    assert_eq!(e.code(), "ORDER_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_goes_to_the_venue_when_it_holds_the_position_and_is_virtual_when_it_does_not() {
    let v = venue().await;
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    v.wait_state(
        &o.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    let closed = v.exec.close(&v.account, &pos[0].id).await.unwrap();
    let engine::closing::Closed::Order(row) = closed else {
        panic!("the venue holds it: {closed:?}")
    };
    v.wait_state(
        &row.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    assert!(ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap()
        .is_empty());

    // Open again, then the exchange loses the position behind our back.
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    v.wait_state(
        &o.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    v.sim.set_position_quietly("BTCUSDT", Decimal::ZERO);
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    let before = v.venue_orders_all().await;
    let closed = v.exec.close(&v.account, &pos[0].id).await.unwrap();
    assert!(
        matches!(closed, engine::closing::Closed::Virtual { .. }),
        "{closed:?}"
    );
    assert_eq!(v.venue_orders_all().await, before, "nothing sent");
    assert!(ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap()
        .is_empty());
    let action: String =
        sqlx::query_scalar("SELECT action FROM trade_executions WHERE type = 'VIRTUAL'")
            .fetch_one(&v.db.pool)
            .await
            .unwrap();
    assert_eq!(action, "DESYNC_CLOSE");
    assert_eq!(
        v.exec
            .close(&v.account, &pos[0].id)
            .await
            .unwrap_err()
            .code(),
        "POSITION_NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_clock_six_seconds_off_orders_that_open_are_refused_and_closes_go() {
    let v = venue().await;
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    v.wait_state(
        &o.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    v.sim.set_clock_offset(6_000);
    let offset = v.exec.sync_clock().await.unwrap();
    assert!(offset > 5_000, "{offset}");
    let e = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "CLOCK_DRIFT");
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    let closed = v.exec.close(&v.account, &pos[0].id).await.unwrap();
    assert!(
        matches!(closed, engine::closing::Closed::Order(_)),
        "{closed:?}"
    );
    // Back in line: opening orders go again.
    v.sim.set_clock_offset(0);
    v.exec.sync_clock().await.unwrap();
    v.exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_books_what_the_stream_missed_and_cancels_only_our_orphans() {
    let v = venue().await;
    // A fill the stream never delivers.
    v.sim.stream_fault(StreamFault::Drop, Selector::Next(1));
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    assert_eq!(o.order.state, OrderState::Submitted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        v.order_state(&o.client_order_id).await.0,
        OrderState::Submitted
    );
    // An orphan of ours (a client id with our prefix the book does not know) and a
    // foreign order, both resting on the venue.
    let px = resting_bid(&v).to_string();
    for cid in ["gs00000000000000000000000000000001", "manual-1"] {
        v.rest
            .signed(
                Method::POST,
                "/fapi/v1/order",
                &[
                    ("symbol", "BTCUSDT".to_owned()),
                    ("side", "BUY".to_owned()),
                    ("type", "LIMIT".to_owned()),
                    ("timeInForce", "GTC".to_owned()),
                    ("quantity", "0.002".to_owned()),
                    ("price", px.clone()),
                    ("newClientOrderId", cid.to_owned()),
                ],
            )
            .await
            .unwrap();
    }
    let r = v.exec.reconcile().await.unwrap();
    assert_eq!((r.orphans_cancelled, r.foreign_orders), (1, 1), "{r:?}");
    assert_eq!(venue_open_orders(&v).await, vec!["manual-1".to_owned()]);
    assert_eq!(
        v.order_state(&o.client_order_id).await,
        (OrderState::Filled, d("0.002"))
    );
    assert_eq!(v.executions().await, 1);
    assert!(r.desynced.is_empty(), "{r:?}");
    // Again: nothing more to do, nothing booked twice.
    let again = v.exec.reconcile().await.unwrap();
    assert_eq!(
        (
            again.orders_changed,
            again.orphans_cancelled,
            again.virtual_closes
        ),
        (0, 0, 0)
    );
    assert_eq!(v.executions().await, 1);
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM reconciliation_log ORDER BY id")
        .fetch_all(&v.db.pool)
        .await
        .unwrap();
    assert!(
        kinds.contains(&"ORPHAN_CANCELLED".to_owned())
            && kinds.contains(&"ORDER_UPDATED".to_owned()),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desynced_symbol_refuses_opening_orders_and_a_flat_exchange_closes_the_book() {
    let v = venue().await;
    let o = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    v.wait_state(
        &o.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    assert!(v.exec.reconcile().await.unwrap().desynced.is_empty());
    // Someone trades 0.003 on the shared account behind the engine's back.
    v.sim.set_position_quietly("BTCUSDT", d("0.505"));
    let r = v.exec.reconcile().await.unwrap();
    assert_eq!(
        r.desynced,
        vec![("BTCUSDT".to_owned(), d("0.005"), d("0.002"))]
    );
    let e = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "SYMBOL_DESYNC");
    // Put right: in sync again, orders go.
    v.sim.set_position_quietly("BTCUSDT", d("0.502"));
    assert!(v.exec.reconcile().await.unwrap().desynced.is_empty());
    v.exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The exchange loses everything but the house's: the book is closed virtually
    // at the last fill price.
    v.sim.set_position_quietly("BTCUSDT", d("0.5"));
    let r = v.exec.reconcile().await.unwrap();
    assert_eq!(r.virtual_closes, 1, "{r:?}");
    assert!(ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap()
        .is_empty());
    let reason: String =
        sqlx::query_scalar("SELECT action FROM trade_executions WHERE type = 'VIRTUAL'")
            .fetch_one(&v.db.pool)
            .await
            .unwrap();
    assert_eq!(reason, "RECONCILE");
}

/// What a process that died mid-order leaves behind, then a new engine on the same
/// database: it adopts what the venue did, books each fill once, sends nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_new_engine_adopts_what_the_venue_did_and_sends_nothing_twice() {
    let v = venue().await;
    // 1. Written and sent; the process died before the reply and never heard the
    //    stream (the events reach no one).
    v.sim.stream_fault(StreamFault::Drop, Selector::Next(1));
    let written = orders::insert_submitted(
        &v.db.pool,
        &orders::OrderIds::from_random([1; 16]),
        &orders::NewOrder {
            sub_account_id: v.account.clone(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            kind: OrderKind::Market,
            quantity: d("0.002"),
            price: None,
            leverage: d("10"),
            reduce_only: false,
            origin: "MANUAL".into(),
            request_id: None,
            position_id: None,
            close_reason: None,
        },
        chrono::Utc::now().timestamp_millis(),
        None,
    )
    .await
    .unwrap();
    v.rest
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT".to_owned()),
                ("side", "BUY".to_owned()),
                ("type", "MARKET".to_owned()),
                ("quantity", "0.002".to_owned()),
                ("newClientOrderId", written.client_order_id.clone()),
            ],
        )
        .await
        .unwrap();
    // 2. Written, never sent.
    let never: String = sqlx::query_scalar(
        "INSERT INTO orders (sub_account_id, client_order_id, symbol, side, type, quantity, leverage, state)
         VALUES ($1::uuid, 'gs0000000000000000000000000000000a', 'BTCUSDT', 'BUY', 'MARKET', 0.002, 10, 'NEW')
         RETURNING client_order_id",
    )
    .bind(&v.account)
    .fetch_one(&v.db.pool)
    .await
    .unwrap();
    let venue_before = v.venue_orders_all().await;

    // The new engine: no stream, only the database and the venue.
    let (out, _events) = outbox("pms:", 100, 2);
    let fresh = Executor::start(
        ExecutionConfig {
            fill_debounce: Duration::ZERO,
            ..ExecutionConfig::default()
        },
        v.db.pool.clone(),
        v.rest.clone(),
        PriceChain::new(PriceChainConfig::default())
            .with_rest(reqwest::Client::new(), &v.sim.rest_url()),
        None,
        out,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    fresh.reconcile().await.unwrap();
    assert_eq!(
        v.order_state(&written.client_order_id).await,
        (OrderState::Filled, d("0.002"))
    );
    let row = orders::by_client_id(&v.db.pool, &never)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.order.state, row.order.reject_code.as_deref()),
        (OrderState::Rejected, Some("NOT_SENT"))
    );
    assert_eq!(v.executions().await, 1);
    assert_eq!(
        v.venue_orders_all().await,
        venue_before,
        "nothing sent again"
    );
    // Twice is once.
    fresh.reconcile().await.unwrap();
    assert_eq!(v.executions().await, 1);
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    assert_eq!(pos[0].position.quantity, d("0.002"));
}

/// The venue answers and fills an order while its row is still being written (held
/// up here by a lock on the account row, which the row's foreign key waits on): the
/// reply and the fill wait for the row, then the fill is booked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_comes_before_the_orders_row_is_booked_once_the_row_is_there() {
    let v = Arc::new(venue().await);
    let mut lock = v.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sub_accounts WHERE id = $1::uuid FOR UPDATE")
        .bind(&v.account)
        .execute(&mut *lock)
        .await
        .unwrap();
    let placing = {
        let v = v.clone();
        tokio::spawn(async move {
            v.exec
                .place(market(&v.account, OrderSide::Buy, "0.002"))
                .await
        })
    };
    // Filled on the venue, its trade on the stream, the row not written.
    simulators::testkit::wait_for("the venue's fill", Duration::from_secs(10), || {
        v.sim
            .stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!placing.is_finished(), "the reply waits for the row");
    lock.rollback().await.unwrap();
    let placed = placing.await.unwrap().unwrap();
    v.wait_state(
        &placed.client_order_id,
        OrderState::Filled,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(v.executions().await, 1);
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    assert_eq!(pos[0].position.quantity, d("0.002"));
}

/// A process that journaled an order and sent it, then stopped before its row was
/// written: the order exists only on the venue and in that process's journal. The
/// next reconciliation writes the row from the journal and adopts what the venue
/// says; without the journal it would see an orphan of ours and cancel it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_sent_whose_row_was_never_written_is_recovered_from_the_journal() {
    let v = venue().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "journal-{}",
        v.db.url().rsplit('/').next().unwrap()
    ));
    let scope = journal::scope_of(&v.db.pool);
    let order = orders::NewOrder {
        sub_account_id: v.account.clone(),
        symbol: "BTCUSDT".into(),
        side: OrderSide::Buy,
        kind: OrderKind::Limit,
        quantity: d("0.002"),
        price: Some(resting_bid(&v)),
        leverage: d("10"),
        reduce_only: false,
        origin: "API".into(),
        request_id: None,
        position_id: None,
        close_reason: None,
    };
    let ids = orders::OrderIds::from_random([0x5a; 16]);
    let sent_at = chrono::Utc::now().timestamp_millis();
    let stopped = journal::Journal::open(&dir, &scope, journal::JournalSync::Always).unwrap();
    stopped
        .append(&[journal::Entry::new(&ids, &order, sent_at)])
        .unwrap();
    v.rest
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT".to_owned()),
                ("side", "BUY".to_owned()),
                ("type", "LIMIT".to_owned()),
                ("timeInForce", "GTC".to_owned()),
                ("quantity", "0.002".to_owned()),
                ("price", order.price.unwrap().to_string()),
                ("newClientOrderId", ids.client_order_id.clone()),
            ],
        )
        .await
        .unwrap();
    // The process is gone: its file unlocked, its row never written.
    drop(stopped);
    assert!(orders::by_client_id(&v.db.pool, &ids.client_order_id)
        .await
        .unwrap()
        .is_none());

    let (out, _events) = outbox("pms:", 100, 2);
    let next = Executor::start(
        ExecutionConfig {
            fill_debounce: Duration::ZERO,
            journal_dir: dir.clone(),
            ..ExecutionConfig::default()
        },
        v.db.pool.clone(),
        v.rest.clone(),
        PriceChain::new(PriceChainConfig::default())
            .with_rest(reqwest::Client::new(), &v.sim.rest_url()),
        None,
        out,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let r = next.reconcile().await.unwrap();
    assert_eq!((r.orders_journaled, r.orphans_cancelled), (1, 0), "{r:?}");
    let row = orders::by_client_id(&v.db.pool, &ids.client_order_id)
        .await
        .unwrap()
        .expect("written from the journal");
    assert_eq!(row.id, ids.id);
    assert_eq!(row.order.state, OrderState::Submitted);
    assert!(row.order.venue_id.is_some(), "the venue's order adopted");
    assert_eq!(
        venue_open_orders(&v).await,
        vec![ids.client_order_id.clone()],
        "still working on the venue, not cancelled as an orphan"
    );
    assert_eq!(v.venue_orders_all().await, 1, "nothing sent again");
    // The stopped process's file is gone; a second round has nothing to replay.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(
        left.len(),
        1,
        "only the new executor's own journal: {left:?}"
    );
    assert_eq!(next.reconcile().await.unwrap().orders_journaled, 0);
    drop(next);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The soak: a thousand orders from four sub-accounts on two symbols with house
/// positions on both, about a fifth with a fault injected (ambiguous replies, requests
/// lost before the venue, dropped, duplicated, delayed and reordered stream events),
/// with closes, `close_all`, limit closes and resting limits cancelled mixed in; then
/// the invariants: every order final; the venue's orders exactly ours, each once, and
/// its fills exactly our fills; the venue's net position less the house the
/// sub-accounts' sum in each symbol; each fill booked once; every balance adding up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_a_thousand_orders_with_faults_leave_the_book_equal_to_the_venue() {
    let v = Arc::new(
        venue_with(BinanceSimConfig {
            hang: Duration::from_millis(1500),
            orders_per_10s: 100_000,
            orders_per_minute: 100_000,
            weight_limit: 1_000_000,
            ..BinanceSimConfig::default()
        })
        .await,
    );
    sqlx::query(
        "INSERT INTO risk_rules (is_global, max_notional_per_trade, max_total_exposure) VALUES (true, 1000000, 100000000)",
    )
    .execute(&v.db.pool)
    .await
    .unwrap();
    let mut accounts = vec![v.account.clone()];
    for _ in 0..3 {
        accounts.push(second_account(&v).await);
    }
    const ORDERS: usize = 1000;
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (t, account) in accounts.iter().cloned().enumerate() {
        let (v, placed) = (v.clone(), placed.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
            let mut next = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            for _ in 0..ORDERS / 4 {
                match next(40) {
                    0 => v
                        .sim
                        .order_fault(OrderFault::AcceptThenTimeout, Selector::Next(1)),
                    1 => v
                        .sim
                        .order_fault(OrderFault::AcceptThen503, Selector::Next(1)),
                    2 => v
                        .sim
                        .order_fault(OrderFault::AcceptThen1007, Selector::Next(1)),
                    3 => v
                        .sim
                        .order_fault(OrderFault::RejectBeforeEngine, Selector::Next(1)),
                    4 => v.sim.stream_fault(StreamFault::Drop, Selector::Next(1)),
                    5 => v
                        .sim
                        .stream_fault(StreamFault::Duplicate, Selector::Next(1)),
                    6 => v.sim.stream_fault(StreamFault::Reorder, Selector::Next(1)),
                    7 => v.sim.stream_fault(
                        StreamFault::Delay(Duration::from_millis(300)),
                        Selector::Next(1),
                    ),
                    _ => {}
                }
                let (symbol, q) = if next(2) == 0 {
                    ("BTCUSDT", "0.002")
                } else {
                    ("ETHUSDT", "0.05")
                };
                let side = if next(2) == 0 {
                    OrderSide::Buy
                } else {
                    OrderSide::Sell
                };
                let open = ledger::open_positions(&v.db.pool, Some(&account))
                    .await
                    .unwrap();
                let held = open.iter().find(|p| p.symbol == symbol);
                let roll = next(20);
                match (roll, held) {
                    // A close of the position, and sometimes a second one at once
                    // (answered from the first).
                    (0 | 1, Some(p)) => {
                        // A late fill (a delayed event) may have closed it meanwhile.
                        match v.exec.close(&account, &p.id).await {
                            Ok(_)
                            | Err(CloseError::PositionNotFound)
                            | Err(CloseError::Place(PlaceError::Refused(_))) => {}
                            Err(e) => panic!("a close: {e}"),
                        }
                        if next(3) == 0 {
                            // Answered from the first close's order; a position closed
                            // virtually (nothing on the venue) is simply gone.
                            match v.exec.close(&account, &p.id).await {
                                Ok(_)
                                | Err(CloseError::PositionNotFound)
                                | Err(CloseError::Place(PlaceError::Refused(_))) => {}
                                Err(e) => panic!("a second close: {e}"),
                            }
                        }
                    }
                    (2, Some(_)) => {
                        // Every position tried; one a late fill changed under it may
                        // be refused (nothing sent).
                        match v.exec.close_all(&account).await {
                            Ok(_) | Err(CloseError::Place(PlaceError::Refused(_))) => {}
                            Err(e) => panic!("close all: {e}"),
                        }
                    }
                    // A limit close far from the market: rests, then is cancelled
                    // (or goes with its position).
                    (3, Some(p)) => {
                        let mark = v.sim.mark(symbol).unwrap();
                        let far = if p.position.side == Side::Long {
                            mark * d("1.04")
                        } else {
                            mark * d("0.96")
                        };
                        let far = far.round_dp(if symbol == "BTCUSDT" { 1 } else { 2 });
                        if let Ok(o) = v.exec.limit_close(&account, &p.id, far).await {
                            let _ = v.exec.cancel(&account, &o.id).await;
                        }
                    }
                    // A resting limit, cancelled.
                    (4, _) => {
                        let mark = v.sim.mark(symbol).unwrap();
                        let px =
                            (mark * d("0.96")).round_dp(if symbol == "BTCUSDT" { 1 } else { 2 });
                        let mut o = limit(&account, OrderSide::Buy, q, px);
                        o.symbol = symbol.into();
                        if let Ok(o) = v.exec.place(o).await {
                            let _ = v.exec.cancel(&account, &o.id).await;
                        }
                    }
                    _ => {
                        let mut o = market(&account, side, q);
                        o.symbol = symbol.into();
                        v.exec.place(o).await.expect("placed (or unknown)");
                    }
                }
                placed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(placed.load(std::sync::atomic::Ordering::Relaxed), ORDERS);
    // Let the resolvers and the delayed events finish, then reconcile what the
    // dropped events left SUBMITTED.
    tokio::time::sleep(Duration::from_secs(8)).await;
    v.exec.reconcile().await.unwrap();
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE state NOT IN ('FILLED', 'REJECTED', 'CANCELED')",
    )
    .fetch_one(&v.db.pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "every order final");

    let mut venue_ids = Vec::new();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let body = v
            .rest
            .signed(
                Method::GET,
                "/fapi/v1/allOrders",
                &[("symbol", symbol.to_owned()), ("limit", "1000".to_owned())],
            )
            .await
            .unwrap();
        let all: Vec<Value> = serde_json::from_str(&body).unwrap();
        venue_ids.extend(all.iter().map(|o| {
            let filled = o["executedQty"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap();
            (
                o["clientOrderId"].as_str().unwrap().to_owned(),
                filled.normalize().to_string(),
            )
        }));
    }
    venue_ids.sort();
    let ours: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT client_order_id, filled FROM orders WHERE state <> 'REJECTED' ORDER BY 1",
    )
    .fetch_all(&v.db.pool)
    .await
    .unwrap();
    let mut ours: Vec<(String, String)> = ours
        .into_iter()
        .map(|(c, f)| (c, f.normalize().to_string()))
        .collect();
    ours.sort();
    let only_venue: Vec<_> = venue_ids.iter().filter(|o| !ours.contains(o)).collect();
    let only_ours: Vec<_> = ours.iter().filter(|o| !venue_ids.contains(o)).collect();
    assert!(
        only_venue.is_empty() && only_ours.is_empty() && venue_ids.len() == ours.len(),
        "the venue's orders are exactly ours, each once, each filled as we booked it: \
         only on the venue {only_venue:?}, only ours {only_ours:?}"
    );
    let filled_orders = ours.iter().filter(|(_, f)| f != "0").count();
    let cancelled: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE state = 'CANCELED'")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();
    let rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE state = 'REJECTED'")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();

    let (rows, _) = v.rest.position_risk().await.unwrap();
    // The house: its configured positions and what it took on (reduce-only closes
    // that raced another fill of the same account: past the position, the house's).
    let taken = ledger::house_taken(&v.db.pool).await.unwrap();
    // What reconciliation and virtual closes did, for a failure's reader.
    let actions: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT kind, symbol, detail::text FROM reconciliation_log ORDER BY id")
            .fetch_all(&v.db.pool)
            .await
            .unwrap();
    let virtuals: Vec<(String, String, Decimal, String)> = sqlx::query_as(
        "SELECT symbol, side, quantity, action FROM trade_executions WHERE type = 'VIRTUAL'",
    )
    .fetch_all(&v.db.pool)
    .await
    .unwrap();
    eprintln!(
        "soak: house took {taken:?}; reconciliation {actions:?}; virtual closes {virtuals:?}"
    );
    for (symbol, configured) in [("BTCUSDT", d("0.5")), ("ETHUSDT", d("-4"))] {
        let house = configured + taken.get(symbol).copied().unwrap_or_default();
        let venue: Decimal = rows
            .iter()
            .filter(|r| r.symbol == symbol)
            .map(|r| r.amount)
            .sum();
        let book = ledger::book_net(&v.db.pool, symbol).await.unwrap();
        assert_eq!(
            venue - house,
            book,
            "{symbol}: venue net less house = Σ virtual"
        );
    }
    let filled: Decimal = sqlx::query_scalar("SELECT sum(filled) FROM orders")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();
    let booked: Decimal = sqlx::query_scalar(
        "SELECT sum(quantity) FROM trade_executions WHERE exchange_trade_id IS NOT NULL",
    )
    .fetch_one(&v.db.pool)
    .await
    .unwrap();
    // A reduce-only fill past its position is the house's (booked there, once).
    let to_house: Decimal =
        sqlx::query_scalar("SELECT coalesce(sum(abs(quantity)), 0) FROM house_log")
            .fetch_one(&v.db.pool)
            .await
            .unwrap();
    assert_eq!(filled, booked + to_house, "each fill booked once");
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sub_accounts s
          WHERE s.initial_balance + coalesce((SELECT sum(change_amount + absorbed) FROM balance_logs l
                                               WHERE l.sub_account_id = s.id), 0) <> s.current_balance",
    )
    .fetch_one(&v.db.pool)
    .await
    .unwrap();
    assert_eq!(broken, 0, "every balance adds up");
    let stats = v.exec.stats();
    eprintln!(
        "soak: {} orders ({} filled, {} cancelled, {} rejected), {} ambiguous ({} resolved), {} duplicate events ignored",
        ours.len() as i64 + rejected,
        filled_orders,
        cancelled,
        rejected,
        stats.ambiguous.load(std::sync::atomic::Ordering::Relaxed),
        stats.resolved.load(std::sync::atomic::Ordering::Relaxed),
        stats.duplicates.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A 429 stops the engine's requests until the venue's pause is over: an order
/// placed meanwhile is refused locally (nothing sent), never sent into the limit.
/// (The engine keeps the venue's order limit itself; the 429 comes from another
/// client on the shared account spending the budget behind its back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_no_order_is_sent_during_the_pause() {
    use std::sync::atomic::Ordering::Relaxed;
    // 3 per 10 s (2 for orders that open, on our side).
    let v = venue_with(BinanceSimConfig {
        orders_per_10s: 3,
        ..BinanceSimConfig::default()
    })
    .await;
    simulators::testkit::wait_for("a streamed mark", Duration::from_secs(10), || {
        v.stream.get("BTCUSDT").is_some_and(|e| e.mark.is_some())
    })
    .await;
    let first = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    // Accepted; already filled if the stream told first (a market order fills at once).
    assert!(
        matches!(
            first.order.state,
            OrderState::Submitted | OrderState::Filled
        ),
        "{:?}",
        first.order
    );
    // Another client on the account (its own connection and counts) takes the
    // window's last two orders.
    let other = Rest::new(
        &v.sim.rest_url(),
        Keys {
            api_key: Secret::new(v.sim.config().api_key.clone()),
            secret: Secret::new(v.sim.config().secret.clone()),
        },
        Duration::from_secs(1),
    )
    .unwrap();
    for _ in 0..2 {
        other
            .signed(
                Method::POST,
                "/fapi/v1/order",
                &[
                    ("symbol", "BTCUSDT".to_owned()),
                    ("side", "BUY".to_owned()),
                    ("type", "MARKET".to_owned()),
                    ("quantity", "0.002".to_owned()),
                ],
            )
            .await
            .unwrap();
    }
    // Over the venue's order count: 429, refused before its engine.
    let second = v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
        .unwrap();
    assert_eq!(
        second.order.state,
        OrderState::Rejected,
        "{:?}",
        second.order
    );
    let requests = v.sim.stats().rest_requests.load(Relaxed);
    // During the pause: refused here, not sent (by the pause, or already by the
    // order budget, which the refusal taught the window is full).
    match v
        .exec
        .place(market(&v.account, OrderSide::Buy, "0.002"))
        .await
    {
        Ok(third) => assert_eq!(
            (third.order.state, third.order.reject_code.as_deref()),
            (OrderState::Rejected, Some("NOT_CONNECTED"))
        ),
        Err(e) => assert_eq!(e.code(), "ORDER_RATE_LIMITED", "{e}"),
    }
    assert_eq!(
        v.sim.stats().rest_requests.load(Relaxed),
        requests,
        "no request during the pause"
    );
    // The venue's own count: ours and the other client's.
    assert_eq!(v.sim.stats().orders.load(Relaxed), 3);
}

fn scale(v: &Venue, account: &str, n: usize) -> Vec<PlaceOrder> {
    let mark = v.sim.mark("BTCUSDT").unwrap();
    (0..n)
        .map(|k| {
            let px = (mark * (d("0.97") - Decimal::new(k as i64, 3))).round_dp(1);
            limit(account, OrderSide::Buy, "0.002", px)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_goes_in_venue_batches_of_five_and_a_failed_batch_leaves_its_orders_unknown() {
    let v = venue().await;
    sqlx::query("INSERT INTO risk_rules (is_global, max_total_exposure) VALUES (true, 100000)")
        .execute(&v.db.pool)
        .await
        .unwrap();
    let rows = v.exec.place_batch(scale(&v, &v.account, 7)).await.unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows
        .iter()
        .all(|r| r.order.state == OrderState::Submitted && r.order.venue_id.is_some()));
    assert_eq!(venue_open_orders(&v).await.len(), 7);
    // The whole batch request hangs past the client's timeout: every element is
    // unknown, and each is resolved by asking, none resent.
    v.sim
        .order_fault(OrderFault::AcceptThenTimeout, Selector::Next(1));
    let rows = v.exec.place_batch(scale(&v, &v.account, 3)).await.unwrap();
    assert!(
        rows.iter().all(|r| r.order.state == OrderState::Unknown),
        "{rows:?}"
    );
    for r in &rows {
        v.wait_state(
            &r.client_order_id,
            OrderState::Submitted,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(v.venue_orders(&r.client_order_id).await, 1);
    }
    assert_eq!(venue_open_orders(&v).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_over_the_limits_in_sum_is_refused_whole_before_anything_is_sent() {
    let v = venue().await;
    // Each leg ~116 USDT is within the 200 per trade; five add up past the 500 exposure.
    let e = v
        .exec
        .place_batch(scale(&v, &v.account, 5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "MAX_EXPOSURE_EXCEEDED", "{e}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(venue_open_orders(&v).await.is_empty());
    let other = second_account(&v).await;
    let mut mixed = scale(&v, &v.account, 2);
    mixed[1].sub_account_id = other;
    assert_eq!(
        v.exec.place_batch(mixed).await.unwrap_err().code(),
        "INVALID_ORDER"
    );
    assert_eq!(
        v.exec.place_batch(Vec::new()).await.unwrap_err().code(),
        "INVALID_ORDER"
    );
}

/// Two engines never reconcile at once: a lock held by another owner skips the
/// round and is left alone; a free one is taken and given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_takes_the_redis_lock_and_leaves_anothers_alone() {
    use engine::reconcile::ReconcileLock;
    let v = venue().await;
    let prefix = simulators::testkit::unique_prefix("reconcile-lock");
    let key = format!("{prefix}lock:reconcile");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis (README set-up)");
    let (out, _events) = outbox("pms:", 100, 3);
    let locked = Executor::start(
        ExecutionConfig {
            house: [
                ("BTCUSDT", "0.5"),
                ("ETHUSDT", "-4"),
                ("BTCUSDT_261225", "-0.2"),
            ]
            .into_iter()
            .map(|(s, q)| (s.to_owned(), d(q)))
            .collect(),
            lock: Some(ReconcileLock {
                client: client.clone(),
                key: key.clone(),
                ttl: Duration::from_secs(30),
            }),
            ..ExecutionConfig::default()
        },
        v.db.pool.clone(),
        v.rest.clone(),
        PriceChain::new(PriceChainConfig::default())
            .with_rest(reqwest::Client::new(), &v.sim.rest_url()),
        None,
        out,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    redis::cmd("SET")
        .arg(&key)
        .arg("another-engine")
        .arg("PX")
        .arg(30_000)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let r = locked.reconcile().await.unwrap();
    assert!(r.skipped, "{r:?}");
    let holder: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        holder.as_deref(),
        Some("another-engine"),
        "not ours to release"
    );
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let r = locked.reconcile().await.unwrap();
    assert!(!r.skipped, "{r:?}");
    let holder: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(holder, None, "released after the round");
}

/// A limit partly filled on arrival, then cancelled: the filled part is booked once,
/// the order ends CANCELED with what it filled, the rest never fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_fill_then_a_cancel_books_the_filled_part_once() {
    let v = venue().await;
    v.sim.pause_market(true);
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let (&best, _) = asks.iter().next().unwrap();
    // Only 0.001 for sale at the best ask: a 0.003 buy there fills a third.
    assert!(v.sim.set_level("BTCUSDT", false, best, d("0.001")));
    let o = v
        .exec
        .place(limit(&v.account, OrderSide::Buy, "0.003", best))
        .await
        .unwrap();
    v.wait_state(
        &o.client_order_id,
        OrderState::PartiallyFilled,
        Duration::from_secs(10),
    )
    .await;
    let cancelled = v.exec.cancel(&v.account, &o.id).await.unwrap();
    assert_eq!(cancelled.order.state, OrderState::Canceled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        v.order_state(&o.client_order_id).await,
        (OrderState::Canceled, d("0.001"))
    );
    assert_eq!(v.executions().await, 1);
    let pos = ledger::open_positions(&v.db.pool, Some(&v.account))
        .await
        .unwrap();
    assert_eq!(pos[0].position.quantity, d("0.001"));
}

/// The venue fills a resting order while the engine has not heard yet (its stream
/// events are late) and the account cancels: the venue refuses the cancel, the engine
/// reads the venue's record instead of calling the order cancelled, and when the late
/// event comes the fill is not booked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_fill_finds_it_filled_and_books_it_once() {
    let v = venue().await;
    v.sim.pause_market(true);
    let (bids, _, _) = v.sim.book("BTCUSDT").unwrap();
    let (&best_bid, _) = bids.iter().next_back().unwrap();
    v.sim.stream_fault(
        StreamFault::Delay(Duration::from_secs(6)),
        Selector::Next(1),
    );
    let o = v
        .exec
        .place(limit(&v.account, OrderSide::Buy, "0.002", best_bid))
        .await
        .unwrap();
    assert_eq!(o.order.state, OrderState::Submitted);
    // The market trades down through it; the venue fills it.
    v.sim.move_price("BTCUSDT", -50);
    v.sim.pause_market(false);
    let q = [
        ("symbol", "BTCUSDT".to_owned()),
        ("origClientOrderId", o.client_order_id.clone()),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = v
            .rest
            .signed(Method::GET, "/fapi/v1/order", &q)
            .await
            .unwrap();
        let status: Value = serde_json::from_str(&body).unwrap();
        if status["status"] == "FILLED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the venue never filled it: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v.sim.pause_market(true);
    assert_eq!(
        v.order_state(&o.client_order_id).await.0,
        OrderState::Submitted,
        "not heard yet"
    );
    let after = v.exec.cancel(&v.account, &o.id).await.unwrap();
    assert_eq!(after.order.state, OrderState::Filled, "{after:?}");
    // The late stream events arrive: nothing more is booked.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    assert_eq!(
        v.order_state(&o.client_order_id).await,
        (OrderState::Filled, d("0.002"))
    );
    assert_eq!(v.executions().await, 1, "booked once");
}

/// The same fill told twice at once (the stream and a query): the second waits for
/// the order's lock while the first books the fill. It must then see that trade as
/// booked — counted once in the order's `filled`, booked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_fill_told_twice_at_once_counts_once() {
    use database::ledger::{Booked, FillBooking};
    use trading::order::{Execution, OrderEvent};
    let v = venue().await;
    v.sim.stream_fault(StreamFault::Drop, Selector::Next(1));
    let px = resting_bid(&v);
    let o = v
        .exec
        .place(limit(&v.account, OrderSide::Buy, "0.002", px))
        .await
        .unwrap();
    let fill = Execution {
        trade_id: "777".into(),
        quantity: d("0.002"),
        price: px,
        fee: Decimal::ZERO,
    };
    // The first teller holds the order's lock...
    let mut tx = v.db.pool.begin().await.unwrap();
    let mut row = orders::lock_by_client_id(&mut tx, &o.client_order_id)
        .await
        .unwrap()
        .unwrap();
    // ...while the second arrives and waits for it.
    let exec = v.exec.clone();
    let (cid, second_fill) = (o.client_order_id.clone(), fill.clone());
    let second = tokio::spawn(async move {
        exec.apply_event(&cid, OrderEvent::Fill(second_fill), orders::Source::Stream)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The first books the fill and commits.
    trading::order::apply(&mut row.order, OrderEvent::Fill(fill.clone())).unwrap();
    let booked = ledger::book_fill_in(
        &mut tx,
        &FillBooking {
            sub_account_id: v.account.clone(),
            symbol: "BTCUSDT".into(),
            fill: trading::position::Fill {
                side: OrderSide::Buy,
                quantity: fill.quantity,
                price: px,
                leverage: d("10"),
            },
            fee: Decimal::ZERO,
            exchange_order_id: row.order.venue_id.clone(),
            client_order_id: Some(o.client_order_id.clone()),
            exchange_trade_id: Some("777".into()),
            order_type: "LIMIT".into(),
            origin: "MANUAL".into(),
            close_action: "CLOSE".into(),
            babysitter_excluded: false,
            closes: None,
            reduce_only: false,
        },
    )
    .await
    .unwrap();
    assert!(matches!(booked, Booked::Applied(_)));
    orders::record(
        &mut tx,
        &row.id,
        &row.order,
        "Fill",
        orders::Source::Reconcile,
        serde_json::json!({}),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(
        v.order_state(&o.client_order_id).await,
        (OrderState::Filled, d("0.002")),
        "counted once"
    );
    assert_eq!(v.executions().await, 1, "booked once");
}

/// The venue's new-order limit kept on our side: an order over it is refused before
/// it is written or sent (the venue would refuse it, -1015), with when to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_over_the_venues_order_limit_are_refused_before_they_are_written() {
    // The venue states its limits in exchangeInfo; the executor reads them there.
    // 3 per window: 2 for orders that open, the third kept for orders that reduce.
    let v = venue_with(BinanceSimConfig {
        hang: Duration::from_secs(3),
        orders_per_10s: 3,
        orders_per_minute: 3,
        ..BinanceSimConfig::default()
    })
    .await;
    // Not across a minute boundary (both windows would start again).
    let in_minute = v.sim.server_time() % 60_000;
    if in_minute > 55_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - in_minute + 200) as u64)).await;
    }
    let bid = resting_bid(&v);
    for _ in 0..2 {
        v.exec
            .place(limit(&v.account, OrderSide::Buy, "0.002", bid))
            .await
            .unwrap();
    }
    let e = v
        .exec
        .place(limit(&v.account, OrderSide::Buy, "0.002", bid))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ORDER_RATE_LIMITED", "{e}");
    let PlaceError::RateLimited(b) = e else {
        panic!("not a rate limit")
    };
    assert!(b.retry_after_ms > 0 && b.retry_after_ms <= 60_000, "{b:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&v.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2, "the refused order was not written");
    assert_eq!(
        v.sim
            .stats()
            .orders
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "nor sent"
    );
}
