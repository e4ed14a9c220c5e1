//! The JS gateway's contract end to end: commands through the Redis bus and over
//! HTTP into the running service (its engine on the built-in Binance simulator),
//! results on `pms:result:{requestId}`, idempotency in PostgreSQL, refusals with
//! stable codes, and the audit log.

mod common;

use std::time::Duration;

use common::bus::*;
use database::ledger;
use database::testing::TestDb;
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use simulators::testkit::unique_prefix;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_through_the_bus_fills_and_its_result_carries_the_position() {
    let mut e = engine().await;
    let env = e.envelope("trade", market("0.002"));
    let r = e.send("trade", env.clone()).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["requestId"], env["requestId"]);
    assert_eq!(r["body"]["order"]["status"], "FILLED", "{r}");
    assert_eq!(r["body"]["position"]["side"], "LONG", "{r}");
    assert_eq!(r["body"]["position"]["quantity"], 0.002, "{r}");
    assert!(r["headers"]["X-Server-Latency-Ms"].is_string());
    // The audit log has it, with who asked.
    let (kind, user, status): (String, Option<String>, i32) =
        sqlx::query_as("SELECT kind, user_id, http_status FROM audit_log WHERE request_id = $1")
            .bind(env["requestId"].as_str().unwrap())
            .fetch_one(&e.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), user.as_deref(), status),
        ("trade", Some(USER), 201)
    );
    // Append-only.
    assert!(sqlx::query("DELETE FROM audit_log")
        .execute(&e.db.pool)
        .await
        .is_err());
    // The heartbeat is there while the engine takes commands.
    let hb: Option<String> = e
        .redis
        .get(format!("{}engine:heartbeat", e.prefix))
        .await
        .unwrap();
    assert!(hb.is_some(), "no heartbeat");
    // A sell of 0.003 against the long closes all of it and opens 0.003 short (the
    // JS flip, one order of 0.005): the JS `flipped` body.
    let flip = json!({"symbol": "BTCUSDT", "side": "SHORT", "quantity": "0.003", "leverage": 10});
    let f = e.send("trade", e.envelope("trade", flip)).await;
    assert_eq!(f["httpStatus"], 201, "{f}");
    assert_eq!(
        f["body"]["flipped"]["closedPosition"]["side"], "LONG",
        "{f}"
    );
    assert!(f["body"]["flipped"]["closePnl"].is_number(), "{f}");
    assert_eq!(f["body"]["position"]["side"], "SHORT", "{f}");
    assert_eq!(f["body"]["position"]["quantity"], 0.003, "{f}");
    assert_eq!(f["body"]["order"]["quantity"], 0.005, "{f}");
    let r = f;
    // Closing it through the bus (a kill switch).
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let env = e.envelope("close", json!({"positionId": pos}));
    let r = e.send("close", env).await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_from_two_gateways_at_once_places_one_order() {
    let mut e = engine().await;
    let mut first = e.envelope("trade", market("0.002"));
    first["idempotencyKey"] = "key-1".into();
    let mut second = first.clone();
    second["requestId"] = request_id().into();
    e.push("trade", &first).await;
    e.push("trade", &second).await;
    let a = e.result(first["requestId"].as_str().unwrap()).await;
    let b = e.result(second["requestId"].as_str().unwrap()).await;
    assert_eq!(e.orders().await, 1, "one order: {a} {b}");
    let statuses = [a["httpStatus"].as_u64(), b["httpStatus"].as_u64()];
    assert!(statuses.contains(&Some(201)), "{a} {b}");
    for r in [&a, &b] {
        let s = r["httpStatus"].as_u64().unwrap();
        assert!(
            s == 201 || (s == 409 && r["code"] == "IDEMPOTENCY_IN_PROGRESS"),
            "{r}"
        );
    }
    // Once done: the same key and body → the first result, no new order.
    let mut again = first.clone();
    again["requestId"] = request_id().into();
    let r = e.send("trade", again).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(e.orders().await, 1);
    // A redelivered requestId → the first result.
    let r = e.send("trade", first.clone()).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    // The same key with another body → 422.
    let mut other = e.envelope("trade", market("0.003"));
    other["idempotencyKey"] = "key-1".into();
    let r = e.send("trade", other).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(422), Some("IDEMPOTENCY_KEY_REUSED"))
    );
    assert_eq!(e.orders().await, 1);
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_get_a_stable_code_and_the_consumer_keeps_going() {
    let mut e = engine().await;
    // Unanswerable (no requestId, not JSON): dropped with a logged reason.
    let _: i64 = e
        .redis
        .rpush(format!("{}cmd:trade", e.prefix), "{not json")
        .await
        .unwrap();
    let _: i64 = e
        .redis
        .rpush(format!("{}cmd:trade", e.prefix), r#"{"symbol":"BTCUSDT"}"#)
        .await
        .unwrap();
    let cases: Vec<(&str, Value, u64, &str)> = vec![
        (
            "trade",
            json!({"symbol": "BTCUSDT", "side": "LONG"}),
            400,
            "MISSING_FIELDS",
        ),
        (
            "trade",
            json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": "NaN", "leverage": 10}),
            400,
            "INVALID_FIELD",
        ),
        (
            "trade",
            json!({"symbol": "BTCUSDT", "side": "UP", "quantity": 1, "leverage": 10}),
            400,
            "INVALID_SIDE",
        ),
        (
            "trade",
            json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": [1], "leverage": 10}),
            400,
            "INVALID_FIELD",
        ),
        (
            "trade",
            json!({"subAccountId": "00000000-0000-4000-8000-000000000000", "symbol": "BTCUSDT",
                         "side": "LONG", "quantity": 0.002, "leverage": 10}),
            404,
            "ACCOUNT_NOT_FOUND",
        ),
        (
            "trade",
            json!({"userId": OTHER_USER, "symbol": "BTCUSDT", "side": "LONG",
                         "quantity": 0.002, "leverage": 10}),
            403,
            "FORBIDDEN",
        ),
        (
            "trade",
            json!({"deadlineTs": now() - 1, "symbol": "BTCUSDT", "side": "LONG",
                         "quantity": 0.002, "leverage": 10}),
            408,
            "COMMAND_EXPIRED",
        ),
        (
            "trade",
            json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": 5, "leverage": 10}),
            400,
            "MAX_NOTIONAL_EXCEEDED",
        ),
        (
            "trade",
            json!({"symbol": "NOPEUSDT", "side": "LONG", "quantity": 1, "leverage": 10}),
            400,
            "INVALID_SYMBOL",
        ),
        (
            "trade",
            json!({"pad": "x".repeat(70_000), "symbol": "BTCUSDT", "side": "LONG",
                         "quantity": 0.002, "leverage": 10}),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "balance_adjust",
            json!({"amount": 5, "reason": "gift"}),
            403,
            "FORBIDDEN",
        ),
        ("chase_start", json!({}), 501, "NOT_SUPPORTED_YET"),
        (
            "cancel_order",
            json!({"orderId": "00000000-0000-4000-8000-000000000000"}),
            404,
            "ORDER_NOT_FOUND",
        ),
        (
            "close",
            json!({"positionId": "nope"}),
            404,
            "POSITION_NOT_FOUND",
        ),
    ];
    for (kind, body, status, code) in cases {
        let env = e.envelope(kind, body.clone());
        let r = e.send(kind, env).await;
        assert_eq!(
            (
                r["httpStatus"].as_u64(),
                r["code"].as_str(),
                r["ok"].as_bool()
            ),
            (Some(status), Some(code), Some(false)),
            "{kind} {body}: {r}"
        );
        assert!(r["body"]["error"].is_string(), "{r}");
    }
    assert_eq!(e.orders().await, 0, "nothing refused was sent");
    // And it still trades.
    let env = e.envelope("trade", market("0.002"));
    let r = e.send("trade", env).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_change_accounts_only_through_the_engine() {
    let mut e = engine().await;
    let admin = |e: &Engine, kind: &str, body: Value| {
        let mut v = e.envelope(kind, body);
        v["role"] = "ADMIN".into();
        v
    };
    let r = e
        .send(
            "account_create",
            admin(
                &e,
                "account_create",
                json!({"name": "bot-7", "accountType": "BOT",
                                                                    "initialBalance": 500}),
            ),
        )
        .await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["body"]["type"], "BOT");
    let id = r["body"]["id"].as_str().unwrap().to_owned();
    let mut adjust = admin(
        &e,
        "balance_adjust",
        json!({"amount": "-20.5", "reason": "fee refund"}),
    );
    adjust["subAccountId"] = id.clone().into();
    let r = e.send("balance_adjust", adjust).await;
    assert_eq!(r["body"]["newBalance"], 479.5, "{r}");
    let row = ledger::account(&e.db.pool, &id).await.unwrap().unwrap();
    assert_eq!(row.current_balance, "479.5".parse::<Decimal>().unwrap());
    // Frozen: orders refused; unfrozen: taken again.
    let r = e
        .send("account_freeze", admin(&e, "account_freeze", json!({})))
        .await;
    assert_eq!(r["body"]["status"], "FROZEN", "{r}");
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(400), Some("ACCOUNT_FROZEN")),
        "{r}"
    );
    let r = e
        .send("account_unfreeze", admin(&e, "account_unfreeze", json!({})))
        .await;
    assert_eq!(r["body"]["status"], "ACTIVE", "{r}");
    // Rules: a max notional under the order's refuses it.
    let r = e
        .send(
            "risk_rules_set",
            admin(&e, "risk_rules_set", json!({"maxNotionalPerTrade": 10})),
        )
        .await;
    assert_eq!(
        r["body"]["rules"]["maxNotionalPerTrade"].as_f64(),
        Some(10.0),
        "{r}"
    );
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(r["code"], "MAX_NOTIONAL_EXCEEDED", "{r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_http_need_the_token_and_answer_like_the_bus() {
    let e = engine().await;
    let addr = e.app.control_addr;
    let body = e.envelope("trade", market("0.002")).to_string();
    let (status, out) = common::http_post(addr, "/v1/cmd/trade", &[], &body).await;
    assert_eq!(status, 401, "{out}");
    assert!(!out.contains(TOKEN));
    let auth = format!("Bearer {TOKEN}");
    let (status, out) = common::http_post(
        addr,
        "/v1/cmd/trade",
        &[("Authorization", &auth), ("Idempotency-Key", "http-1")],
        &body,
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["body"]["order"]["status"], "FILLED", "{r}");
    // The same key, another body → 422.
    let other = e.envelope("trade", market("0.003")).to_string();
    let (status, out) = common::http_post(
        addr,
        "/v1/cmd/trade",
        &[("Authorization", &auth), ("Idempotency-Key", "http-1")],
        &other,
    )
    .await;
    assert_eq!(status, 422, "{out}");
    let (status, out) = common::http_post(
        addr,
        "/v1/cmd/frobnicate",
        &[("Authorization", &auth)],
        &body,
    )
    .await;
    assert_eq!(status, 404, "{out}");
    let (status, out) =
        common::http_post(addr, "/v1/cmd/trade", &[("Authorization", &auth)], "{oops").await;
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("INVALID_JSON"), "{out}");
    assert_eq!(e.orders().await, 1);
    // No secret in the audit log, in any form.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log
          WHERE command::text LIKE '%' || $1 || '%' OR result::text LIKE '%' || $1 || '%'
             OR command::text LIKE '%' || $2 || '%' OR result::text LIKE '%' || $2 || '%'",
    )
    .bind(TOKEN)
    .bind(JWT_SECRET)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    e.finish().await;
}

