//! The trading half at its edges, black-box through the command bus against the
//! built-in Binance simulator (which starts with house positions: BTCUSDT +0.5,
//! ETHUSDT −4): closes that must see past the house, closes that must run once,
//! reduce-only orders that belong to their position, kill switches that no opening
//! gate may stop, risk that counts what the account is exposed to, and idempotency
//! keys bound to their command.

mod common;

use std::time::Duration;

use common::bus::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use simulators::binance::failures::{Selector, StreamFault};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

impl Engine {
    /// Waits (≤ 30 s) until the venue's net position in `symbol` is `want`.
    async fn venue_reaches(&self, symbol: &str, want: Decimal) -> Decimal {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.venue(symbol);
            if v == want || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The account's open positions as (symbol, side, quantity).
    async fn open_positions(&self) -> Vec<(String, String, Decimal)> {
        sqlx::query_as(
            "SELECT symbol, side, quantity FROM virtual_positions
             WHERE sub_account_id = $1::uuid AND status = 'OPEN' ORDER BY symbol",
        )
        .bind(&self.account)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// A 0.003 BTC bid at the best ask, where only 0.001 is for sale: a third fills on
    /// arrival, and none of its stream events reach the engine. Its order body.
    async fn partly_filled_unheard(&mut self) -> Value {
        self.sim().pause_market(true);
        let (_, asks, _) = self.sim().book("BTCUSDT").unwrap();
        let (&best, _) = asks.iter().next().unwrap();
        assert!(self.sim().set_level("BTCUSDT", false, best, d("0.001")));
        self.sim()
            .stream_fault(StreamFault::Drop, Selector::Next(1));
        let body = json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.003",
                          "price": best.to_string(), "leverage": 10});
        let r = self.send("limit", self.envelope("limit", body)).await;
        assert_eq!(r["httpStatus"], 201, "{r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            self.venue("BTCUSDT"),
            d("0.501"),
            "the venue filled a third"
        );
        r["body"]["order"].clone()
    }

    /// Which of two commands' results comes first (≤ 30 s), and that result; the
    /// other stays to be read.
    async fn first_result(&self, a: &str, b: &str) -> (String, String) {
        let key = |id: &str| format!("{}result:{id}", self.prefix);
        let mut c = redis::Client::open("redis://127.0.0.1:6379")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let first: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(key(a))
            .arg(key(b))
            .arg(30)
            .query_async(&mut c)
            .await
            .unwrap();
        let (which, result) = first.expect("a result");
        let id = if which == key(a) { a } else { b };
        (id.to_owned(), result)
    }

