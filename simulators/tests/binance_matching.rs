//! The Binance simulator as a venue to trade against, over loopback with the signed
//! REST client and the user data stream: orders walk the book, partial fills, time in
//! force, resting fills as the market moves, fees and realized PnL in the wallet, the
//! venue's refusals, modify, history, leverage and the liquidation price.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;
use simulators::binance::{BinanceSim, BinanceSimConfig};
use streaming::binance::rest::{Keys, Rest, RestError};
use streaming::secret::Secret;
use tokio::sync::mpsc;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn dv(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .parse()
        .unwrap()
}

struct Venue {
    sim: BinanceSim,
    rest: Rest,
    /// Every user-stream payload, in arrival order.
    events: mpsc::UnboundedReceiver<Value>,
}

async fn venue(cfg: BinanceSimConfig) -> Venue {
    let sim = BinanceSim::bind(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let keys = Keys {
        api_key: Secret::new(sim.config().api_key.clone()),
        secret: Secret::new(sim.config().secret.clone()),
    };
    let rest = Rest::new(&sim.rest_url(), keys, Duration::from_secs(5)).unwrap();
    let key = rest.create_listen_key().await.unwrap();
    let url = format!("{}/ws/{}", sim.ws_url(), key.expose());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Ok(text) = msg.to_text() {
                if let Ok(v) = serde_json::from_str::<Value>(text) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Venue { sim, rest, events }
}

fn quiet() -> BinanceSimConfig {
    BinanceSimConfig {
        tick_interval: Duration::from_millis(20),
        ..BinanceSimConfig::default()
    }
}

impl Venue {
    async fn call(
        &self,
        method: Method,
        path: &str,
        p: &[(&str, &str)],
    ) -> Result<Value, RestError> {
        let p: Vec<(&str, String)> = p.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let body = self.rest.signed(method, path, &p).await?;
        Ok(serde_json::from_str(&body).unwrap())
    }

    async fn order(&self, p: &[(&str, &str)]) -> Result<Value, RestError> {
        let mut all = vec![("symbol", "BTCUSDT"), ("newOrderRespType", "RESULT")];
        all.extend_from_slice(p);
        self.call(Method::POST, "/fapi/v1/order", &all).await
    }

    async fn wallet(&self) -> Decimal {
        self.rest.account().await.unwrap().total_wallet_balance
    }

    /// The ORDER_TRADE_UPDATE payloads (`o`) of `order_id` seen so far, waiting until
    /// one has status `until`.
    async fn updates_until(&mut self, order_id: u64, until: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {until} for order {order_id}: {seen:?}"))
                .unwrap();
            if ev["e"] == "ORDER_TRADE_UPDATE" && ev["o"]["i"].as_u64() == Some(order_id) {
                let done = ev["o"]["X"] == until;
                seen.push(ev["o"].clone());
                if done {
                    return seen;
                }
            }
        }
    }
}

fn code(r: Result<Value, RestError>) -> Option<i64> {
    r.err().and_then(|e| e.code())
}

#[tokio::test]
async fn a_market_order_walks_the_book_and_pays_the_taker_fee_on_every_fill() {
    let mut v = venue(quiet()).await;
    v.sim.pause_market(true);
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let levels: Vec<(Decimal, Decimal)> = asks.into_iter().take(3).collect();
    // Two levels and a bit of the third.
    let qty = levels[0].1 + levels[1].1 + d("0.001");
    let wallet = v.wallet().await;
    let placed = v
        .order(&[
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", &qty.to_string()),
        ])
        .await
        .unwrap();
    assert_eq!(placed["status"], "FILLED");
    let quote = levels[0].0 * levels[0].1 + levels[1].0 * levels[1].1 + levels[2].0 * d("0.001");
    assert_eq!(dv(&placed["cumQuote"]), quote);
    let avg = dv(&placed["avgPrice"]);
    assert!(
        avg > levels[0].0 && avg < levels[2].0,
        "{avg} does not reflect depth"
    );
    let id = placed["orderId"].as_u64().unwrap();
    let updates = v.updates_until(id, "FILLED").await;
    let kinds: Vec<&str> = updates.iter().map(|o| o["x"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["NEW", "TRADE", "TRADE", "TRADE"]);
    let mut cum = Decimal::ZERO;
    let mut ids = std::collections::BTreeSet::new();
    let mut fees = Decimal::ZERO;
    for (o, (price, _)) in updates[1..].iter().zip(&levels) {
        cum += dv(&o["l"]);
        assert_eq!(dv(&o["z"]), cum, "cumulative quantity");
        assert_eq!(dv(&o["L"]), *price);
        assert_eq!(o["m"], false);
        assert!(ids.insert(o["t"].as_u64().unwrap()), "trade ids are unique");
        let fee = dv(&o["n"]);
        assert_eq!(fee, (dv(&o["L"]) * dv(&o["l"]) * d("0.0005")).round_dp(8));
        fees += fee;
    }
    // Opening a position realizes nothing: the wallet pays the fees only.
    assert_eq!(v.wallet().await, wallet - fees);
    let trades = v
        .call(
            Method::GET,
            "/fapi/v1/userTrades",
            &[("symbol", "BTCUSDT"), ("orderId", &id.to_string())],
        )
        .await
        .unwrap();
    assert_eq!(trades.as_array().unwrap().len(), 3);
    // The levels it took are gone from the venue's book.
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    assert!(!asks.contains_key(&levels[0].0) && !asks.contains_key(&levels[1].0));
    assert_eq!(asks[&levels[2].0], levels[2].1 - d("0.001"));
}

#[tokio::test]
async fn time_in_force_decides_what_rests_expires_or_is_refused() {
    let mut v = venue(quiet()).await;
    v.sim.pause_market(true);
    let (bids, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let (best_ask, ask_qty) = asks.iter().next().map(|(p, q)| (*p, *q)).unwrap();
    let best_bid = *bids.keys().next_back().unwrap();
    // IOC at the best ask for more than it holds: fills that level, expires the rest.
    let more = (ask_qty + d("0.5")).to_string();
    let ioc = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "IOC"),
            ("quantity", &more),
            ("price", &best_ask.to_string()),
        ])
        .await
        .unwrap();
    assert_eq!(ioc["status"], "EXPIRED");
    assert_eq!(dv(&ioc["executedQty"]), ask_qty);
    let id = ioc["orderId"].as_u64().unwrap();
    let seq: Vec<String> = v
        .updates_until(id, "EXPIRED")
        .await
        .iter()
        .map(|o| format!("{}/{}", o["x"].as_str().unwrap(), o["X"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seq,
        ["NEW/NEW", "TRADE/PARTIALLY_FILLED", "EXPIRED/EXPIRED"]
    );
    // FOK that cannot fill completely is refused and never recorded.
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let (touch, touch_qty) = asks.iter().next().map(|(p, q)| (*p, *q)).unwrap();
    let over = (touch_qty + d("0.001")).to_string();
    let fok = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "FOK"),
            ("quantity", &over),
            ("price", &touch.to_string()),
        ])
        .await;
    assert_eq!(code(fok), Some(-5021));
    // Post-only that would take is refused; one below the touch rests.
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let touch = asks.keys().next().unwrap().to_string();
    let gtx = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTX"),
            ("quantity", "0.01"),
            ("price", &touch),
        ])
        .await;
    assert_eq!(code(gtx), Some(-5022));
    let maker = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTX"),
            ("quantity", "0.01"),
            ("price", &best_bid.to_string()),
        ])
        .await
        .unwrap();
    assert_eq!(maker["status"], "NEW");
    let all = v
        .call(Method::GET, "/fapi/v1/allOrders", &[("symbol", "BTCUSDT")])
        .await
        .unwrap();
    let statuses: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["EXPIRED", "NEW"],
        "refused orders leave no record"
    );
}

