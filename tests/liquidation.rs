//! Liquidation and ADL end to end, as the gateway sees them: an account trades through
//! the command bus on the built-in Binance simulator, the market is moved until the
//! account's margin ratio crosses its threshold, and the engine acts on its own —
//! the venue's orders, the book, the balance logs and the events are checked.

mod common;

use std::time::Duration;

use common::bus::*;
use database::ledger::{self, AccountKind, NewAccount};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trading::command::RulesPatch;
use trading::evaluate::LiquidationMode;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

const BALANCE: &str = "40";
const QUANTITY: &str = "0.01";

impl Engine {
    /// A fresh account of USER's with 40 USDT in `mode`, allowed a 0.01 BTC trade,
    /// becomes the engine's account; its long 0.01 BTC at 20x opened (the market's
    /// walk paused first). The entry price.
    async fn long_on_small_account(&mut self, mode: LiquidationMode) -> Decimal {
        self.long_on(mode, d(BALANCE), d("0.005")).await
    }

    /// [`Engine::long_on_small_account`] with `balance` and maintenance `rate`.
    async fn long_on(&mut self, mode: LiquidationMode, balance: Decimal, rate: Decimal) -> Decimal {
        let id = ledger::create_account(
            &self.db.pool,
            &NewAccount {
                name: "thin".into(),
                kind: AccountKind::User,
                user_id: Some(USER.into()),
                initial_balance: balance,
                liquidation_mode: mode,
                maintenance_rate: rate,
            },
        )
        .await
        .unwrap()
        .id;
        ledger::set_rules(
            &self.db.pool,
            Some(&id),
            &RulesPatch {
                max_notional_per_trade: Some(d("10000")),
                max_total_exposure: Some(d("10000")),
                ..RulesPatch::default()
            },
        )
        .await
        .unwrap();
        self.account = id;
        self.sim().pause_market(true);
        let body =
            json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": QUANTITY, "leverage": 20});
        let r = self.send("trade", self.envelope("trade", body)).await;
        assert_eq!(r["httpStatus"], 201, "{r}");
        r["body"]["position"]["entryPrice"]
            .as_f64()
            .map(|p| Decimal::try_from(p).unwrap())
            .unwrap_or_else(|| panic!("no entry price: {r}"))
    }

    /// Moves BTCUSDT's book so that the account (its balance B, after the opening
    /// fee; long 0.01 at `entry`) is valued at margin ratio `ratio`:
    /// mark = entry + (maintenance / ratio − B) / q.
    async fn move_to_ratio(&self, entry: Decimal, ratio: &str) {
        let balance: Decimal = self
            .scalar("SELECT current_balance FROM sub_accounts WHERE id = $1::uuid")
            .await;
        self.move_to(entry, d(QUANTITY), balance, d("0.005"), d(ratio))
            .await;
    }

    /// Moves BTCUSDT's book so that a long `q` at `entry` on `balance`, maintenance
    /// `rate` of its entry notional, is valued at margin ratio `ratio`.
    async fn move_to(
        &self,
        entry: Decimal,
        q: Decimal,
        balance: Decimal,
        rate: Decimal,
        ratio: Decimal,
    ) {
        let maintenance = q * entry * rate;
        let mark = entry + (maintenance / ratio - balance) / q;
        let (bids, asks, _) = self.sim().book("BTCUSDT").unwrap();
        let (&bid, _) = bids.iter().next_back().unwrap();
        let (&ask, _) = asks.iter().next().unwrap();
        let mid = (bid + ask) / d("2");
        let ticks = ((mark - mid) / d("0.1")).round();
        assert!(self.sim().move_price("BTCUSDT", ticks.try_into().unwrap()));
    }

