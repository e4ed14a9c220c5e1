//! The Tastytrade client against the simulator over loopback: the DXLink handshake
//! and subscriptions, token expiry and renewal, the account streamer, and recovery
//! from every fault the simulator can inject.

use simulators::testkit::wait_for;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use simulators::tastytrade::{Fault, TastytradeSim, TastytradeSimConfig};
use streaming::secret::Secret;
use streaming::tastytrade::dxlink::{self, DxEvent, FeedConfig};
use streaming::tastytrade::rest::Credentials;
use streaming::tastytrade::{run_tastytrade, TastytradeConfig, TastytradeStats, TtQuote};
use streaming::{BrokerEvent, BrokerPayload};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn sim_config() -> TastytradeSimConfig {
    TastytradeSimConfig {
        tick_interval: Duration::from_millis(50),
        keepalive_interval: Duration::from_millis(300),
        refresh_token: Some("refresh-me".into()),
        ..TastytradeSimConfig::default()
    }
}

fn credentials() -> Credentials {
    Credentials {
        client_secret: Secret::new("client-secret"),
        refresh_token: Secret::new("refresh-me"),
    }
}

fn client_config(sim: &TastytradeSim) -> TastytradeConfig {
    let mut c = TastytradeConfig::new(sim.api_url(), sim.streamer_url(), credentials());
    c.positions_refresh = Duration::from_secs(1);
    for ws in [&mut c.feed, &mut c.account] {
        ws.heartbeat_interval = Duration::from_millis(500);
        ws.silence_timeout = Duration::from_millis(1500);
        ws.probe_after = Duration::from_millis(400);
        ws.probe_timeout = Duration::from_millis(300);
        ws.tick_interval = Duration::from_millis(100);
        ws.backoff_initial = Duration::from_millis(50);
        ws.backoff_max = Duration::from_millis(500);
        ws.stable_after = Duration::from_millis(250);
        ws.unauthenticated_poll = Duration::from_millis(200);
    }
    c
}

struct Run {
    sim: TastytradeSim,
    stats: Arc<TastytradeStats>,
    /// The latest event per (account, symbol).
    latest: Arc<Mutex<HashMap<(String, String), TtQuote>>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(sim_cfg: TastytradeSimConfig, tweak: impl FnOnce(&mut TastytradeConfig)) -> Run {
    let sim = TastytradeSim::bind(sim_cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cfg = client_config(&sim);
    tweak(&mut cfg);
    let stats = Arc::new(TastytradeStats::default());
    let (tx, mut rx) = mpsc::channel::<BrokerEvent>(1024);
    let cancel = CancellationToken::new();
    let client = tokio::spawn(run_tastytrade(cfg, tx, stats.clone(), cancel.clone()));
    let latest = Arc::new(Mutex::new(HashMap::new()));
    let l = latest.clone();
    let task = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let BrokerPayload::Tastytrade(q) = ev.payload else {
                panic!("not a Tastytrade event")
            };
            assert_eq!(&*ev.account, &*q.position.account);
            l.lock()
                .unwrap()
                .insert((ev.account.to_string(), q.position.symbol.clone()), q);
        }
        client.await.unwrap().unwrap();
    });
    Run {
        sim,
        stats,
        latest,
        cancel,
        task,
    }
}