#[tokio::test]
async fn a_resting_order_fills_in_parts_as_the_market_trades_through_it() {
    let mut v = venue(BinanceSimConfig {
        resting_liquidity: 100,
        ..quiet()
    })
    .await;
    let (bids, _, _) = v.sim.book("BTCUSDT").unwrap();
    // At the best bid; then the market drops through it. 0.5 BTC at 0.1 per step
    // needs several steps.
    let price = bids.keys().next_back().unwrap().to_string();
    let placed = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "0.5"),
            ("price", &price),
        ])
        .await
        .unwrap();
    assert_eq!(placed["status"], "NEW");
    let id = placed["orderId"].as_u64().unwrap();
    assert!(v.sim.move_price("BTCUSDT", -30));
    let updates = v.updates_until(id, "FILLED").await;
    let trades: Vec<&Value> = updates.iter().filter(|o| o["x"] == "TRADE").collect();
    assert!(
        trades.len() >= 5,
        "fills per step are bounded: {}",
        trades.len()
    );
    for t in &trades {
        assert_eq!(dv(&t["L"]), d(&price), "a maker fills at its own price");
        assert_eq!(t["m"], true);
        assert_eq!(
            dv(&t["n"]),
            (dv(&t["L"]) * dv(&t["l"]) * d("0.0002")).round_dp(8)
        );
        assert!(dv(&t["l"]) <= d("0.1"));
    }
    assert_eq!(trades.last().unwrap()["X"], "FILLED");
    assert_eq!(dv(&trades.last().unwrap()["z"]), d("0.5"));
}

#[tokio::test]
async fn the_venue_refuses_what_its_rules_forbid_and_records_nothing() {
    let v = venue(quiet()).await;
    v.sim.set_position("BTCUSDT", Decimal::ZERO);
    let reduce = v
        .order(&[
            ("side", "SELL"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("reduceOnly", "true"),
        ])
        .await;
    assert_eq!(code(reduce), Some(-2022), "nothing to reduce");
    let tiny = v
        .order(&[("side", "BUY"), ("type", "MARKET"), ("quantity", "0.00001")])
        .await;
    assert_eq!(code(tiny), Some(-1111));
    let dust = v
        .call(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "ETHUSDT"),
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "0.001"),
            ],
        )
        .await;
    assert_eq!(
        code(dust),
        Some(-4164),
        "3 USDT is under the minimum notional"
    );
    let bad_id = v
        .order(&[
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "no spaces allowed"),
        ])
        .await;
    assert_eq!(code(bad_id), Some(-4015));
    v.call(
        Method::POST,
        "/fapi/v1/leverage",
        &[("symbol", "BTCUSDT"), ("leverage", "1")],
    )
    .await
    .unwrap();
    let huge = v
        .order(&[("side", "BUY"), ("type", "MARKET"), ("quantity", "10")])
        .await;
    assert_eq!(
        code(huge),
        Some(-2019),
        "600 000 USDT at 1x on a 100 000 wallet"
    );
    let mark = v.sim.mark("BTCUSDT").unwrap();
    let far = (mark * d("1.2")).round_dp(1).to_string();
    let band = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "0.01"),
            ("price", &far),
        ])
        .await;
    assert_eq!(code(band), Some(-4016), "above the percent-price band");
    let all = v
        .call(Method::GET, "/fapi/v1/allOrders", &[("symbol", "BTCUSDT")])
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 0, "{all}");
}