    /// Waits (≤ 30 s) until the events log holds one of `kind` for this account.
    async fn event(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .events()
                .await
                .into_iter()
                .find(|(k, v)| k == kind && v["subAccountId"] == self.account.as_str());
            if let Some((_, v)) = found {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {kind} event for the account"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the house took on in BTCUSDT (`house_log`), for `reason` or all of it.
    async fn house_btc(&self, reason: Option<&str>) -> Decimal {
        sqlx::query_scalar(
            "SELECT coalesce(sum(quantity), 0) FROM house_log
              WHERE symbol = 'BTCUSDT' AND ($1::text IS NULL OR reason = $1)",
        )
        .bind(reason)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .bind(&self.account)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_two_closes_thirty_percent_of_the_position_once_as_adl() {
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::Adl30).await;
    // Below the warning band first: nothing is closed.
    e.move_to_ratio(entry, "0.5").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM orders WHERE sub_account_id = $1::uuid AND reduce_only"
        )
        .await,
        0
    );
    e.move_to_ratio(entry, "0.925").await;
    let adl = e.event("adl_triggered").await;
    assert_eq!(adl["tier"], 2, "{adl}");
    assert_eq!(adl["symbol"], "BTCUSDT", "{adl}");
    let reduced = e.event("position_reduced").await;
    assert_eq!(reduced["reason"], "ADL_TIER2", "{reduced}");
    assert_eq!(reduced["closedQty"], 0.003, "{reduced}");
    assert_eq!(reduced["remainingQty"], 0.007, "{reduced}");
    // Valued again after the step, the account is below T: one ADL order, however
    // often the loop valued it meanwhile.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (origin, q, state): (String, Decimal, String) = sqlx::query_as(
        "SELECT origin, quantity, state FROM orders
          WHERE sub_account_id = $1::uuid AND reduce_only",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (origin.as_str(), q, state.as_str()),
        ("ADL_TIER2", d("0.003"), "FILLED")
    );
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM balance_logs WHERE sub_account_id = $1::uuid AND reason = 'ADL'"
        )
        .await,
        1
    );
    assert_eq!(
        e.scalar::<Decimal>("SELECT quantity FROM virtual_positions WHERE sub_account_id = $1::uuid AND status = 'OPEN'")
            .await,
        d("0.007")
    );
    assert_eq!(
        e.venue("BTCUSDT"),
        d("0.507"),
        "the house's 0.5 and the rest"
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_close_account_at_its_threshold_is_closed_whole_and_liquidated() {
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::InstantClose).await;
    e.move_to_ratio(entry, "0.925").await;
    let full = e.event("full_liquidation").await;
    assert_eq!(full["mode"], "INSTANT_CLOSE", "{full}");
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "LIQUIDATE", "{closed}");
    assert_eq!(
        e.count_until(
            &format!(
                "SELECT count(*) FROM virtual_positions WHERE sub_account_id = '{}' AND status = 'OPEN'",
                e.account
            ),
            0
        )
        .await,
        0
    );
    let status: String = e
        .scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
        .await;
    assert_eq!(status, "LIQUIDATED");
    let (origin, q): (String, Decimal) = sqlx::query_as(
        "SELECT origin, quantity FROM orders WHERE sub_account_id = $1::uuid AND reduce_only",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!((origin.as_str(), q), ("LIQUIDATION", d("0.01")));
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM balance_logs WHERE sub_account_id = $1::uuid AND reason = 'LIQUIDATION'")
            .await,
        1
    );
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    // The account's margin is published zeroed after it.
    let events = e.events().await;
    let last_margin = events
        .iter()
        .rev()
        .find(|(k, v)| k == "margin_update" && v["subAccountId"] == e.account.as_str())
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(last_margin["positionCount"], 0, "{last_margin}");
    assert_eq!(last_margin["totalExposure"], 0, "{last_margin}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_account_moves_its_position_into_the_house_without_a_venue_order() {
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::Takeover).await;
    e.move_to_ratio(entry, "0.925").await;
    let full = e.event("full_liquidation").await;
    assert_eq!(full["mode"], "VIRTUAL_LIQ", "{full}");
    let taken = e.event("position_takeover").await;
    assert_eq!(taken["symbol"], "BTCUSDT", "{taken}");
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "TAKEOVER", "{closed}");
    let (status, by): (String, Option<String>) = sqlx::query_as(
        "SELECT status, taken_over_by FROM virtual_positions WHERE sub_account_id = $1::uuid",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), by.as_deref()),
        ("TAKEN_OVER", Some("RISK_ENGINE"))
    );
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM orders WHERE sub_account_id = $1::uuid AND reduce_only"
        )
        .await,
        0,
        "no venue order"
    );
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM balance_logs WHERE sub_account_id = $1::uuid AND reason = 'ADMIN_TAKEOVER'")
            .await,
        1
    );
    let house = e.house_btc(Some("TAKEOVER")).await;
    assert_eq!(house, d("0.01"));
    // The venue still holds it, now as the house's.
    assert_eq!(e.venue("BTCUSDT"), d("0.51"));
    e.finish().await;
}