impl Run {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("client stops when cancelled")
            .unwrap();
        self.sim.stop();
    }

    fn complete(&self) -> bool {
        self.sim.live_subscriptions() == self.sim.expected_subscriptions()
    }

    fn events(&self) -> u64 {
        self.stats.events_sent.load(Relaxed)
    }

    fn connects(&self) -> u64 {
        self.stats.feed.connects()
    }

    async fn steady(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.complete() && self.events() > 0) {
            assert!(
                Instant::now() < deadline,
                "not steady: live {:?}, expected {:?}, events {}, positions {}, connects {}",
                self.sim.live_subscriptions(),
                self.sim.expected_subscriptions(),
                self.events(),
                self.stats.positions.load(Relaxed),
                self.connects(),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Injects a fault that costs the socket; returns how long until a new socket
    /// had every subscription live and fresh data arriving.
    async fn recover_from(&self, fault: Fault) -> Duration {
        let connects = self.connects();
        let t0 = Instant::now();
        self.sim.inject(fault);
        wait_for("a new connection", Duration::from_secs(10), || {
            self.connects() > connects
        })
        .await;
        let events = self.events();
        wait_for(
            "subscriptions and data back",
            Duration::from_secs(10),
            || self.complete() && self.events() > events,
        )
        .await;
        t0.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_subscribes_every_position_and_greeks_arrive_signed() {
    let run = start(sim_config(), |_| {}).await;
    run.steady().await;
    let held = run.sim.positions();
    assert_eq!(run.stats.positions.load(Relaxed) as usize, held.len());
    wait_for(
        "an event for every position",
        Duration::from_secs(10),
        || run.latest.lock().unwrap().len() == held.len(),
    )
    .await;
    // Let underlying quotes catch up with the first Greeks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let latest = run.latest.lock().unwrap().clone();
    let mut options = 0;
    for (account, symbol, qty) in &held {
        let q = &latest[&(account.clone(), symbol.clone())];
        assert_eq!(q.position.quantity, Decimal::from(*qty), "{symbol}: signed");
        if q.position.instrument_type == "Equity Option" {
            options += 1;
            assert_eq!(q.position.multiplier, Decimal::ONE_HUNDRED);
            let g = q.greeks.as_ref().expect("Greeks for an option");
            assert!(g.delta.abs() <= 1.0 && g.gamma > 0.0 && g.vega > 0.0);
            assert!(g.volatility > 0.1 && g.volatility < 0.4, "a fraction");
            let call = symbol.as_bytes()[12] == b'C';
            assert_eq!(g.delta > 0.0, call, "{symbol}: delta sign");
            assert!(q.underlying.is_some(), "the underlying's quote rides along");
        } else {
            assert!(q.greeks.is_none());
            assert!(q.quote.as_ref().unwrap().bid_price > 0.0);
        }
    }
    assert!(options > 10);
    assert_eq!(run.stats.malformed.load(Relaxed), 0);
    assert_eq!(run.connects(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_mid_stream_are_renewed_on_the_same_socket() {
    let run = start(sim_config(), |_| {}).await;
    run.steady().await;
    let access = run.sim.stats().access_tokens_issued.load(Relaxed);
    let reauth = run.stats.reauthorizations.load(Relaxed);
    run.sim.inject(Fault::ExpireTokens);
    wait_for(
        "a fresh AUTH on the open feed",
        Duration::from_secs(5),
        || run.stats.reauthorizations.load(Relaxed) > reauth,
    )
    .await;
    let events = run.events();
    wait_for("data again", Duration::from_secs(5), || {
        run.complete() && run.events() > events + 20
    })
    .await;
    // The positions poller met a 401, refreshed the access token and carried on.
    wait_for("a new access token", Duration::from_secs(5), || {
        run.sim.stats().access_tokens_issued.load(Relaxed) > access
    })
    .await;
    assert_eq!(run.connects(), 1, "no reconnect: subscriptions were kept");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_tokens_are_renewed_before_they_expire_without_dropping_anything() {
    let sim = TastytradeSimConfig {
        quote_token_ttl: Duration::from_millis(1200),
        ..sim_config()
    };
    let run = start(sim, |c| {
        c.quote_token_ttl = Duration::from_millis(1200);
        c.quote_token_renew_at = 0.5;
    })
    .await;
    run.steady().await;
    let issued = run.sim.stats().quote_tokens_issued.load(Relaxed);
    let until = Instant::now() + Duration::from_secs(4);
    let mut last = run.events();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = run.events();
        assert!(now > last, "data kept flowing through every renewal");
        last = now;
    }
    assert!(run.sim.stats().quote_tokens_issued.load(Relaxed) >= issued + 5);
    assert_eq!(
        run.sim.stats().auths_rejected.load(Relaxed),
        0,
        "never used an expired token"
    );
    assert_eq!(run.connects(), 1);
    assert!(run.complete());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_replays_the_handshake_and_every_subscription() {
    let run = start(sim_config(), |_| {}).await;
    run.steady().await;
    let took = run.recover_from(Fault::Drop).await;
    println!("dropped sockets: data back after {took:?}");
    assert_eq!(run.sim.open_feeds(), 1);
    run.stop().await;
}

/// With production timings: the simulator answers KEEPALIVE, so silence is probed
/// after 2 s and the socket replaced 1.5 s after an unanswered probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_detected_and_replaced() {
    let run = start(sim_config(), |c| {
        let defaults = TastytradeConfig::new("http://x", "ws://x", credentials());
        c.feed.silence_timeout = defaults.feed.silence_timeout;
        c.feed.probe_after = defaults.feed.probe_after;
        c.feed.probe_timeout = defaults.feed.probe_timeout;
        c.feed.tick_interval = defaults.feed.tick_interval;
    })
    .await;
    run.steady().await;
    let took = run.recover_from(Fault::Silent).await;
    assert!(took >= Duration::from_millis(3500), "{took:?}");
    println!("silent socket replaced and data back after {took:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_reconnects_and_malformed_frames_and_nan_are_counted() {
    let run = start(sim_config(), |_| {}).await;
    run.steady().await;
    let took = run.recover_from(Fault::Error).await;
    println!("ERROR from the server: data back after {took:?}");

    let connects = run.connects();
    let events = run.events();
    run.sim.inject(Fault::Malformed(5));
    wait_for(
        "five malformed frames counted",
        Duration::from_secs(5),
        || run.stats.malformed.load(Relaxed) >= 5,
    )
    .await;
    wait_for(
        "data after malformed frames",
        Duration::from_secs(5),
        || run.events() > events + 20,
    )
    .await;
    assert_eq!(
        run.connects(),
        connects,
        "malformed frames cost no reconnect"
    );

    // NaN delta and vega arrive as non-finite values, for the processor to count.
    run.sim.inject(Fault::NaN(1000));
    wait_for("an event with a NaN delta", Duration::from_secs(5), || {
        run.latest.lock().unwrap().values().any(|q| {
            q.greeks
                .as_ref()
                .is_some_and(|g| g.delta.is_nan() && g.vega.is_nan() && g.gamma.is_finite())
        })
    })
    .await;
    assert_eq!(run.connects(), connects);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_wait_unauthenticated_and_recover() {
    let run = start(sim_config(), |_| {}).await;
    run.steady().await;
    run.sim.inject(Fault::RejectAuth);
    run.sim.inject(Fault::ExpireTokens);
    run.sim.inject(Fault::Drop);
    wait_for("unauthenticated", Duration::from_secs(5), || {
        !run.stats.authenticated.load(Relaxed) && run.sim.open_feeds() == 0
    })
    .await;
    // Frames already on the wire before the drop may still be read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = run.events();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(run.events(), events, "no data without authorization");
    run.sim.inject(Fault::AcceptAuth);
    wait_for("data again", Duration::from_secs(5), || {
        run.complete() && run.events() > events
    })
    .await;
    assert!(run.stats.authenticated.load(Relaxed));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_streamer_moves_positions_and_subscriptions() {
    // A long REST period: the change must come from the account streamer.
    let run = start(sim_config(), |c| {
        c.positions_refresh = Duration::from_secs(300)
    })
    .await;
    run.steady().await;
    let (account, symbol, qty) = run
        .sim
        .positions()
        .into_iter()
        .find(|(_, s, _)| s.len() == 21)
        .expect("an option position");
    let updates = run.stats.position_updates.load(Relaxed);
    assert!(run.sim.set_position(&account, &symbol, qty + 7));
    wait_for("the new quantity", Duration::from_secs(5), || {
        run.latest.lock().unwrap()[&(account.clone(), symbol.clone())]
            .position
            .quantity
            == Decimal::from(qty + 7)
    })
    .await;
    assert!(run.stats.position_updates.load(Relaxed) > updates);
    // Close every holding of one stock: its quote subscription must go, unless an
    // option on it still needs the underlying.
    for (a, s, _) in run.sim.positions() {
        if s == "AAPL" || s.starts_with("AAPL ") {
            run.sim.set_position(&a, &s, 0);
        }
    }
    wait_for("AAPL unsubscribed", Duration::from_secs(5), || {
        run.complete()
            && !run
                .sim
                .live_subscriptions()
                .iter()
                .any(|(_, s)| s.contains("AAPL"))
    })
    .await;
    let closed = run.latest.lock().unwrap()[&(account.clone(), "AAPL".to_owned())].clone();
    assert!(
        closed.position.quantity.is_zero(),
        "the close itself is reported"
    );
    // A new holding of a symbol nobody held is subscribed.
    let held: Vec<String> = run.sim.positions().into_iter().map(|p| p.1).collect();
    assert!(!held.contains(&"AAPL".to_owned()));
    assert!(run.sim.set_position(&account, "AAPL", 10));
    wait_for("AAPL subscribed again", Duration::from_secs(5), || {
        run.complete()
            && run
                .sim
                .live_subscriptions()
                .iter()
                .any(|(_, s)| s == "AAPL")
    })
    .await;
    run.stop().await;
}

/// The goal: zero lost subscriptions across 100 injected faults, data back within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_faults_lose_no_subscription() {
    let run = start(sim_config(), |_| {}).await;
    run.steady().await;
    let faults = [Fault::Drop, Fault::Error, Fault::Silent, Fault::Drop];
    let mut times = Vec::new();
    for i in 0..100 {
        times.push(run.recover_from(faults[i % faults.len()]).await);
        assert!(run.complete(), "fault {i}: subscriptions lost");
    }
    let worst = times.iter().max().unwrap();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "100 faults: {} connects, recovery mean {mean:?}, worst {worst:?}",
        run.connects()
    );
    assert!(run.connects() >= 101);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_serves_full_format_and_refuses_requests_without_a_user_agent() {
    let sim = TastytradeSim::bind(sim_config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/oauth/token", sim.api_url()))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": "refresh-me", "client_secret": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no User-Agent");
    let ua = reqwest::Client::builder()
        .user_agent("test/1")
        .build()
        .unwrap();
    let wrong = ua
        .post(format!("{}/oauth/token", sim.api_url()))
        .json(
            &json!({"grant_type": "refresh_token", "refresh_token": "nope", "client_secret": "x"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_grant");
    let token: Value = ua
        .post(format!("{}/oauth/token", sim.api_url()))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": "refresh-me", "client_secret": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let quote: Value = ua
        .get(format!("{}/api-quote-tokens", sim.api_url()))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = quote["data"]["dxlink-url"].as_str().unwrap();
    let qtoken = quote["data"]["token"].as_str().unwrap();

    // A client that asks for FULL data, with its own field order.
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for m in [
        dxlink::setup(60, 60),
        dxlink::auth(qtoken),
        dxlink::channel_request(5),
        json!({"type": "FEED_SETUP", "channel": 5, "acceptDataFormat": "FULL",
            "acceptEventFields": {"Greeks": ["eventSymbol", "vega", "delta", "time"]}})
        .to_string(),
        json!({"type": "FEED_SUBSCRIPTION", "channel": 5,
            "add": [{"type": "Greeks", "symbol": sim.expected_subscriptions().iter()
                .find(|(t, _)| t == "Greeks").unwrap().1}]})
        .to_string(),
    ] {
        ws.send(Message::text(m)).await.unwrap();
    }
    let mut config = FeedConfig::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let greeks = loop {
        assert!(Instant::now() < deadline, "no FULL data");
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            continue;
        };
        match dxlink::parse_message(&t).unwrap() {
            dxlink::DxMessage::FeedConfig { config: c, .. } => {
                assert!(!c.compact);
                config = c;
            }
            dxlink::DxMessage::FeedData { data, .. } => {
                assert!(data[0].is_object(), "FULL: objects");
                let batch = dxlink::parse_feed_data(&data, &config).unwrap();
                let DxEvent::Greeks(g) = &batch.events[0] else {
                    panic!("Greeks expected")
                };
                break g.clone();
            }
            _ => {}
        }
    };
    assert!(greeks.delta.is_finite() && greeks.vega > 0.0);
    assert!(
        greeks.gamma.is_nan(),
        "a field we did not ask for is not sent"
    );
    sim.stop();
}