    async fn trade(&mut self, symbol: &str, side: &str, q: &str) -> Value {
        let r = self
            .send("trade", self.envelope("trade", order(symbol, side, q)))
            .await;
        assert_eq!(r["httpStatus"], 201, "{r}");
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_under_the_house_short_sends_the_sell_and_the_venue_ends_at_the_house() {
    let mut e = engine().await;
    assert_eq!(e.venue("ETHUSDT"), d("-4"), "the simulator's house short");
    let r = e.trade("ETHUSDT", "LONG", "0.01").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    assert_eq!(e.venue_reaches("ETHUSDT", d("-3.99")).await, d("-3.99"));
    let r = e
        .send("close", e.envelope("close", json!({"positionId": pos})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert!(
        r["body"]["source"].is_null(),
        "closed on the venue, not virtually: {r}"
    );
    assert_eq!(r["body"]["order"]["side"], "SHORT", "{r}");
    assert_eq!(e.venue_reaches("ETHUSDT", d("-4")).await, d("-4"));
    assert!(e.open_positions().await.is_empty());
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_closes_of_one_position_send_one_order_and_both_answer_with_it() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    // The close's fill reaches the engine late: the position is still open in the
    // book when the second close (a double click, then close_all) comes in.
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(1500)),
        Selector::Next(1),
    );
    let first = e.envelope("close", json!({"positionId": pos}));
    let second = e.envelope("close", json!({"positionId": pos}));
    let all = e.envelope("close_all", json!({}));
    e.push("close", &first).await;
    e.push("close", &second).await;
    e.push("close_all", &all).await;
    let a = e.result(first["requestId"].as_str().unwrap()).await;
    let b = e.result(second["requestId"].as_str().unwrap()).await;
    let c = e.result(all["requestId"].as_str().unwrap()).await;
    assert_eq!(a["httpStatus"], 200, "{a}");
    assert_eq!(b["httpStatus"], 200, "{b}");
    assert_eq!(
        a["body"]["order"]["id"], b["body"]["order"]["id"],
        "answered from the first: {a} {b}"
    );
    assert_eq!(c["httpStatus"], 200, "{c}");
    assert_eq!(
        e.count_until("SELECT count(*) FROM orders WHERE reduce_only", 1)
            .await,
        1,
        "one close order: {a} {b} {c}"
    );
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.5")).await, d("0.5"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.venue("BTCUSDT"), d("0.5"), "the house is untouched");
    assert!(e.open_positions().await.is_empty());
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_limit_close_is_cancelled_when_its_position_closes_and_never_opens_the_other_side(
) {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let mark = r["body"]["trade"]["price"].as_f64().unwrap();
    let price = format!("{:.1}", mark * 1.01);
    let r = e
        .send(
            "limit_close",
            e.envelope("limit_close", json!({"positionId": pos, "price": price})),
        )
        .await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let limit = r["body"]["order"]["id"].as_str().unwrap().to_owned();
    let r = e
        .send("close", e.envelope("close", json!({"positionId": pos})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    // The resting reduce-only sell belonged to the closed position: cancelled.
    assert_eq!(
        e.count_until(
            &format!("SELECT count(*) FROM orders WHERE id = '{limit}' AND state = 'CANCELED'"),
            1
        )
        .await,
        1
    );
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.5")).await, d("0.5"));
    // The market runs through its price: nothing fills, nothing opens.
    e.sim().move_price("BTCUSDT", (mark * 0.03 * 10.0) as i64);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    assert!(e.open_positions().await.is_empty(), "nothing opened");
    let cancelled = e
        .events()
        .await
        .into_iter()
        .any(|(k, v)| k == "order_cancelled" && v["orderId"] == limit.as_str());
    assert!(cancelled, "order_cancelled published");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switches_pass_no_opening_gate_frozen_account_or_lowered_leverage_cap() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let btc = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let r = e.trade("ETHUSDT", "LONG", "0.01").await;
    let eth = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    // The cap lowered under the position's 10x: a close still goes out.
    let r = e.admin("risk_rules_set", json!({"maxLeverage": 5})).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let r = e
        .send("close", e.envelope("close", json!({"positionId": btc})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    // Frozen: an opening trade is refused, an admin's force_close is not.
    let r = e.admin("account_freeze", json!({})).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let r = e
        .send(
            "trade",
            e.envelope("trade", order("BTCUSDT", "LONG", "0.002")),
        )
        .await;
    assert_eq!(r["code"], "ACCOUNT_FROZEN", "{r}");
    let r = e.admin("force_close", json!({"positionId": eth})).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(e.venue_reaches("ETHUSDT", d("-4")).await, d("-4"));
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.5")).await, d("0.5"));
    assert!(e.open_positions().await.is_empty());
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_account_rule_keeps_the_global_rows_other_values() {
    let mut e = engine().await;
    let r = e
        .admin(
            "risk_rules_set",
            json!({"global": true, "maxNotionalPerTrade": 50, "maxTotalExposure": 60}),
        )
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let r = e.admin("risk_rules_set", json!({"maxLeverage": 20})).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let rules = &r["body"]["rules"];
    assert_eq!(rules["maxNotionalPerTrade"].as_f64(), Some(50.0), "{r}");
    assert_eq!(rules["maxTotalExposure"].as_f64(), Some(60.0), "{r}");
    assert_eq!(rules["maxLeverage"].as_f64(), Some(20.0), "{r}");
    // And the checks use them: 0.002 BTC (~$118) is over $50 per trade.
    let r = e
        .send(
            "trade",
            e.envelope("trade", order("BTCUSDT", "LONG", "0.002")),
        )
        .await;
    assert_eq!(r["code"], "MAX_NOTIONAL_EXCEEDED", "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realized_loss_today_counts_toward_the_daily_loss_limit() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    // $300 down on 0.002 BTC: about $0.6 lost, fees on top.
    e.sim().move_price("BTCUSDT", -3000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = e
        .send("close", e.envelope("close", json!({"positionId": pos})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    e.count_until(
        "SELECT count(*) FROM virtual_positions WHERE status = 'OPEN'",
        0,
    )
    .await;
    let r = e
        .admin("risk_rules_set", json!({"maxDailyLoss": 0.3}))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let r = e
        .send(
            "trade",
            e.envelope("trade", order("BTCUSDT", "LONG", "0.002")),
        )
        .await;
    assert_eq!(r["code"], "MAX_DAILY_LOSS_EXCEEDED", "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resting_limits_count_toward_the_exposure_cap() {
    let mut e = engine().await;
    // $500 total exposure by default; three bids of ~$177 each rest below the market.
    let mark = e.sim().mark("BTCUSDT").unwrap();
    let price = (mark * d("0.95")).round_dp(1);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let body = json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.003",
                          "price": price.to_string(), "leverage": 10});
        let r = e.send("limit", e.envelope("limit", body)).await;
        codes.push((r["httpStatus"].as_u64(), r["code"].clone()));
    }
    assert_eq!(codes[0].0, Some(201), "{codes:?}");
    assert_eq!(codes[1].0, Some(201), "{codes:?}");
    assert_eq!(
        codes[2],
        (Some(400), json!("MAX_EXPOSURE_EXCEEDED")),
        "the third would make ~$530 with the two resting"
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_belongs_to_its_command_type() {
    let mut e = engine().await;
    let mut freeze = e.envelope("account_freeze", json!({}));
    freeze["role"] = "ADMIN".into();
    freeze["idempotencyKey"] = "k-freeze".into();
    let r = e.send("account_freeze", freeze).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(r["body"]["status"], "FROZEN", "{r}");
    let mut unfreeze = e.envelope("account_unfreeze", json!({}));
    unfreeze["role"] = "ADMIN".into();
    unfreeze["idempotencyKey"] = "k-freeze".into();
    let r = e.send("account_unfreeze", unfreeze).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(422), Some("IDEMPOTENCY_KEY_REUSED")),
        "{r}"
    );
    e.finish().await;
}

/// Issue 30: the result bodies the JS gateway and browser read, read as they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_bodies_carry_the_js_statuses_and_close_all_items_their_pnl() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    // The JS TradeExecution row has its status.
    assert_eq!(r["body"]["trade"]["status"], "FILLED", "{r}");
    assert_eq!(r["body"]["trades"][0]["status"], "FILLED", "{r}");
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    e.trade("ETHUSDT", "SHORT", "0.01").await;
    // A resting limit is PENDING to the browser (which filters on it); our state beside.
    let mark = e.sim().mark("BTCUSDT").unwrap();
    let bid = (mark * d("0.95")).round_dp(1).to_string();
    let body = json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.001", "price": bid,
                      "leverage": 10});
    let r = e.send("limit", e.envelope("limit", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["body"]["order"]["status"], "PENDING", "{r}");
    assert_eq!(r["body"]["order"]["state"], "SUBMITTED", "{r}");
    let ask = (mark * d("1.02")).round_dp(1).to_string();
    let r = e
        .send(
            "limit_close",
            e.envelope("limit_close", json!({"positionId": pos, "price": ask})),
        )
        .await;
    assert_eq!(r["body"]["order"]["status"], "PENDING", "{r}");
    // The cancelled limit: CANCELLED, as the JS spells it.
    let id = r["body"]["order"]["id"].as_str().unwrap().to_owned();
    let c = e
        .send(
            "cancel_order",
            e.envelope("cancel_order", json!({"orderId": id})),
        )
        .await;
    assert_eq!(c["httpStatus"], 200, "{c}");
    // close_all: each item {positionId, symbol, success, pnl} with pnl a number.
    let r = e
        .send("close_all", e.envelope("close_all", json!({})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(r["body"]["closed"], 2, "{r}");
    let items = r["body"]["results"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{r}");
    for item in items {
        assert_eq!(item["success"], true, "{item}");
        assert!(
            item["positionId"].is_string() && item["symbol"].is_string(),
            "{item}"
        );
        assert!(item["pnl"].is_number(), "pnl, net of the close fee: {item}");
    }
    // The pnl is the close's realized PnL net of its fee, as booked.
    let booked: Decimal = sqlx::query_scalar(
        "SELECT sum(realized_pnl) FROM trade_executions
          WHERE sub_account_id = $1::uuid AND realized_pnl IS NOT NULL",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    let said: f64 = items.iter().map(|i| i["pnl"].as_f64().unwrap()).sum();
    assert!(
        (said - booked.to_string().parse::<f64>().unwrap()).abs() < 1e-9,
        "{said} vs {booked}"
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_408_without_the_venues_body_after_the_order_went_in_is_unknown_then_filled() {
    use simulators::binance::failures::OrderFault;
    let mut e = engine().await;
    e.sim()
        .order_fault(OrderFault::AcceptThen408, Selector::Next(1));
    let r = e
        .send(
            "trade",
            e.envelope("trade", order("BTCUSDT", "LONG", "0.002")),
        )
        .await;
    // The venue took it: the trade is answered as filled, not refused.
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["body"]["order"]["status"], "FILLED", "{r}");
    assert_eq!(r["body"]["position"]["quantity"], 0.002, "{r}");
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.502")).await, d("0.502"));
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT e.state FROM order_events e JOIN orders o ON o.id = e.order_id ORDER BY e.id",
    )
    .fetch_all(&e.db.pool)
    .await
    .unwrap();
    assert!(states.contains(&"UNKNOWN".to_owned()), "{states:?}");
    assert!(!states.contains(&"REJECTED".to_owned()), "{states:?}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_a_partial_fill_whose_trade_event_was_lost_books_the_fill() {
    let mut e = engine().await;
    let order = e.partly_filled_unheard().await;
    let id = order["id"].as_str().unwrap().to_owned();
    let c = e
        .send(
            "cancel_order",
            e.envelope("cancel_order", json!({"orderId": id})),
        )
        .await;
    assert_eq!(c["httpStatus"], 200, "{c}");
    // The cancel read what the venue had filled before calling it cancelled.
    let (state, filled): (String, Decimal) =
        sqlx::query_as("SELECT state, filled FROM orders WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&e.db.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), filled), ("CANCELED", d("0.001")));
    assert_eq!(
        e.open_positions().await,
        vec![("BTCUSDT".to_owned(), "LONG".to_owned(), d("0.001"))]
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_books_the_fills_of_an_order_that_ended_without_them() {
    let mut e = engine().await;
    let order = e.partly_filled_unheard().await;
    let cid = order["clientOrderId"].as_str().unwrap().to_owned();
    // The engine hears the order end (a stream that lost the fill but not the cancel)
    // and never the fill before it.
    let exec = e.app.executor.get().unwrap().clone();
    exec.apply_event(
        &cid,
        trading::order::OrderEvent::Canceled,
        database::orders::Source::Stream,
    )
    .await
    .unwrap();
    assert!(
        e.open_positions().await.is_empty(),
        "the fill is not in the book"
    );
    let report = exec.reconcile().await.unwrap();
    assert_eq!(report.fills_recovered, 1, "{report:?}");
    assert_eq!(
        e.open_positions().await,
        vec![("BTCUSDT".to_owned(), "LONG".to_owned(), d("0.001"))]
    );
    // Once booked, the next round finds nothing ahead.
    assert_eq!(exec.reconcile().await.unwrap().fills_recovered, 0);
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_side_trade_flips_as_the_js_did_and_reduce_only_only_reduces() {
    let mut e = engine().await;
    // A long of ~$177 (under the $200 per-trade cap).
    e.trade("BTCUSDT", "LONG", "0.003").await;
    // reduceOnly: by q, never past the position.
    let mut body = order("BTCUSDT", "SHORT", "0.001");
    body["reduceOnly"] = true.into();
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert!(r["body"]["flipped"].is_null(), "{r}");
    assert_eq!(
        e.open_positions().await,
        vec![("BTCUSDT".to_owned(), "LONG".to_owned(), d("0.002"))]
    );
    // A counter-side 0.001: the whole long closes and 0.001 opens — one order of
    // 0.003, whose opening part alone (~$60) is what the per-trade cap counts.
    let r = e.trade("BTCUSDT", "SHORT", "0.001").await;
    assert_eq!(r["body"]["order"]["quantity"], 0.003, "{r}");
    assert_eq!(
        r["body"]["flipped"]["closedPosition"]["side"], "LONG",
        "{r}"
    );
    assert_eq!(
        e.open_positions().await,
        vec![("BTCUSDT".to_owned(), "SHORT".to_owned(), d("0.001"))]
    );
    // A counter-side trade whose close is over the cap but whose opening part is not.
    let r = e.trade("BTCUSDT", "LONG", "0.003").await;
    assert_eq!(r["body"]["order"]["quantity"], 0.004, "{r}");
    assert_eq!(
        e.open_positions().await,
        vec![("BTCUSDT".to_owned(), "LONG".to_owned(), d("0.003"))]
    );
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.503")).await, d("0.503"));
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_recovery_waits_out_a_held_reconciliation_lock_instead_of_skipping_it() {
    use redis::AsyncCommands;
    let db = database::testing::TestDb::new().await;
    let prefix = simulators::testkit::unique_prefix("gw-lock");
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{prefix}lock:reconcile");
    // Another engine (or an operator's `order reconcile`) is reconciling.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("another-engine")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    let starting = tokio::spawn(start(
        db.url(),
        prefix.clone(),
        "redis://127.0.0.1:6379".into(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !starting.is_finished(),
        "the engine took commands without having reconciled once"
    );
    let _: i64 = redis.del(&key).await.unwrap();
    let app = starting.await.unwrap();
    app.shutdown().await;
    forget_keys(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basket_is_checked_as_a_whole_across_its_symbols_before_anything_is_sent() {
    let mut e = engine().await;
    // $500 total by default: two BTC legs (~$180 each) fit, the ETH leg (~$155) on
    // top of them does not.
    let legs = json!({"legs": [
        {"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.003", "leverage": 10},
        {"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.003", "leverage": 10},
        {"symbol": "ETHUSDT", "side": "LONG", "quantity": "0.05", "leverage": 10},
    ]});
    let r = e.send("basket", e.envelope("basket", legs)).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(400), Some("MAX_EXPOSURE_EXCEEDED")),
        "{r}"
    );
    assert_eq!(e.orders().await, 0, "nothing of the basket was sent");
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    // Within the caps across symbols: all of it goes.
    let legs = json!({"legs": [
        {"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.003", "leverage": 10},
        {"symbol": "ETHUSDT", "side": "LONG", "quantity": "0.05", "leverage": 10},
    ]});
    let r = e.send("basket", e.envelope("basket", legs)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["body"]["placed"], 2, "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_says_the_numbers_behind_a_refusal() {
    let mut e = engine().await;
    let r = e
        .send(
            "validate",
            e.envelope("validate", order("BTCUSDT", "LONG", "0.01")),
        )
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let b = &r["body"];
    assert_eq!(b["valid"], false, "{r}");
    assert_eq!(b["errors"][0]["code"], "MAX_NOTIONAL_EXCEEDED", "{r}");
    let n = &b["computedValues"];
    let price = n["price"].as_f64().unwrap();
    assert!(
        (n["notional"].as_f64().unwrap() - price * 0.01).abs() < 1e-6,
        "{r}"
    );
    assert!(
        (n["requiredMargin"].as_f64().unwrap() - price * 0.001).abs() < 1e-6,
        "{r}"
    );
    assert_eq!(n["equity"].as_f64(), Some(10_000.0), "{r}");
    assert_eq!(n["currentExposure"].as_f64(), Some(0.0), "{r}");
    for k in [
        "availableBalance",
        "exposureAfter",
        "maintenanceMargin",
        "marginUsageAfter",
    ] {
        assert!(n[k].is_number(), "{k}: {r}");
    }
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_events_say_the_positions_side_liquidation_price_and_net_pnl() {
    let mut e = engine().await;
    // A small account: its long has a liquidation price above zero.
    let r = e
        .admin(
            "account_create",
            json!({"name": "small", "initialBalance": 30, "ownerUserId": USER}),
        )
        .await;
    e.account = r["body"]["id"].as_str().unwrap().to_owned();
    e.trade("BTCUSDT", "LONG", "0.003").await;
    let mut body = order("BTCUSDT", "SHORT", "0.001");
    body["reduceOnly"] = true.into();
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    // The flip: closes the 0.002 left, opens 0.001 short, in one fill of 0.003.
    e.trade("BTCUSDT", "SHORT", "0.001").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = e.events().await;
    let of = |kind: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let opened = &of("position_updated")[0];
    let liq = opened["liquidationPrice"]
        .as_f64()
        .expect("a cross liquidation price");
    assert!(
        liq > 0.0 && liq < opened["entryPrice"].as_f64().unwrap(),
        "{opened}"
    );
    assert_eq!(opened["babysitterExcluded"], false, "{opened}");
    let reduced = &of("position_reduced")[0];
    assert_eq!(reduced["side"], "LONG", "the position's side: {reduced}");
    let closed = &of("position_closed")[0];
    assert_eq!(closed["reason"], "FLIP", "{closed}");
    // Its realizedPnl is the booked one: the closing part's share of the fee only.
    let booked: Decimal =
        sqlx::query_scalar("SELECT realized_pnl FROM trade_executions WHERE action = 'FLIP_CLOSE'")
            .fetch_one(&e.db.pool)
            .await
            .unwrap();
    let said = closed["realizedPnl"].as_f64().unwrap();
    let booked: f64 = booked.to_string().parse().unwrap();
    assert!(
        (said - booked).abs() < 1e-9,
        "event {said} vs booked {booked}"
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_stack_refuses_to_start_and_the_first_trades_on() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    assert_eq!(r["httpStatus"], 201);
    let second = try_start(
        e.db.url(),
        e.prefix.clone(),
        "redis://127.0.0.1:6379".into(),
    )
    .await;
    let err = second.expect_err("a second engine on the same prefix and database started");
    assert!(
        err.to_string().contains("another engine"),
        "a clear message: {err}"
    );
    // The first is untouched: its commands still run.
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    assert_eq!(r["body"]["position"]["quantity"], 0.004, "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_that_disconnects_mid_trade_gets_the_result_on_its_retry() {
    let e = engine().await;
    // The fill reaches the engine 2 s late: the trade is still waiting for it when
    // the client gives up.
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(2000)),
        Selector::Next(1),
    );
    let url = format!("http://{}/v1/cmd/trade", e.app.control_addr);
    let body = json!({"subAccountId": e.account, "userId": USER, "symbol": "BTCUSDT",
                      "side": "LONG", "quantity": "0.002", "leverage": 10});
    let post = |timeout: Duration| {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "k-disconnect")
            .timeout(timeout)
            .json(&body)
            .send()
    };
    assert!(
        post(Duration::from_millis(300)).await.is_err(),
        "the client gave up"
    );
    // Its retry with the key, once the command has had time to end: the first
    // command's result (it ran to its end), not 409 for ever, and one order.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = post(Duration::from_secs(20)).await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["body"]["order"]["status"], "FILLED", "{v}");
    assert_eq!(e.orders().await, 1);
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_waiting_for_its_fill_does_not_hold_the_accounts_kill_switches() {
    let mut e = engine().await;
    // Past start-up (its user-stream reconnect reconciles, which would find the fill),
    // with a position to close.
    let r = e.trade("ETHUSDT", "LONG", "0.01").await;
    let eth = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The trade's fill reaches the engine 3 s late.
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(3000)),
        Selector::Next(1),
    );
    let trade = e.envelope("trade", order("BTCUSDT", "LONG", "0.002"));
    e.push("trade", &trade).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A kill switch of the same account meanwhile (closing its other position): one
    // venue round trip, not after the trade's fill.
    let kill = e.envelope("close", json!({"positionId": eth}));
    e.push("close", &kill).await;
    let kill_id = kill["requestId"].as_str().unwrap().to_owned();
    let trade_id = trade["requestId"].as_str().unwrap().to_owned();
    let (which, first) = e.first_result(&kill_id, &trade_id).await;
    assert_eq!(
        which, kill_id,
        "the kill switch waited for the trade's fill: {first}"
    );
    let r = e.result(&trade_id).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["body"]["order"]["status"], "FILLED", "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_wrongly_taken_for_rejected_is_resurrected_by_the_venues_fill() {
    let mut e = engine().await;
    let mark = e.sim().mark("BTCUSDT").unwrap();
    let bid = (mark * d("0.995")).round_dp(1);
    let body = json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.002",
                      "price": bid.to_string(), "leverage": 10});
    let r = e.send("limit", e.envelope("limit", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let cid = r["body"]["order"]["clientOrderId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The engine concludes, wrongly, that the venue never had it.
    let exec = e.app.executor.get().unwrap().clone();
    exec.apply_event(
        &cid,
        trading::order::OrderEvent::NotFound,
        database::orders::Source::Reconcile,
    )
    .await
    .unwrap();
    // The market trades down through the bid: the venue fills it and says so.
    e.sim().move_price(
        "BTCUSDT",
        -((mark - bid) * d("10")).to_string().parse::<f64>().unwrap() as i64 - 50,
    );
    let filled = e
        .count_until(
            &format!(
                "SELECT count(*) FROM orders WHERE client_order_id = '{cid}' AND state = 'FILLED'"
            ),
            1,
        )
        .await;
    assert_eq!(filled, 1, "the venue's fill overrules our REJECTED");
    assert_eq!(
        e.open_positions().await,
        vec![("BTCUSDT".to_owned(), "LONG".to_owned(), d("0.002"))]
    );
    // Said in its event row.
    let why: Vec<Value> = sqlx::query_scalar(
        "SELECT e.detail->'resurrected' FROM order_events e JOIN orders o ON o.id = e.order_id
          WHERE o.client_order_id = $1 AND e.detail ? 'resurrected'",
    )
    .bind(&cid)
    .fetch_all(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0]["rejectCode"], "NOT_FOUND", "{why:?}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_stored_after_the_send_is_503_state_unknown_then_resolved() {
    let mut e = engine().await;
    e.trade("ETHUSDT", "LONG", "0.01").await;
    // The database refuses what the venue's REST reply would record (a real fault in
    // PostgreSQL: a trigger), and the stream's events come late.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_rest() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN IF NEW.source = 'REST' THEN RAISE EXCEPTION 'injected'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_rest BEFORE INSERT ON order_events
           FOR EACH ROW EXECUTE FUNCTION refuse_rest();",
    )
    .execute(&e.db.pool)
    .await
    .unwrap();
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(1500)),
        Selector::Next(1),
    );
    let r = e
        .send(
            "trade",
            e.envelope("trade", order("BTCUSDT", "LONG", "0.002")),
        )
        .await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(503), Some("ORDER_STATE_UNKNOWN")),
        "never 'nothing was sent': {r}"
    );
    let id = r["body"]["orderId"]
        .as_str()
        .expect("the order's id")
        .to_owned();
    sqlx::raw_sql("DROP TRIGGER refuse_rest ON order_events")
        .execute(&e.db.pool)
        .await
        .unwrap();
    // The engine keeps asking the venue, and books what it did.
    let filled = e
        .count_until(
            &format!("SELECT count(*) FROM orders WHERE id = '{id}' AND state = 'FILLED'"),
            1,
        )
        .await;
    assert_eq!(filled, 1);
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.502")).await, d("0.502"));
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_log_is_in_strictly_increasing_seq_under_fills_and_ticks() {
    let mut e = engine().await;
    let mut accounts = vec![e.account.clone()];
    for n in 0..3 {
        let r = e
            .admin(
                "account_create",
                json!({"name": format!("a{n}"), "initialBalance": 10000, "ownerUserId": USER}),
            )
            .await;
        accounts.push(r["body"]["id"].as_str().unwrap().to_owned());
    }
    // Trades from four accounts at once (fills, positions, margin and PnL updates
    // published from the fill path and the risk loop's ticks on several threads).
    let mut ids = Vec::new();
    for round in 0..5 {
        for a in &accounts {
            let side = if round % 2 == 0 { "LONG" } else { "SHORT" };
            let mut env = e.envelope("trade", order("BTCUSDT", side, "0.002"));
            env["subAccountId"] = a.clone().into();
            e.push("trade", &env).await;
            ids.push(env["requestId"].as_str().unwrap().to_owned());
        }
    }
    for id in ids {
        let r = e.result(&id).await;
        assert_eq!(r["httpStatus"], 201, "{r}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seqs: Vec<u64> = e
        .events()
        .await
        .iter()
        .filter_map(|(_, v)| v["seq"].as_u64())
        .collect();
    assert!(seqs.len() > 40, "{}", seqs.len());
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "the log out of seq order: {seqs:?}"
    );
    e.finish().await;
}

/// A close planned while other accounts' orders move the venue's net (their fills
/// late): each of them is sent before the close's reads or after its send, never
/// between (the symbol's gate), so the close never takes the others' moves for a
/// desync. Afterwards the venue less the house is the book, and nothing was closed
/// virtually. (Through the bus this timing rarely lines up; the soak in
/// `tests/execution.rs`, four accounts trading with faults, is what failed without
/// the gate: two runs in three.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_while_other_accounts_trade_the_symbol_keep_the_venue_equal_to_the_book() {
    let mut e = engine().await;
    let mut others = Vec::new();
    for n in 0..3 {
        let r = e
            .admin(
                "account_create",
                json!({"name": format!("o{n}"), "initialBalance": 100000, "ownerUserId": USER}),
            )
            .await;
        others.push(r["body"]["id"].as_str().unwrap().to_owned());
    }
    for round in 0..4 {
        let r = e.trade("BTCUSDT", "LONG", "0.003").await;
        let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
        // The others trade before, during and after the close.
        let mut ids = Vec::new();
        for k in 0..24 {
            if k == 6 {
                // The others' fills reach the engine late: the venue has moved, the
                // book not yet.
                e.sim().stream_fault(
                    StreamFault::Delay(Duration::from_millis(300)),
                    Selector::Next(4),
                );
            }
            if k == 8 {
                let close = e.envelope("close", json!({"positionId": pos}));
                e.push("close", &close).await;
                ids.push(close["requestId"].as_str().unwrap().to_owned());
            }
            let a = &others[k % others.len()];
            let side = if (k / 3 + round) % 2 == 0 {
                "LONG"
            } else {
                "SHORT"
            };
            let mut env = e.envelope("trade", order("BTCUSDT", side, "0.002"));
            env["subAccountId"] = a.clone().into();
            e.push("trade", &env).await;
            ids.push(env["requestId"].as_str().unwrap().to_owned());
        }
        for id in ids {
            let r = e.result(&id).await;
            let book = e.sim().book("BTCUSDT").map(|(b, a, _)| {
                (
                    b.iter().next_back().map(|l| *l.0),
                    a.iter().next().map(|l| *l.0),
                )
            });
            assert!(
                r["httpStatus"] == 200 || r["httpStatus"] == 201,
                "{r}; the venue's mark {:?}, best bid and ask {book:?}",
                e.sim().mark("BTCUSDT")
            );
        }
    }
    // Every fill booked: the venue less the house is the sub-accounts' sum.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (venue, book) = loop {
        let book: Decimal = sqlx::query_scalar(
            "SELECT coalesce(sum(CASE side WHEN 'LONG' THEN quantity ELSE -quantity END), 0)
               FROM virtual_positions WHERE symbol = 'BTCUSDT' AND status = 'OPEN'",
        )
        .fetch_one(&e.db.pool)
        .await
        .unwrap();
        let venue = e.venue("BTCUSDT") - d("0.5");
        if venue == book || tokio::time::Instant::now() > deadline {
            break (venue, book);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(venue, book, "the venue less the house against the book");
    let virtual_closes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM balance_logs WHERE reason = 'DESYNC_CLOSE'")
            .fetch_one(&e.db.pool)
            .await
            .unwrap();
    assert_eq!(
        virtual_closes, 0,
        "a close took the others' moves for a desync"
    );
    assert!(e.open_positions().await.is_empty(), "every close closed");
    e.finish().await;
}

/// Reconciliation runs while a close's fill is on its way (the venue flat at the
/// house, the book still holding the position): the symbol has a market order not
/// final, so it is left to the close — not closed virtually, nothing given to the
/// house — and the close's fill closes the position when it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_racing_a_close_leaves_the_position_to_the_close() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(1500)),
        Selector::Next(2),
    );
    let close = e.envelope("close", json!({"positionId": pos}));
    e.push("close", &close).await;
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.5")).await, d("0.5"));
    assert_eq!(e.open_positions().await.len(), 1, "the fill not booked yet");
    let exec = e.app.executor.get().unwrap().clone();
    let report = exec.reconcile().await.unwrap();
    let r = e.result(close["requestId"].as_str().unwrap()).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(
        e.count_until(
            "SELECT count(*) FROM trade_executions WHERE action = 'CLOSE'",
            1
        )
        .await,
        1,
        "the close's fill closed it: {report:?}"
    );
    assert!(e.open_positions().await.is_empty());
    let (virtual_closes, house): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM balance_logs WHERE reason IN ('RECONCILE', 'DESYNC_CLOSE')),
                (SELECT count(*) FROM house_log)",
    )
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!((virtual_closes, house), (0, 0), "{report:?}");
    assert_eq!(e.venue("BTCUSDT"), d("0.5"));
    e.finish().await;
}

/// A close waiting for its fill holds the account's lane no longer than its send: a
/// kill switch of the same account (a freeze) answers first, and the close still
/// answers with its fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_waiting_for_its_fill_does_not_hold_the_accounts_next_command() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    // Past start-up's reconciliation (which would find the fill).
    tokio::time::sleep(Duration::from_secs(1)).await;
    e.sim().stream_fault(
        StreamFault::Delay(Duration::from_millis(3000)),
        Selector::Next(1),
    );
    let close = e.envelope("close", json!({"positionId": pos}));
    e.push("close", &close).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut freeze = e.envelope("account_freeze", json!({}));
    freeze["role"] = "ADMIN".into();
    e.push("account_freeze", &freeze).await;
    let close_id = close["requestId"].as_str().unwrap().to_owned();
    let freeze_id = freeze["requestId"].as_str().unwrap().to_owned();
    let (which, first) = e.first_result(&freeze_id, &close_id).await;
    assert_eq!(
        which, freeze_id,
        "the freeze waited for the close's fill: {first}"
    );
    let r = e.result(&close_id).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(r["body"]["order"]["status"], "FILLED", "{r}");
    assert!(r["body"]["realizedPnl"].is_number(), "{r}");
    e.finish().await;
}

/// `babysitter_close` from the babysitter's source: a position the exchange holds is
/// closed on the venue and booked as the babysitter's reason (the fills' action, the
/// event's reason); one the exchange does not hold is closed in the book at a fresh
/// mark. A user may not send it, and a reason that could not be stored is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_babysitter_close_is_booked_as_its_reason_on_the_venue_or_in_the_book() {
    let mut e = engine().await;
    let as_babysitter = |e: &Engine, body: Value| {
        let mut env = e.envelope("babysitter_close", body);
        env["source"] = "babysitter".into();
        env
    };
    let r = e.trade("BTCUSDT", "LONG", "0.002").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    // A user's own position, but not the babysitter's source: refused, nothing sent.
    let orders_before = e.orders().await;
    let r = e
        .send(
            "babysitter_close",
            e.envelope(
                "babysitter_close",
                json!({"positionId": pos, "closePrice": 1}),
            ),
        )
        .await;
    assert_eq!(
        (r["httpStatus"].as_i64(), r["code"].as_str()),
        (Some(403), Some("FORBIDDEN")),
        "{r}"
    );
    let r = e
        .send(
            "babysitter_close",
            as_babysitter(
                &e,
                json!({"positionId": pos, "closePrice": 1, "reason": "TP; --"}),
            ),
        )
        .await;
    assert_eq!(r["httpStatus"], 400, "{r}");
    assert_eq!(e.orders().await, orders_before);
    // On the venue, as BABYSITTER_SL.
    let r = e
        .send(
            "babysitter_close",
            as_babysitter(
                &e,
                json!({"positionId": pos, "closePrice": 1, "reason": "BABYSITTER_SL"}),
            ),
        )
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(r["body"]["source"], "exchange", "{r}");
    assert!(r["body"]["exchangeOrderId"].is_string(), "{r}");
    assert!(
        r["body"]["closePrice"].as_f64().unwrap() > 1000.0,
        "the fill's price: {r}"
    );
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.5")).await, d("0.5"));
    let action: String = sqlx::query_scalar(
        "SELECT action FROM trade_executions WHERE sub_account_id = $1::uuid AND action <> 'OPEN'",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(action, "BABYSITTER_SL");
    let closed = loop {
        let found = e
            .events()
            .await
            .into_iter()
            .find(|(k, v)| k == "position_closed" && v["positionId"] == pos.as_str());
        if let Some((_, v)) = found {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(closed["reason"], "BABYSITTER_SL", "{closed}");
    // The exchange does not hold this one (the venue's leg is gone): closed in the
    // book, at the mark, as the default reason.
    let r = e.trade("BTCUSDT", "SHORT", "0.001").await;
    let short = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    e.sim().set_position_quietly("BTCUSDT", d("0.5"));
    let r = e
        .send(
            "babysitter_close",
            as_babysitter(&e, json!({"positionId": short, "closePrice": "1"})),
        )
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    assert_eq!(r["body"]["source"], "virtual_no_exchange", "{r}");
    assert!(
        r["body"]["closePrice"].as_f64().unwrap() > 1000.0,
        "a fresh mark, not the 1 given: {r}"
    );
    let action: String = sqlx::query_scalar(
        "SELECT action FROM trade_executions WHERE position_id = $1::uuid AND action <> 'OPEN'",
    )
    .bind(&short)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(action, "BABYSITTER_TP");
    assert!(e.open_positions().await.is_empty());
    e.finish().await;
}

/// Closes of one position asked at once from inside the engine — a manual close, a
/// liquidation's forced close and a babysitter's, none waiting in the account's lane —
/// take turns: one order reaches the venue and every close answers with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_of_one_position_asked_at_once_inside_the_engine_send_one_order() {
    let mut e = engine().await;
    let r = e.trade("BTCUSDT", "LONG", "0.003").await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let exec = e.app.executor.get().unwrap().clone();
    let orders_before = e.orders().await;
    let closes: Vec<_> = (0..4)
        .map(|_| {
            let (exec, account, pos) = (exec.clone(), e.account.clone(), pos.clone());
            tokio::spawn(async move { exec.close_sent(&account, &pos).await })
        })
        .collect();
    let mut sent = Vec::new();
    for c in closes {
        match c.await.unwrap() {
            Ok(engine::closing::Closed::Order(o)) => sent.push(o.client_order_id),
            other => panic!("{other:?}"),
        }
    }
    sent.dedup();
    assert_eq!(
        sent.len(),
        1,
        "every close answered with the one order: {sent:?}"
    );
    assert_eq!(e.orders().await, orders_before + 1);
    assert_eq!(e.venue_reaches("BTCUSDT", d("0.5")).await, d("0.5"));
    e.finish().await;
}