/// A 503 before the venue's engine is an unknown outcome, not a refusal: the position
/// is not closed in the book on it; the order is resolved (never executed), and the
/// next look closes the position on the venue — once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_close_with_an_unknown_outcome_is_resolved_and_sent_again_once() {
    use simulators::binance::failures::{OrderFault, Selector};
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::InstantClose).await;
    e.sim()
        .order_fault(OrderFault::RejectBeforeEngine, Selector::Next(1));
    e.move_to_ratio(entry, "0.925").await;
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "LIQUIDATE", "{closed}");
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM orders WHERE sub_account_id = $1::uuid AND reduce_only ORDER BY created_at",
    )
    .bind(&e.account)
    .fetch_all(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(states, ["REJECTED", "FILLED"]);
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM balance_logs WHERE sub_account_id = $1::uuid AND reason = 'LIQUIDATION'")
            .await,
        1
    );
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM trade_executions WHERE sub_account_id = $1::uuid AND action = 'LIQUIDATE'")
            .await,
        1
    );
    let status: String = e
        .scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
        .await;
    assert_eq!(status, "LIQUIDATED");
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_takeover_moves_one_position_into_the_house_once() {
    let mut e = engine().await;
    let body = json!({"symbol": "BTCUSDT", "side": "SHORT", "quantity": "0.002", "leverage": 10});
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let orders_before = e.orders().await;
    let r = e.admin("admin_takeover", json!({"positionId": pos})).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(r["body"]["side"], "SHORT", "{r}");
    assert_eq!(r["body"]["quantity"], 0.002, "{r}");
    // Not an admin: refused before anything.
    let again = e
        .send(
            "admin_takeover",
            e.envelope("admin_takeover", json!({"positionId": pos})),
        )
        .await;
    assert_eq!(again["httpStatus"], 403, "{again}");
    let again = e.admin("admin_takeover", json!({"positionId": pos})).await;
    assert_eq!(again["httpStatus"], 404, "{again}");
    assert_eq!(again["code"], "POSITION_NOT_FOUND", "{again}");
    assert_eq!(e.orders().await, orders_before, "no venue order");
    let status: String = e
        .scalar("SELECT status FROM virtual_positions WHERE sub_account_id = $1::uuid")
        .await;
    assert_eq!(status, "TAKEN_OVER");
    let account: String = e
        .scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
        .await;
    assert_eq!(
        account, "ACTIVE",
        "one position taken, the account trades on"
    );
    let house = e.house_btc(Some("TAKEOVER")).await;
    assert_eq!(house, d("-0.002"));
    assert_eq!(
        e.venue("BTCUSDT"),
        d("0.498"),
        "the venue holds it, as the house's"
    );
    e.finish().await;
}

/// A manual close whose fill is on its way when the account crosses its threshold:
/// the liquidation finds the position's close in flight and sends none of its own —
/// one close order, one close fill, one balance change for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_close_racing_a_liquidation_closes_the_position_once() {
    use simulators::binance::failures::{Selector, StreamFault};
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::InstantClose).await;
    let pos: String = e
        .scalar("SELECT id::text FROM virtual_positions WHERE sub_account_id = $1::uuid AND status = 'OPEN'")
        .await;
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(1500)),
        Selector::Next(1),
    );
    let close = e.envelope("close", json!({"positionId": pos}));
    e.push("close", &close).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    e.move_to_ratio(entry, "0.925").await;
    let r = e.result(close["requestId"].as_str().unwrap()).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let full = e.event("full_liquidation").await;
    assert_eq!(full["mode"], "INSTANT_CLOSE", "{full}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM orders WHERE sub_account_id = $1::uuid AND reduce_only"
        )
        .await,
        1,
        "one close order"
    );
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM trade_executions WHERE sub_account_id = $1::uuid AND action <> 'OPEN'")
            .await,
        1,
        "one close fill"
    );
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM balance_logs WHERE sub_account_id = $1::uuid AND reason IN ('TRADE_PNL', 'LIQUIDATION')")
            .await,
        1,
        "one balance change for it"
    );
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    e.finish().await;
}