fn jwt(user: &str, role: &str) -> String {
    let exp = now() / 1000 + 3600;
    format!(
        "Bearer {}",
        gateway::auth::sign_hs256(JWT_SECRET, &json!({"id": user, "role": role, "exp": exp}))
    )
}

async fn get(e: &Engine, path: &str, auth: &str) -> (u16, Value) {
    let (status, body) = common::http_request(
        e.app.control_addr,
        "GET",
        path,
        &[("Authorization", auth)],
        "",
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_validate_answer_the_js_bodies_for_their_owner_only() {
    let mut e = engine().await;
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let gw = format!("Bearer {TOKEN}");
    let path = format!("/v1/accounts/{}/positions", e.account);
    let (status, v) = get(&e, &path, &gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["positions"][0]["quantity"], 0.002, "{v}");
    assert_eq!(v["positions"][0]["side"], "LONG");
    assert!(
        v["positions"][0]["markPrice"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(v["summary"]["positionCount"], 1);
    assert_eq!(v["account"]["id"], e.account.as_str());
    // The owner's own token reads; another user's is refused; a forged one too.
    let (status, v) = get(
        &e,
        &format!("/v1/accounts/{}/balance", e.account),
        &jwt(USER, "USER"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["balance"].as_f64().unwrap() > 9_000.0, "{v}");
    let (status, v) = get(
        &e,
        &format!("/v1/accounts/{}/margin", e.account),
        &jwt(OTHER_USER, "USER"),
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{v}"
    );
    let (status, _) = get(
        &e,
        &format!("/v1/accounts/{}/margin", e.account),
        &jwt(OTHER_USER, "ADMIN"),
    )
    .await;
    assert_eq!(status, 200);
    let forged = jwt(USER, "USER").replace("Bearer ", "Bearer x");
    let (status, _) = get(&e, &format!("/v1/accounts/{}/margin", e.account), &forged).await;
    assert_eq!(status, 401);
    let (status, v) = get(
        &e,
        "/v1/accounts/00000000-0000-4000-8000-000000000000/margin",
        &gw,
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_str()),
        (404, Some("ACCOUNT_NOT_FOUND")),
        "{v}"
    );
    // A user's token names the user of a command, whatever the body says.
    let mut env = e.envelope("trade", market("0.002"));
    env["userId"] = OTHER_USER.into();
    let (status, out) = common::http_request(
        e.app.control_addr,
        "POST",
        "/v1/cmd/trade",
        &[("Authorization", &jwt(USER, "USER"))],
        &env.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    // Validate, prices, markets.
    let body =
        json!({"symbol": "BTCUSDT", "side": "LONG", "quantity": 5, "leverage": 10}).to_string();
    let (status, out) = common::http_request(
        e.app.control_addr,
        "POST",
        &format!("/v1/accounts/{}/validate", e.account),
        &[("Authorization", &gw)],
        &body,
    )
    .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((status, v["valid"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(v["errors"][0]["code"], "MAX_NOTIONAL_EXCEEDED");
    let r = e
        .send("validate", e.envelope("validate", market("0.001")))
        .await;
    assert_eq!(r["body"]["valid"], true, "{r}");
    assert!(
        r["body"]["computedValues"]["requiredMargin"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{r}"
    );
    let (status, v) = get(&e, "/v1/prices/btcusdt", &gw).await;
    assert_eq!(
        (status, v["symbol"].as_str()),
        (200, Some("BTCUSDT")),
        "{v}"
    );
    let (status, v) = get(&e, "/v1/markets/BTCUSDT", &gw).await;
    assert!(
        status == 200 && v["tickSize"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    let (status, v) = get(&e, "/v1/nothing-here", &gw).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{v}"
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_close_goes_out_only_when_the_exchange_holds_the_side() {
    let mut e = engine().await;
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let mark = r["body"]["trade"]["price"].as_f64().unwrap();
    let price = format!("{:.1}", mark * 1.02);
    let r = e
        .send(
            "limit_close",
            e.envelope("limit_close", json!({"positionId": pos, "price": price})),
        )
        .await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(r["body"]["order"]["reduceOnly"], true, "{r}");
    assert_eq!(r["body"]["order"]["side"], "SHORT", "{r}");
    // Another sub-account's short that the exchange (less the house) does not hold:
    // not sent.
    let mut create = e.envelope(
        "account_create",
        json!({"name": "shorty", "initialBalance": 1000, "ownerUserId": USER}),
    );
    create["role"] = "ADMIN".into();
    let r = e.send("account_create", create).await;
    let other = r["body"]["id"].as_str().unwrap().to_owned();
    let mut short = e.envelope(
        "trade",
        json!({"symbol": "BTCUSDT", "side": "SHORT", "quantity": "0.002", "leverage": 10}),
    );
    short["subAccountId"] = other.clone().into();
    let r = e.send("trade", short).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let short_pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    // The venue loses the short (an operator's hand on the shared account): it holds
    // the house and the first account's long only.
    let held = e.app.binance_sim.as_ref().unwrap().positions()["BTCUSDT"];
    e.app
        .binance_sim
        .as_ref()
        .unwrap()
        .set_position_quietly("BTCUSDT", held + "0.002".parse::<Decimal>().unwrap());
    let before = e.orders().await;
    // Named from the wrong sub-account: refused as not its own.
    let wrong = e.envelope(
        "limit_close",
        json!({"positionId": short_pos, "price": price}),
    );
    let r = e.send("limit_close", wrong).await;
    assert_eq!(r["code"], "FORBIDDEN", "{r}");
    let mut close = e.envelope(
        "limit_close",
        json!({"positionId": short_pos, "price": price}),
    );
    close["subAccountId"] = other.clone().into();
    let r = e.send("limit_close", close).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(400), Some("POSITION_DESYNC")),
        "{r}"
    );
    assert_eq!(r["body"]["exchangeSide"], "LONG", "{r}");
    assert_eq!(r["body"]["virtualSide"], "SHORT", "{r}");
    assert_eq!(e.orders().await, before, "nothing sent");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_under_the_consumer_loses_no_command() {
    let proxy = database::testing::TcpProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let mut e = engine_via(format!("redis://{}", proxy.addr)).await;
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    // Redis unreachable (every connection closed, new ones refused) while a command
    // waits in its queue.
    proxy.cut();
    let env = e.envelope("trade", market("0.002"));
    e.push("trade", &env).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    let r = e.result(env["requestId"].as_str().unwrap()).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    // Then half-open for good (a forgotten flow) with the next one waiting.
    proxy.blackhole();
    let env = e.envelope("trade", market("0.002"));
    e.push("trade", &env).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    let r = e.result(env["requestId"].as_str().unwrap()).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    assert_eq!(e.orders().await, 3, "each command once");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_an_unknown_type_is_answered_not_left_to_time_out() {
    let mut e = engine().await;
    let env = e.envelope("frobnicate", json!({}));
    let r = e.send("frobnicate", env).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(404), Some("UNKNOWN_COMMAND")),
        "{r}"
    );
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_keeps_rising_across_an_engine_restart_and_the_log_keeps_the_events() {
    use futures_util::StreamExt;
    let mut e = engine().await;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("{}events:*", e.prefix))
        .await
        .unwrap();
    let mut events = pubsub.into_on_message();
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let mut before = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("order_filled")
            .unwrap();
        let v: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
        assert!(v["subAccountId"].is_string() && v["ts"].is_i64(), "{v}");
        before = before.max(v["seq"].as_u64().unwrap());
        if m.get_channel_name().ends_with("order_filled") {
            break;
        }
    }
    let (db_url, prefix) = (e.db.url(), e.prefix.clone());
    e.app.shutdown().await;
    e.app = start(db_url, prefix.clone(), "redis://127.0.0.1:6379".into()).await;
    let m = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = events.next().await.unwrap();
            let v: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            // What the first engine still had queued may arrive late; the new
            // engine's events are the ones above every seq seen so far.
            if seq > before {
                return v;
            }
        }
    })
    .await
    .expect("an event from the restarted engine");
    assert!(m["seq"].as_u64().unwrap() < 1 << 53, "{m}");
    // The capped log holds them in publish order, seq rising.
    let log: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}events:log"))
        .arg("-")
        .arg("+")
        .query_async(&mut e.redis)
        .await
        .unwrap();
    let seqs: Vec<u64> = log
        .iter()
        .map(|(_, fields)| {
            let data = &fields.iter().find(|(k, _)| k == "data").unwrap().1;
            serde_json::from_str::<Value>(data).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(seqs.len() >= 2, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}events:log"))
        .query_async(&mut e.redis)
        .await
        .unwrap();
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_a_dead_engine_left_in_flight_are_answered_at_the_next_start() {
    let db = TestDb::new().await;
    let prefix = unique_prefix("gw-replay");
    let account = user_account(&db, "replay").await;
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // One taken but never started, one that was running when the engine died.
    let envelope = |rid: &str| {
        json!({"v": 1, "type": "trade", "requestId": rid, "subAccountId": account,
               "userId": USER, "role": "USER", "symbol": "BTCUSDT", "side": "LONG",
               "quantity": 0.002, "leverage": 10})
    };
    let (fresh, running) = (request_id(), request_id());
    sqlx::query(
        "INSERT INTO command_requests (request_id, kind, sub_account_id, body, state)
         VALUES ($1, 'trade', $2, '{}', 'RUNNING')",
    )
    .bind(&running)
    .bind(&account)
    .execute(&db.pool)
    .await
    .unwrap();
    let inflight = format!("{prefix}inflight:main");
    for rid in [&fresh, &running] {
        let _: i64 = redis
            .rpush(&inflight, envelope(rid).to_string())
            .await
            .unwrap();
    }
    let app = start(db.url(), prefix.clone(), "redis://127.0.0.1:6379".into()).await;
    let result = |rid: String| {
        let key = format!("{prefix}result:{rid}");
        let mut c = redis.clone();
        async move {
            let got: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&key)
                .arg(30)
                .query_async(&mut c)
                .await
                .unwrap();
            serde_json::from_str::<Value>(&got.expect("a result").1).unwrap()
        }
    };
    let r = result(fresh.clone()).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let r = result(running.clone()).await;
    assert_eq!(
        (r["httpStatus"].as_u64(), r["code"].as_str()),
        (Some(503), Some("ENGINE_RESTARTED")),
        "{r}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        n, 1,
        "the one never started ran once; the running one not again"
    );
    let left: i64 = redis.llen(&inflight).await.unwrap();
    assert_eq!(left, 0, "nothing left in flight");
    app.shutdown().await;
    forget_keys(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_contract_is_what_the_engine_takes_and_publishes() {
    use futures_util::StreamExt;
    let mut e = engine().await;
    let (status, body) = common::http_get(e.app.control_addr, "/v1/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    // Every command's published example is taken (whatever the book then says).
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (name, s) in schemas.iter().filter(|(n, _)| n.starts_with("Command.")) {
        let kind = &name["Command.".len()..];
        let mut env = s["example"].clone();
        env["requestId"] = request_id().into();
        env["userId"] = USER.into();
        if env.get("subAccountId").is_some() {
            env["subAccountId"] = e.account.clone().into();
        }
        let by_bus = e.send(kind, env.clone()).await;
        // And over HTTP, as another request.
        env["requestId"] = request_id().into();
        let (status, out) = common::http_post(
            e.app.control_addr,
            &format!("/v1/cmd/{kind}"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            &env.to_string(),
        )
        .await;
        let by_http: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            Some(u64::from(status)),
            by_http["httpStatus"].as_u64(),
            "{out}"
        );
        for r in [by_bus, by_http] {
            let code = r["code"].as_str().unwrap_or("");
            assert!(
                ![
                    "MISSING_FIELDS",
                    "INVALID_FIELD",
                    "INVALID_SIDE",
                    "UNKNOWN_COMMAND",
                    "NOT_SUPPORTED_YET",
                    "FORBIDDEN"
                ]
                .contains(&code),
                "{kind}: the published example {env} was refused: {r}"
            );
        }
    }
    // Unfrozen, then every event a trade and its close publish matches its schema.
    let mut unfreeze = e.envelope("account_unfreeze", json!({}));
    unfreeze["role"] = "ADMIN".into();
    e.send("account_unfreeze", unfreeze).await;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("{}events:*", e.prefix))
        .await
        .unwrap();
    let mut events = pubsub.into_on_message();
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let r = e
        .send("close", e.envelope("close", json!({"positionId": pos})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let checker = common::schema::Schema::load();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("order_filled")
        && seen.contains("position_updated")
        && seen.contains("position_closed")
        && seen.contains("margin_update"))
    {
        let m = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"))
            .unwrap();
        let kind = m.get_channel_name().rsplit(':').next().unwrap().to_owned();
        let v: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
        let schema = &schemas
            .get(&format!("Event.{kind}"))
            .unwrap_or_else(|| panic!("{kind} is published but not documented"));
        let errors = checker.check_with(schema, &v);
        assert!(errors.is_empty(), "{kind}: {errors:?}\n{v}");
        seen.insert(kind);
    }
    e.finish().await;
}

/// The contract's document for people names every event and every error code the
/// engine can send.
#[test]
fn the_gateway_doc_names_every_event_and_code() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/trading/gateway.md"
    ))
    .unwrap();
    for (event, _) in gateway::schema::EVENTS {
        assert!(
            doc.contains(&format!("`{event}`")),
            "{event} is not in the doc"
        );
    }
    for code in gateway::schema::ERROR_CODES {
        assert!(
            doc.contains(&format!("`{code}`")),
            "{code} is not in the doc"
        );
    }
}

/// `GET /v1/accounts/{id}/pnl`: the account valued for the read (`current`, `asOf`) and
/// its PnL per symbol from its fills — a closed BTC round trip's gross, fees and net
/// (gross − fees, as the ledger booked them), an open ETH position's unrealized PnL —
/// with funding `null` (not attributed to sub-accounts); a bad interval is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pnl_read_says_each_symbols_realized_gross_fees_and_unrealized() {
    let mut e = engine().await;
    let r = e.send("trade", e.envelope("trade", market("0.002"))).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let pos = r["body"]["position"]["id"].as_str().unwrap().to_owned();
    let r = e
        .send("close", e.envelope("close", json!({"positionId": pos})))
        .await;
    assert_eq!(r["httpStatus"], 200, "{r}");
    let body = json!({"symbol": "ETHUSDT", "side": "LONG", "quantity": "0.01", "leverage": 10});
    let r = e.send("trade", e.envelope("trade", body)).await;
    assert_eq!(r["httpStatus"], 201, "{r}");
    let (gross, fees): (Decimal, Decimal) = sqlx::query_as(
        "SELECT coalesce(sum(realized_pnl), 0), sum(fee) FROM trade_executions
          WHERE sub_account_id = $1::uuid AND symbol = 'BTCUSDT'",
    )
    .bind(&e.account)
    .fetch_one(&e.db.pool)
    .await
    .unwrap();
    let gw = format!("Bearer {TOKEN}");
    let (status, v) = get(&e, &format!("/v1/accounts/{}/pnl", e.account), &gw).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["asOf"].as_i64().unwrap() > 0, "{v}");
    assert_eq!(v["current"]["positionCount"], 1, "{v}");
    let rows = v["bySymbol"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let btc = &rows[0];
    assert_eq!(btc["symbol"], "BTCUSDT");
    let n = |x: Decimal| serde_json::to_value(x.to_string().parse::<f64>().unwrap()).unwrap();
    assert!(fees > Decimal::ZERO);
    assert_eq!(btc["realizedGross"], n(gross), "{btc}");
    assert_eq!(btc["fees"], n(fees), "{btc}");
    assert_eq!(btc["realizedNet"], n(gross - fees), "{btc}");
    assert_eq!(btc["realizedNetToday"], n(gross - fees), "{btc}");
    assert!(btc["funding"].is_null());
    assert_eq!(btc["unrealizedPnl"], 0.0, "closed: {btc}");
    let eth = &rows[1];
    assert_eq!(eth["symbol"], "ETHUSDT");
    assert_eq!(eth["realizedGross"], 0.0, "{eth}");
    assert_eq!(
        eth["unrealizedPnl"], v["current"]["unrealizedPnl"],
        "the open position's: {v}"
    );
    let (status, v) = get(
        &e,
        &format!("/v1/accounts/{}/pnl?interval=week", e.account),
        &gw,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    e.finish().await;
}