#[tokio::test]
async fn closing_realizes_pnl_into_the_wallet_less_every_fee() {
    let v = venue(quiet()).await;
    v.sim.set_position("BTCUSDT", Decimal::ZERO);
    let wallet = v.wallet().await;
    for (side, qty) in [
        ("BUY", "0.3"),
        ("BUY", "0.2"),
        ("SELL", "0.6"),
        ("BUY", "0.1"),
    ] {
        v.order(&[("side", side), ("type", "MARKET"), ("quantity", qty)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let held = v.sim.positions().get("BTCUSDT").copied();
    assert_eq!(held.unwrap_or_default(), Decimal::ZERO, "flat again");
    let trades = v
        .call(Method::GET, "/fapi/v1/userTrades", &[("symbol", "BTCUSDT")])
        .await
        .unwrap();
    let (mut realized, mut fees) = (Decimal::ZERO, Decimal::ZERO);
    for t in trades.as_array().unwrap() {
        realized += dv(&t["realizedPnl"]);
        fees += dv(&t["commission"]);
    }
    assert!(!realized.is_zero(), "the book moved between the trades");
    assert_eq!(v.wallet().await, wallet + realized - fees);
}

#[tokio::test]
async fn a_modified_order_keeps_its_ids_and_fills_if_it_now_crosses() {
    let mut v = venue(quiet()).await;
    v.sim.pause_market(true);
    let (bids, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let low = (*bids.keys().next_back().unwrap() - d("50")).to_string();
    let placed = v
        .order(&[
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "0.01"),
            ("price", &low),
            ("newClientOrderId", "mod-1"),
        ])
        .await
        .unwrap();
    let id = placed["orderId"].as_u64().unwrap();
    let touch = asks.keys().next().unwrap().to_string();
    let modified = v
        .call(
            Method::PUT,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("origClientOrderId", "mod-1"),
                ("side", "BUY"),
                ("quantity", "0.01"),
                ("price", &touch),
            ],
        )
        .await
        .unwrap();
    assert_eq!(modified["orderId"].as_u64(), Some(id));
    assert_eq!(modified["status"], "FILLED");
    let kinds: Vec<String> = v
        .updates_until(id, "FILLED")
        .await
        .iter()
        .map(|o| o["x"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["NEW", "AMENDMENT", "TRADE"]);
    let again = v
        .call(
            Method::PUT,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("orderId", &id.to_string()),
                ("side", "BUY"),
                ("quantity", "0.02"),
                ("price", &touch),
            ],
        )
        .await;
    assert_eq!(
        code(again),
        Some(-5027),
        "a filled order cannot be modified"
    );
}

#[tokio::test]
async fn leverage_is_stored_announced_and_moves_the_liquidation_price() {
    let mut v = venue(quiet()).await;
    v.sim.set_position("BTCUSDT", d("5"));
    let set = v
        .call(
            Method::POST,
            "/fapi/v1/leverage",
            &[("symbol", "BTCUSDT"), ("leverage", "50")],
        )
        .await
        .unwrap();
    assert_eq!(set["leverage"], 50);
    assert_eq!(set["maxNotionalValue"], "3000000");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, v.events.recv())
            .await
            .expect("ACCOUNT_CONFIG_UPDATE")
            .unwrap();
        if ev["e"] == "ACCOUNT_CONFIG_UPDATE" {
            assert_eq!(ev["ac"]["s"], "BTCUSDT");
            assert_eq!(ev["ac"]["l"], 50);
            break;
        }
    }
    let risk = v
        .call(Method::GET, "/fapi/v2/positionRisk", &[])
        .await
        .unwrap();
    let btc = risk
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["symbol"] == "BTCUSDT")
        .unwrap()
        .clone();
    assert_eq!(btc["leverage"], "50");
    let lp = dv(&btc["liquidationPrice"]);
    let entry = dv(&btc["entryPrice"]);
    assert!(
        lp > Decimal::ZERO && lp < entry,
        "a long's liquidation price {lp} is below {entry}"
    );
    assert_eq!(
        code(
            v.call(
                Method::POST,
                "/fapi/v1/leverage",
                &[("symbol", "BTCUSDT"), ("leverage", "126")]
            )
            .await
        ),
        Some(-4028)
    );
}

// The failure switches: what the client sees, and what the venue really did.

use simulators::binance::failures::{OrderFault, Selector, StreamFault};

impl Venue {
    async fn by_client_id(&self, cid: &str) -> Result<Value, RestError> {
        self.call(
            Method::GET,
            "/fapi/v1/order",
            &[("symbol", "BTCUSDT"), ("origClientOrderId", cid)],
        )
        .await
    }

    /// Every ORDER_TRADE_UPDATE (`o`) arriving within `window`.
    async fn updates_within(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if ev["e"] == "ORDER_TRADE_UPDATE" {
                seen.push(ev["o"].clone());
            }
        }
        seen
    }
}