/// The venue liquidates the shared account's BTC long itself (`autoclose-…`): the
/// sub-account's share of it is booked as a LIQUIDATE fill at the venue's price, the
/// rest was the house's, the operator is told, and the venue, the book and the house
/// agree afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_venue_liquidating_the_real_account_is_shared_out_and_the_rest_is_the_houses() {
    let mut e = engine().await;
    let body = json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.003", "leverage": 10});
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(e.venue("BTCUSDT"), d("0.503"));
    assert!(e.sim().force_close("BTCUSDT", "BOTH", false));
    let alarm = loop {
        let found = e
            .events()
            .await
            .into_iter()
            .find(|(k, _)| k == "exchange_forced_close");
        if let Some((_, v)) = found {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alarm["kind"], "liquidation", "{alarm}");
    assert_eq!(alarm["quantity"], 0.503, "{alarm}");
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "LIQUIDATE", "{closed}");
    assert_eq!(e.venue("BTCUSDT"), d("0"));
    let (action, q): (String, Decimal) = sqlx::query_as(
        "SELECT action, quantity FROM trade_executions
          WHERE sub_account_id = $1::uuid AND action <> 'OPEN'",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!((action.as_str(), q), ("LIQUIDATE", d("0.003")));
    let house = e.house_btc(Some("VENUE_FORCED_CLOSE")).await;
    assert_eq!(house, d("-0.5"), "the house's 0.5 went with it");
    // Reconciliation finds the symbol in sync: venue 0 = book 0 + house (0.5 − 0.5).
    let report = e.app.executor.get().unwrap().reconcile().await.unwrap();
    assert!(report.desynced.is_empty(), "{report:?}");
    e.finish().await;
}

/// A liquidation stopped half-way — the account already marked LIQUIDATED, a position
/// still open (a process killed between the two) — is finished on the next look
/// whatever the ratio now, once: one forced order, the position closed as LIQUIDATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liquidation_stopped_half_way_is_finished_once() {
    let mut e = engine().await;
    let body = json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.002", "leverage": 10});
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    // What a stop right after the mark leaves behind (the account is far from its
    // threshold: 10 000 USDT against 0.002 BTC).
    sqlx::query("UPDATE sub_accounts SET status = 'LIQUIDATED' WHERE id = $1::uuid")
        .bind(&e.account)
        .execute(&e.db.pool)
        .await
        .unwrap();
    // Any write to the account has the engine read it again.
    let r = e
        .admin(
            "account_update",
            json!({"subAccountId": e.account, "name": "renamed"}),
        )
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "LIQUIDATE", "{closed}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM orders WHERE sub_account_id = $1::uuid AND reduce_only"
        )
        .await,
        1
    );
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM virtual_positions WHERE sub_account_id = $1::uuid AND status = 'OPEN'")
            .await,
        0
    );
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    e.finish().await;
}

/// The venue cannot be asked (its request budget is used up: every request gets 429
/// and the client pauses) when an INSTANT_CLOSE account crosses its threshold: nothing
/// is sent, the position is closed in the book at the mark as LIQUIDATE, and the leg
/// the venue still holds becomes the house's — so the venue, the book and the house
/// still agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_close_the_venue_cannot_take_is_closed_at_the_mark_into_the_house() {
    use simulators::binance::Fault;
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::InstantClose).await;
    let pos: String = e
        .scalar("SELECT id::text FROM virtual_positions WHERE sub_account_id = $1::uuid AND status = 'OPEN'")
        .await;
    e.sim().inject(Fault::RateLimit);
    e.move_to_ratio(entry, "0.925").await;
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "LIQUIDATE", "{closed}");
    assert_eq!(closed["positionId"], pos.as_str(), "{closed}");
    let status: String = e
        .scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
        .await;
    assert_eq!(status, "LIQUIDATED");
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM orders WHERE sub_account_id = $1::uuid AND reduce_only AND state <> 'REJECTED'"
        )
        .await,
        0,
        "nothing reached the venue"
    );
    assert_eq!(
        e.scalar::<i64>("SELECT count(*) FROM balance_logs WHERE sub_account_id = $1::uuid AND reason = 'LIQUIDATION'")
            .await,
        1
    );
    let house = e.house_btc(None).await;
    assert_eq!(house, d(QUANTITY), "the venue's leg is the house's now");
    assert_eq!(e.venue("BTCUSDT"), d("0.51"), "untouched on the venue");
    e.finish().await;
}