#[tokio::test]
async fn an_accepted_order_can_answer_503_or_1007_and_still_exist() {
    let v = venue(quiet()).await;
    for (fault, cid, status, want) in [
        (OrderFault::AcceptThen503, "amb-503", 503, -1000),
        (OrderFault::AcceptThen1007, "amb-1007", 408, -1007),
    ] {
        v.sim.order_fault(fault, Selector::ClientId(cid.into()));
        let err = v
            .order(&[
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "0.01"),
                ("newClientOrderId", cid),
            ])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(want), "{err}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        let real = v.by_client_id(cid).await.unwrap();
        assert_eq!(real["status"], "FILLED", "the venue executed it");
    }
}

#[tokio::test]
async fn a_batch_answered_503_was_executed_whole() {
    let v = venue(quiet()).await;
    v.sim
        .order_fault(OrderFault::AcceptThen503, Selector::Next(1));
    let batch = r#"[{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","quantity":"0.01","price":"30000","newClientOrderId":"bt-1"},{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","quantity":"0.01","price":"30001","newClientOrderId":"bt-2"}]"#;
    let err = v
        .call(
            Method::POST,
            "/fapi/v1/batchOrders",
            &[("batchOrders", batch)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(-1000), "{err}");
    for cid in ["bt-1", "bt-2"] {
        assert_eq!(
            v.by_client_id(cid).await.unwrap()["status"],
            "NEW",
            "{cid} exists"
        );
    }
}

#[tokio::test]
async fn an_accepted_order_whose_reply_never_comes_exists_and_a_refused_one_does_not() {
    let v = venue(BinanceSimConfig {
        hang: Duration::from_secs(5),
        ..quiet()
    })
    .await;
    let impatient = Rest::new(
        &v.sim.rest_url(),
        Keys {
            api_key: Secret::new(v.sim.config().api_key.clone()),
            secret: Secret::new(v.sim.config().secret.clone()),
        },
        Duration::from_millis(500),
    )
    .unwrap();
    v.sim
        .order_fault(OrderFault::AcceptThenTimeout, Selector::Next(1));
    let p: Vec<(&str, String)> = [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "MARKET"),
        ("quantity", "0.01"),
        ("newClientOrderId", "hung-1"),
    ]
    .iter()
    .map(|(k, v)| (*k, (*v).to_owned()))
    .collect();
    let err = impatient
        .signed(Method::POST, "/fapi/v1/order", &p)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        None,
        "a transport timeout, not a venue answer: {err}"
    );
    assert_eq!(v.by_client_id("hung-1").await.unwrap()["status"], "FILLED");

    v.sim
        .order_fault(OrderFault::RejectBeforeEngine, Selector::Next(1));
    let err = v
        .order(&[
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "never-1"),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(-1001));
    assert_eq!(
        code(v.by_client_id("never-1").await),
        Some(-2013),
        "nothing was executed"
    );
}