/// Tier 3 in a market that keeps falling: the ADL step (30 %) is sent, the price falls
/// further before its fill is booked, and the second look finds the account still past
/// its threshold — everything left is closed (`ADL_30_ESCALATED`), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_three_escalates_to_a_full_liquidation_when_the_step_is_not_enough() {
    use simulators::binance::failures::{Selector, StreamFault};
    let mut e = engine().await;
    // A high maintenance rate: the ratio's tier-3 band is wide in prices.
    let rate = d("0.1");
    let entry = e.long_on(LiquidationMode::Adl30, d("100"), rate).await;
    let balance: Decimal = e
        .scalar("SELECT current_balance FROM sub_accounts WHERE id = $1::uuid")
        .await;
    // The step's fill reaches the engine late: the market moves first.
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(2500)),
        Selector::Next(1),
    );
    e.move_to(entry, d(QUANTITY), balance, rate, d("0.97"))
        .await;
    let adl = e.event("adl_triggered").await;
    assert_eq!(adl["tier"], 3, "{adl}");
    let mark = e.sim().mark("BTCUSDT").unwrap();
    // The step realizes 0.003 at about the mark; 0.007 is left. Fees aside.
    let after = balance + d("0.003") * (mark - entry);
    e.move_to(entry, d("0.007"), after, rate, d("0.975")).await;
    let full = e.event("full_liquidation").await;
    assert_eq!(full["mode"], "ADL_30_ESCALATED", "{full}");
    let reduced = e.event("position_reduced").await;
    assert_eq!(reduced["reason"], "ADL_TIER3", "{reduced}");
    let closed = e.event("position_closed").await;
    assert_eq!(closed["reason"], "LIQUIDATE", "{closed}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let orders: Vec<(String, Decimal, String)> = sqlx::query_as(
        "SELECT origin, quantity, state FROM orders
          WHERE sub_account_id = $1::uuid AND reduce_only ORDER BY created_at",
    )
    .bind(&e.account)
    .fetch_all(&e.db.pool)
    .await
    .unwrap();
    let orders: Vec<_> = orders
        .iter()
        .map(|(o, q, s)| (o.as_str(), *q, s.as_str()))
        .collect();
    assert_eq!(
        orders,
        [
            ("ADL_TIER3", d("0.003"), "FILLED"),
            ("LIQUIDATION", d("0.007"), "FILLED")
        ]
    );
    let status: String = e
        .scalar("SELECT status FROM sub_accounts WHERE id = $1::uuid")
        .await;
    assert_eq!(status, "LIQUIDATED");
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    e.finish().await;
}

/// Two symbols: ETH falls, the account crosses its threshold, and the ADL step closes
/// 30 % of its largest position — BTC, which did not move. The account's ETH position
/// is valued again on the step's booking, at once, with no tick of either market (both
/// are paused): its liquidation price moves away, as the maintenance it carries fell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adl_step_in_one_symbol_revalues_the_accounts_other_position_at_once() {
    let mut e = engine().await;
    let rate = d("0.1");
    let btc_entry = e.long_on(LiquidationMode::Adl30, d("150"), rate).await;
    let body = json!({"symbol": "ETHUSDT", "side": "LONG", "quantity": "0.1", "leverage": 20});
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let eth_position = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let eth_entry = d(&r["body"]["position"]["entryPrice"].to_string());
    let balance: Decimal = e
        .scalar("SELECT current_balance FROM sub_accounts WHERE id = $1::uuid")
        .await;
    // ETH's mark for a ratio of 0.92 (tier 2), BTC at its mark.
    let btc_mark = e.sim().mark("BTCUSDT").unwrap();
    let (q_btc, q_eth) = (d(QUANTITY), d("0.1"));
    let maintenance = (q_btc * btc_entry + q_eth * eth_entry) * rate;
    let target =
        eth_entry + (maintenance / d("0.92") - balance - q_btc * (btc_mark - btc_entry)) / q_eth;
    let (bids, asks, _) = e.sim().book("ETHUSDT").unwrap();
    let mid = (bids.iter().next_back().unwrap().0 + asks.iter().next().unwrap().0) / d("2");
    let ticks: i64 = ((target - mid) / d("0.01")).round().try_into().unwrap();
    e.sim().pause_market(true);
    assert!(e.sim().move_price("ETHUSDT", ticks));
    let reduced = e.event("position_reduced").await;
    assert_eq!(reduced["reason"], "ADL_TIER2", "{reduced}");
    assert_eq!(reduced["symbol"], "BTCUSDT", "{reduced}");
    // ETH's liquidation price as valued last before the step, and first after it.
    let eth_liq = |(k, v): &(String, Value)| {
        (k == "pnl_update" && v["positionId"] == eth_position.as_str())
            .then(|| v["liquidationPrice"].as_f64().unwrap())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (liq_before, liq_after) = loop {
        let events = e.events().await;
        let step = events
            .iter()
            .position(|(k, v)| k == "position_reduced" && v["subAccountId"] == e.account.as_str())
            .unwrap();
        let before = events[..step].iter().rev().find_map(eth_liq);
        let after = events[step..].iter().find_map(eth_liq);
        if let (Some(b), Some(a)) = (before, after) {
            break (b, a);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ETH not valued around the step"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        liq_after < liq_before,
        "a long's liquidation price falls as the account's maintenance falls: {liq_before} → {liq_after}"
    );
    assert_eq!(
        e.scalar::<Decimal>(
            "SELECT quantity FROM virtual_positions WHERE sub_account_id = $1::uuid AND status = 'OPEN' AND symbol = 'ETHUSDT'"
        )
        .await,
        q_eth,
        "ETH is not touched"
    );
    e.finish().await;
}

/// Past insolvency at once (margin ratio ≥ 1, from below the warning band): a TAKEOVER
/// account is taken over whole by the insolvency guard (`INSOLVENCY_TAKEOVER`), no
/// venue order; and on the way an ADL_30 account inside the warning band (T − 0.10 to
/// T) is only warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warning_band_only_warns_and_insolvency_takes_a_takeover_account_over() {
    let mut e = engine().await;
    let entry = e.long_on_small_account(LiquidationMode::Takeover).await;
    e.move_to_ratio(entry, "0.85").await;
    let warning = e.event("margin_warning").await;
    assert!(warning["marginRatio"].as_f64().unwrap() >= 0.8, "{warning}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status: String = e
        .scalar("SELECT status FROM virtual_positions WHERE sub_account_id = $1::uuid")
        .await;
    assert_eq!(status, "OPEN", "warned, nothing closed");
    e.move_to_ratio(entry, "1.05").await;
    let full = e.event("full_liquidation").await;
    assert_eq!(full["mode"], "INSOLVENCY_TAKEOVER", "{full}");
    let taken = e.event("position_takeover").await;
    assert_eq!(taken["symbol"], "BTCUSDT", "{taken}");
    let status: String = e
        .scalar("SELECT status FROM virtual_positions WHERE sub_account_id = $1::uuid")
        .await;
    assert_eq!(status, "TAKEN_OVER");
    assert_eq!(
        e.scalar::<i64>(
            "SELECT count(*) FROM orders WHERE sub_account_id = $1::uuid AND reduce_only"
        )
        .await,
        0,
        "no venue order"
    );
    assert_eq!(e.house_btc(Some("TAKEOVER")).await, d(QUANTITY));
    assert_eq!(e.venue("BTCUSDT"), d("0.51"));
    e.finish().await;
}