#[tokio::test]
async fn one_orders_stream_events_can_be_dropped_duplicated_delayed_or_reordered() {
    let mut v = venue(quiet()).await;
    let market = |cid: &'static str| {
        [
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", cid),
        ]
    };
    v.sim
        .stream_fault(StreamFault::Drop, Selector::ClientId("s-drop".into()));
    v.order(&market("s-drop")).await.unwrap();
    v.order(&market("s-ok")).await.unwrap();
    let seen = v.updates_within(Duration::from_millis(500)).await;
    let cids: Vec<&str> = seen.iter().map(|o| o["c"].as_str().unwrap()).collect();
    assert!(
        !cids.contains(&"s-drop") && cids.contains(&"s-ok"),
        "{cids:?}"
    );
    assert_eq!(v.by_client_id("s-drop").await.unwrap()["status"], "FILLED");

    v.sim
        .stream_fault(StreamFault::Duplicate, Selector::Next(1));
    v.order(&market("s-dup")).await.unwrap();
    let seen = v.updates_within(Duration::from_millis(500)).await;
    let trades: Vec<u64> = seen
        .iter()
        .filter(|o| o["x"] == "TRADE")
        .map(|o| o["t"].as_u64().unwrap())
        .collect();
    assert!(
        trades.len() >= 2 && trades.len().is_multiple_of(2),
        "{trades:?}"
    );
    assert_eq!(trades[0], trades[1], "the same trade id twice");

    v.sim.stream_fault(StreamFault::Reorder, Selector::Next(1));
    v.order(&market("s-rev")).await.unwrap();
    let seen = v.updates_within(Duration::from_millis(500)).await;
    assert_eq!(seen.first().unwrap()["x"], "TRADE");
    assert_eq!(seen.last().unwrap()["x"], "NEW");

    v.sim.stream_fault(
        StreamFault::Delay(Duration::from_millis(800)),
        Selector::Next(1),
    );
    let sent = tokio::time::Instant::now();
    v.order(&market("s-late")).await.unwrap();
    assert!(v
        .updates_within(Duration::from_millis(500))
        .await
        .is_empty());
    let late = v.updates_within(Duration::from_millis(1000)).await;
    assert_eq!(late.first().unwrap()["c"], "s-late");
    assert!(sent.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_server_clock_offset_is_what_time_says_and_what_timestamps_are_judged_by() {
    let v = venue(quiet()).await;
    v.sim.set_clock_offset(-10_000);
    let server: Value =
        serde_json::from_str(&v.rest.public("/fapi/v1/time", &[]).await.unwrap()).unwrap();
    let behind = chrono::Utc::now().timestamp_millis() - server["serverTime"].as_i64().unwrap();
    assert!((9_000..11_000).contains(&behind), "{behind}");
    // A request stamped with our own clock is now 10 s ahead of the venue's.
    let refused: Value = raw(&v, Method::GET, "/fapi/v2/balance", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refused["code"], -1021, "{refused}");
    // A client that measures the offset (ours does) is not refused.
    v.call(Method::GET, "/fapi/v2/balance", &[]).await.unwrap();
    v.sim.set_clock_offset(0);
    let r = raw(&v, Method::GET, "/fapi/v2/balance", "").await;
    assert!(r.status().is_success());
}

/// A request signed with our own clock, sent raw: for headers and exact bodies.
async fn raw(v: &Venue, method: Method, path: &str, params: &str) -> reqwest::Response {
    let payload = format!(
        "{params}{}timestamp={}",
        if params.is_empty() { "" } else { "&" },
        chrono::Utc::now().timestamp_millis()
    );
    let sig = streaming::binance::sign::sign(v.sim.config().secret.as_bytes(), payload.as_bytes());
    reqwest::Client::new()
        .request(
            method,
            format!("{}{path}?{payload}&signature={sig}", v.sim.rest_url()),
        )
        .header("X-MBX-APIKEY", v.sim.config().api_key.clone())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn order_counts_are_reported_and_limited() {
    let v = venue(BinanceSimConfig {
        orders_per_10s: 3,
        ..quiet()
    })
    .await;
    let p = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30000";
    // Within one 10 s window the counter goes 1, 2, 3 and the 4th is refused; a
    // window boundary during the test resets it once, so seven tries always see -1015.
    let mut counts = Vec::new();
    let mut refused = None;
    for _ in 0..7 {
        let r = raw(&v, Method::POST, "/fapi/v1/order", p).await;
        if r.status() == 429 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert!(r.status().is_success());
        assert!(r.headers().contains_key("x-mbx-order-count-1m"));
        let c: u64 = r.headers()["x-mbx-order-count-10s"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        counts.push(c);
    }
    assert_eq!(refused.expect("the limit held")["code"], -1015);
    assert!(counts.ends_with(&[1, 2, 3]), "{counts:?}");
    // Reads are not orders.
    let r = raw(&v, Method::GET, "/fapi/v1/openOrders", "symbol=BTCUSDT").await;
    assert!(!r.headers().contains_key("x-mbx-order-count-10s"));
}

#[tokio::test]
async fn the_dead_man_switch_cancels_open_orders_unless_refreshed() {
    let v = venue(quiet()).await;
    let p = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30000";
    assert!(raw(&v, Method::POST, "/fapi/v1/order", p)
        .await
        .status()
        .is_success());
    let armed = raw(
        &v,
        Method::POST,
        "/fapi/v1/countdownCancelAll",
        "symbol=BTCUSDT&countdownTime=300",
    )
    .await;
    let body: Value = armed.json().await.unwrap();
    assert_eq!(body["countdownTime"], "300");
    let open = || async {
        v.call(Method::GET, "/fapi/v1/openOrders", &[("symbol", "BTCUSDT")])
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(open().await, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(open().await, 0, "the countdown ran out");
    // Switched off in time: nothing happens.
    assert!(raw(&v, Method::POST, "/fapi/v1/order", p)
        .await
        .status()
        .is_success());
    raw(
        &v,
        Method::POST,
        "/fapi/v1/countdownCancelAll",
        "symbol=BTCUSDT&countdownTime=300",
    )
    .await;
    raw(
        &v,
        Method::POST,
        "/fapi/v1/countdownCancelAll",
        "symbol=BTCUSDT&countdownTime=0",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(open().await, 1);
}

impl Venue {
    /// Every user-stream event arriving within `window`.
    async fn events_within(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            seen.push(ev);
        }
        seen
    }
}

#[tokio::test]
async fn the_venue_liquidates_after_a_margin_call_and_deleverages_without_a_fee() {
    let mut v = venue(quiet()).await;
    v.sim.set_position("BTCUSDT", d("0.5"));
    v.events_within(Duration::from_millis(200)).await;
    let wallet = v.wallet().await;
    assert!(v.sim.force_close("BTCUSDT", "BOTH", false));
    let seen = v.events_within(Duration::from_millis(300)).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e["e"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "MARGIN_CALL", "{kinds:?}");
    assert_eq!(seen[0]["p"][0]["s"], "BTCUSDT");
    let trade = seen
        .iter()
        .find(|e| e["e"] == "ORDER_TRADE_UPDATE" && e["o"]["X"] == "FILLED")
        .expect("the liquidation fill");
    let o = &trade["o"];
    assert!(o["c"].as_str().unwrap().starts_with("autoclose-"), "{o}");
    assert_eq!(
        (o["o"].as_str(), o["x"].as_str(), o["S"].as_str()),
        (Some("LIQUIDATION"), Some("CALCULATED"), Some("SELL"))
    );
    let fee = dv(&o["n"]);
    assert_eq!(fee, (dv(&o["L"]) * d("0.5") * d("0.0125")).round_dp(8));
    assert!(kinds.contains(&"ACCOUNT_UPDATE"));
    assert_eq!(
        v.sim
            .positions()
            .get("BTCUSDT")
            .copied()
            .unwrap_or_default(),
        Decimal::ZERO
    );
    assert_eq!(v.wallet().await, wallet + dv(&o["rp"]) - fee);

    v.sim.set_position("ETHUSDT", d("-2"));
    v.events_within(Duration::from_millis(200)).await;
    assert!(v.sim.force_close("ETHUSDT", "BOTH", true));
    let seen = v.events_within(Duration::from_millis(300)).await;
    assert!(seen.iter().all(|e| e["e"] != "MARGIN_CALL"));
    let o = &seen
        .iter()
        .find(|e| e["e"] == "ORDER_TRADE_UPDATE" && e["o"]["X"] == "FILLED")
        .expect("the ADL fill")["o"];
    assert_eq!(
        (o["c"].as_str(), o["S"].as_str(), o["x"].as_str()),
        (Some("adl_autoclose"), Some("BUY"), Some("TRADE"))
    );
    assert_eq!(dv(&o["n"]), Decimal::ZERO);
    assert!(
        !v.sim.force_close("ETHUSDT", "BOTH", true),
        "nothing left to close"
    );
}

/// Checks one order's ORDER_TRADE_UPDATEs form a sequence the venue can send: NEW
/// first; TRADEs with cumulative quantity rising by each last quantity and never past
/// the order; a final state last; nothing after it.
fn valid_sequence(events: &[Value]) -> Result<(), String> {
    let first = events.first().ok_or("no events")?;
    if first["x"] != "NEW" || first["X"] != "NEW" {
        return Err(format!("starts with {first}"));
    }
    let mut qty = dv(&first["q"]);
    let mut cum = Decimal::ZERO;
    let mut done = false;
    for e in &events[1..] {
        if done {
            return Err(format!("event after the final state: {e}"));
        }
        let (x, st) = (e["x"].as_str().unwrap(), e["X"].as_str().unwrap());
        match x {
            "TRADE" | "CALCULATED" => {
                cum += dv(&e["l"]);
                if dv(&e["z"]) != cum || cum > qty {
                    return Err(format!("cumulative {} vs {cum} of {qty}", e["z"]));
                }
                let want = if cum == qty {
                    "FILLED"
                } else {
                    "PARTIALLY_FILLED"
                };
                if st != want {
                    return Err(format!("status {st} after {cum} of {qty}"));
                }
            }
            // A modify can change the quantity, never below what is filled.
            "AMENDMENT" if matches!(st, "NEW" | "PARTIALLY_FILLED") => {
                qty = dv(&e["q"]);
                if qty <= cum {
                    return Err(format!("amended to {qty} with {cum} filled"));
                }
            }
            "CANCELED" | "EXPIRED" if st == x => {}
            _ => return Err(format!("unexpected {x}/{st}")),
        }
        done = matches!(st, "FILLED" | "CANCELED" | "EXPIRED");
    }
    Ok(())
}

#[tokio::test]
async fn random_trading_produces_only_valid_venue_sequences_and_unique_trade_ids() {
    let mut v = venue(BinanceSimConfig {
        resting_liquidity: 50,
        ..quiet()
    })
    .await;
    v.sim.set_position("BTCUSDT", Decimal::ZERO);
    let mut rng = streaming::rng::SplitMix64::new(7);
    let mut resting: Vec<u64> = Vec::new();
    for _ in 0..120 {
        let (bids, asks, _) = v.sim.book("BTCUSDT").unwrap();
        let mid = (*bids.keys().next_back().unwrap() + *asks.keys().next().unwrap()) / d("2");
        let side = if rng.below(2) == 0 { "BUY" } else { "SELL" };
        let qty = (d("0.001") * Decimal::from(1 + rng.below(400))).to_string();
        let offset = Decimal::from(rng.below(20) as i64 - 10) * d("0.1");
        let price = (mid + offset).round_dp(1).to_string();
        match rng.below(6) {
            0 => {
                let _ = v
                    .order(&[("side", side), ("type", "MARKET"), ("quantity", &qty)])
                    .await;
            }
            1..=3 => {
                let tif = ["GTC", "IOC", "FOK", "GTX"][rng.below(4)];
                if let Ok(o) = v
                    .order(&[
                        ("side", side),
                        ("type", "LIMIT"),
                        ("timeInForce", tif),
                        ("quantity", &qty),
                        ("price", &price),
                    ])
                    .await
                {
                    resting.push(o["orderId"].as_u64().unwrap());
                }
            }
            4 if !resting.is_empty() => {
                let id = resting.swap_remove(rng.below(resting.len())).to_string();
                let _ = v
                    .call(
                        Method::DELETE,
                        "/fapi/v1/order",
                        &[("symbol", "BTCUSDT"), ("orderId", &id)],
                    )
                    .await;
            }
            _ if !resting.is_empty() => {
                let id = resting[rng.below(resting.len())].to_string();
                let _ = v
                    .call(
                        Method::PUT,
                        "/fapi/v1/order",
                        &[
                            ("symbol", "BTCUSDT"),
                            ("orderId", &id),
                            ("side", side),
                            ("quantity", &qty),
                            ("price", &price),
                        ],
                    )
                    .await;
            }
            _ => {}
        }
        if rng.below(10) == 0 {
            v.sim.move_price("BTCUSDT", rng.below(9) as i64 - 4);
        }
    }
    let events = v.updates_within(Duration::from_millis(800)).await;
    let mut per_order: std::collections::BTreeMap<u64, Vec<Value>> = Default::default();
    let mut trade_ids = std::collections::BTreeSet::new();
    for o in events {
        if o["x"] == "TRADE" {
            assert!(
                trade_ids.insert(o["t"].as_u64().unwrap()),
                "trade id {} twice",
                o["t"]
            );
        }
        per_order
            .entry(o["i"].as_u64().unwrap())
            .or_default()
            .push(o);
    }
    assert!(
        per_order.len() > 30 && trade_ids.len() > 10,
        "{} orders, {} trades",
        per_order.len(),
        trade_ids.len()
    );
    for (id, seq) in &per_order {
        valid_sequence(seq).unwrap_or_else(|e| panic!("order {id}: {e}"));
    }
}

#[tokio::test]
async fn the_same_seed_and_commands_give_the_same_fills() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let v = venue(BinanceSimConfig {
            seed: 99,
            market_paused: true,
            ..quiet()
        })
        .await;
        let mut fills = Vec::new();
        for (side, qty) in [("BUY", "0.7"), ("SELL", "1.3"), ("BUY", "0.25")] {
            let o = v
                .order(&[("side", side), ("type", "MARKET"), ("quantity", qty)])
                .await
                .unwrap();
            fills.push((
                o["orderId"].clone(),
                o["avgPrice"].clone(),
                o["cumQuote"].clone(),
            ));
        }
        let trades = v
            .call(Method::GET, "/fapi/v1/userTrades", &[("symbol", "BTCUSDT")])
            .await
            .unwrap();
        let trades: Vec<(Value, Value, Value, Value, Value)> = trades
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].clone(),
                    t["price"].clone(),
                    t["qty"].clone(),
                    t["commission"].clone(),
                    t["realizedPnl"].clone(),
                )
            })
            .collect();
        runs.push((fills, trades, v.sim.book("BTCUSDT").unwrap()));
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test]
async fn a_replay_with_the_same_seed_clock_and_commands_is_byte_identical() {
    use simulators::binance::SimClock;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = BinanceSim::bind(
            BinanceSimConfig {
                seed: 1234,
                clock: SimClock::Fixed(1_800_000_000_000),
                market_paused: true,
                ..quiet()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let p0 = "symbol=BTCUSDT&timestamp=1800000000000";
        let signed = |p: &str| {
            let sig = streaming::binance::sign::sign(sim.config().secret.as_bytes(), p.as_bytes());
            format!("{p}&signature={sig}")
        };
        let http = reqwest::Client::new();
        let send = |method: Method, path: &str, params: &str| {
            http.request(
                method,
                format!("{}{path}?{}", sim.rest_url(), signed(params)),
            )
            .header("X-MBX-APIKEY", sim.config().api_key.clone())
            .send()
        };
        let key: Value = send(Method::POST, "/fapi/v1/listenKey", "")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = format!("{}/ws/{}", sim.ws_url(), key["listenKey"].as_str().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut bodies = Vec::new();
        for (method, path, extra) in [
            (Method::POST, "/fapi/v1/order", "&side=BUY&type=MARKET&quantity=0.9&newOrderRespType=RESULT"),
            (Method::POST, "/fapi/v1/order", "&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.3&price=60100&newClientOrderId=r-1"),
            (Method::PUT, "/fapi/v1/order", "&side=SELL&quantity=0.4&price=60200&origClientOrderId=r-1"),
            (Method::POST, "/fapi/v1/order", "&side=SELL&type=LIMIT&timeInForce=IOC&quantity=2&price=59000&newOrderRespType=RESULT"),
            (Method::DELETE, "/fapi/v1/order", "&origClientOrderId=r-1"),
            (Method::POST, "/fapi/v1/leverage", "&leverage=33"),
            (Method::GET, "/fapi/v1/userTrades", ""),
            (Method::GET, "/fapi/v2/positionRisk", ""),
        ] {
            let r = send(method, path, &format!("{p0}{extra}")).await.unwrap();
            bodies.push(r.text().await.unwrap());
        }
        let mut frames = Vec::new();
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_millis(300), ws.next()).await
        {
            if let Ok(t) = m.to_text() {
                frames.push(t.to_owned());
            }
        }
        assert!(frames.len() > 8, "{frames:?}");
        runs.push((bodies, frames, sim.book("BTCUSDT").unwrap()));
        sim.stop();
    }
    assert_eq!(runs[0].0, runs[1].0, "REST answers differ");
    assert_eq!(runs[0].1, runs[1].1, "user-stream frames differ");
    assert_eq!(runs[0].2, runs[1].2, "books differ");
}

#[tokio::test]
async fn margin_type_hedge_legs_and_the_adl_quantile_follow_the_venue() {
    let v = venue(quiet()).await;
    let set = |t: &'static str| {
        let v = &v;
        async move {
            v.call(
                Method::POST,
                "/fapi/v1/marginType",
                &[("symbol", "SOLUSDT"), ("marginType", t)],
            )
            .await
        }
    };
    assert_eq!(code(set("CROSSED").await), Some(-4046), "already cross");
    set("ISOLATED").await.unwrap();
    v.call(
        Method::POST,
        "/fapi/v1/order",
        &[
            ("symbol", "SOLUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "10"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        code(set("CROSSED").await),
        Some(-4048),
        "a position is open"
    );
    let risk = v
        .call(Method::GET, "/fapi/v2/positionRisk", &[])
        .await
        .unwrap();
    let sol = risk
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["symbol"] == "SOLUSDT")
        .unwrap()
        .clone();
    assert_eq!(sol["marginType"], "isolated");
    let iw = dv(&sol["isolatedWallet"]);
    assert_eq!(iw, (dv(&sol["entryPrice"]) * d("10") / d("20")).round_dp(8));
    // Isolated at 20x: liquidated about 5 % under the entry, whatever the wallet holds.
    let lp = dv(&sol["liquidationPrice"]);
    let entry = dv(&sol["entryPrice"]);
    assert!(
        lp > entry * d("0.94") && lp < entry * d("0.96"),
        "{lp} vs {entry}"
    );

    // Hedge mode: legs open and close separately and never flip.
    for s in ["BTCUSDT", "ETHUSDT", "BTCUSDT_261225", "SOLUSDT"] {
        v.sim.set_position(s, Decimal::ZERO);
    }
    v.sim.set_dual_side(true);
    let leg = |side: &'static str, ps: &'static str, qty: &'static str| {
        let v = &v;
        async move {
            v.order(&[
                ("side", side),
                ("type", "MARKET"),
                ("quantity", qty),
                ("positionSide", ps),
            ])
            .await
        }
    };
    leg("BUY", "LONG", "0.2").await.unwrap();
    leg("SELL", "SHORT", "0.1").await.unwrap();
    assert_eq!(
        code(leg("BUY", "SHORT", "0.2").await),
        Some(-2022),
        "a SHORT leg of 0.1 cannot flip"
    );
    leg("SELL", "LONG", "0.2").await.unwrap();
    let risk = v
        .call(Method::GET, "/fapi/v3/positionRisk", &[])
        .await
        .unwrap();
    let legs: Vec<(String, String)> = risk
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["symbol"] == "BTCUSDT")
        .map(|r| {
            (
                r["positionSide"].as_str().unwrap().to_owned(),
                r["positionAmt"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(legs, [("SHORT".to_owned(), "-0.1".to_owned())]);
    for r in risk.as_array().unwrap() {
        let adl = r["adl"].as_u64().unwrap();
        let pnl = dv(&r["unRealizedProfit"]);
        assert!(adl <= 4 && (pnl > Decimal::ZERO || adl == 0), "{r}");
    }
}

#[tokio::test]
async fn liquidity_added_over_http_is_what_the_next_order_takes() {
    let v = venue(BinanceSimConfig {
        market_paused: true,
        ..quiet()
    })
    .await;
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    let best = *asks.keys().next().unwrap();
    let inside = best - d("0.1");
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", v.sim.rest_url()))
            .json(&body)
            .send()
    };
    let r = post(
        "/sim/level",
        serde_json::json!({"symbol": "BTCUSDT", "side": "ask", "price": inside.to_string(), "qty": "0.004"}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success());
    let bought = v
        .order(&[("side", "BUY"), ("type", "MARKET"), ("quantity", "0.004")])
        .await
        .unwrap();
    assert_eq!(
        dv(&bought["avgPrice"]),
        inside,
        "the added level is the best ask"
    );
    let (_, asks, _) = v.sim.book("BTCUSDT").unwrap();
    assert!(!asks.contains_key(&inside), "and it is gone once taken");
    let off_grid = post(
        "/sim/level",
        serde_json::json!({"symbol": "BTCUSDT", "side": "ask", "price": "60000.05", "qty": "1"}),
    )
    .await
    .unwrap();
    assert_eq!(off_grid.status(), 400);
    let body: Value = off_grid.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let unknown: Value = post("/sim/fault/no-such", Value::Null)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        unknown["known"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "maintenance"),
        "{unknown}"
    );
}

#[tokio::test(start_paused = true)]
async fn on_the_tokio_clock_the_venue_follows_paused_time() {
    let sim = BinanceSim::bind(
        BinanceSimConfig {
            clock: simulators::binance::SimClock::Tokio(1_700_000_000_000),
            market_paused: true,
            ..BinanceSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let t0 = sim.server_time();
    assert!((1_700_000_000_000..1_700_000_000_100).contains(&t0), "{t0}");
    tokio::time::advance(Duration::from_secs(90)).await;
    assert_eq!(sim.server_time(), t0 + 90_000);
    sim.stop();
}

#[tokio::test]
async fn an_account_under_water_is_liquidated_by_the_venue_itself() {
    let mut v = venue(BinanceSimConfig {
        mark_interval: Duration::from_millis(50),
        market_paused: true,
        ..quiet()
    })
    .await;
    for s in ["BTCUSDT", "ETHUSDT", "BTCUSDT_261225", "SOLUSDT"] {
        v.sim.set_position(s, Decimal::ZERO);
    }
    v.sim.set_wallet(d("1000"));
    v.sim.set_position("BTCUSDT", d("1"));
    v.events_within(Duration::from_millis(200)).await;
    assert_eq!(
        v.sim.positions().get("BTCUSDT").copied(),
        Some(d("1")),
        "healthy so far"
    );
    // 1 BTC long on 1 000 USDT: maintenance is 250, so a fall of ~750 liquidates it.
    v.sim.move_price("BTCUSDT", -8_000);
    let seen = v.events_within(Duration::from_millis(500)).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e["e"].as_str().unwrap()).collect();
    let call = kinds
        .iter()
        .position(|k| *k == "MARGIN_CALL")
        .expect("a margin call");
    let fill = seen
        .iter()
        .position(|e| {
            e["e"] == "ORDER_TRADE_UPDATE"
                && e["o"]["o"] == "LIQUIDATION"
                && e["o"]["X"] == "FILLED"
        })
        .expect("the liquidation");
    assert!(call < fill);
    assert_eq!(
        v.sim
            .positions()
            .get("BTCUSDT")
            .copied()
            .unwrap_or_default(),
        Decimal::ZERO
    );
}
