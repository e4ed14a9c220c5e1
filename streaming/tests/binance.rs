//! The Binance client against the simulator over loopback: the local book through
//! random traffic and gaps, the user data stream and listen-key expiry, rate limits
//! and bans, signatures, malformed frames, orders. (The price cache it feeds is the
//! binary's: tests/price_cache.rs.)

use simulators::testkit::wait_for;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use rust_decimal::Decimal;
use simulators::binance::{BinanceSim, BinanceSimConfig, Fault};
use streaming::binance::rest::{Keys, Rest, RestError};
use streaming::binance::{run_binance, BinanceConfig, BinanceStats, BnKind, BnQuote};
use streaming::secret::Secret;
use streaming::{BrokerEvent, BrokerPayload};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn keys(cfg: &BinanceSimConfig) -> Keys {
    Keys {
        api_key: Secret::new(cfg.api_key.clone()),
        secret: Secret::new(cfg.secret.clone()),
    }
}

fn fast_sim() -> BinanceSimConfig {
    BinanceSimConfig {
        tick_interval: Duration::from_millis(20),
        mark_interval: Duration::from_millis(200),
        ping_interval: Duration::from_millis(500),
        ..BinanceSimConfig::default()
    }
}

fn client_config(sim: &BinanceSim) -> BinanceConfig {
    let mut c = BinanceConfig::new(sim.rest_url(), sim.ws_url(), keys(sim.config()));
    c.options_rest_url = Some(sim.rest_url());
    c.account = "test".into();
    c.positions_refresh = Duration::from_secs(3600);
    c.market_data_timeout = Duration::from_millis(1500);
    for ws in [&mut c.public, &mut c.market, &mut c.user] {
        ws.silence_timeout = Duration::from_millis(2000);
        ws.probe_after = Duration::from_millis(400);
        ws.probe_timeout = Duration::from_millis(400);
        ws.tick_interval = Duration::from_millis(50);
        ws.backoff_initial = Duration::from_millis(50);
        ws.backoff_max = Duration::from_millis(500);
        ws.stable_after = Duration::from_millis(250);
    }
    c
}

struct Run {
    sim: BinanceSim,
    stats: Arc<BinanceStats>,
    /// The latest event per symbol.
    latest: Arc<Mutex<HashMap<String, BnQuote>>>,
    cancel: CancellationToken,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(sim_cfg: BinanceSimConfig, tweak: impl FnOnce(&mut BinanceConfig)) -> Run {
    let sim = BinanceSim::bind(sim_cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cfg = client_config(&sim);
    tweak(&mut cfg);
    let stats = Arc::new(BinanceStats::default());
    let (tx, mut rx) = mpsc::channel::<BrokerEvent>(4096);
    let cancel = CancellationToken::new();
    tokio::spawn(run_binance(cfg, tx, stats.clone(), cancel.clone()));
    let latest = Arc::new(Mutex::new(HashMap::new()));
    let l = latest.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let BrokerPayload::Binance(q) = ev.payload else {
                panic!("not a Binance event")
            };
            l.lock().unwrap().insert(q.position.symbol.clone(), q);
        }
    });
    Run {
        sim,
        stats,
        latest,
        cancel,
    }
}

impl Run {
    /// Waits until every book in `symbols` is live (snapshot applied, diffs in order).
    async fn books_live(&self, what: &str, symbols: &[&str], limit: Duration) {
        wait_for(what, limit, || {
            symbols
                .iter()
                .all(|s| self.stats.book(s).is_some_and(|b| b.is_live()))
        })
        .await;
    }

    fn amount(&self, symbol: &str) -> Option<Decimal> {
        self.latest
            .lock()
            .unwrap()
            .get(symbol)
            .map(|q| q.position.amount)
    }

    /// Stops the venue's books, waits until every local book has caught up with the
    /// simulator's last update id, and compares them level by level.
    async fn assert_books_equal(&self, symbols: &[&str]) {
        // A book still buffering needs one more diff to ask for its snapshot: let it
        // go live before the market stops moving.
        self.books_live("books live", symbols, Duration::from_secs(20))
            .await;
        self.sim.pause_market(true);
        for s in symbols {
            let (bids, asks, last) = self.sim.book(s).unwrap();
            wait_for(
                &format!("{s} book to reach {last}"),
                Duration::from_secs(20),
                || {
                    self.stats.book(s).is_some_and(|b| {
                        *b.phase() == streaming::binance::book::Phase::Live { last_id: last }
                    })
                },
            )
            .await;
            let ours = self.stats.book(s).unwrap();
            assert_eq!(ours.bids, bids, "{s} bids differ");
            assert_eq!(ours.asks, asks, "{s} asks differ");
        }
        self.sim.pause_market(false);
    }
}

#[tokio::test]
async fn the_local_book_equals_the_venue_through_random_traffic_and_gaps() {
    // GS_BINANCE_BOOK_UPDATES=1000000 for the long run reported in docs/venues/binance.md.
    let target: u64 = std::env::var("GS_BINANCE_BOOK_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let run = start(
        BinanceSimConfig {
            tick_interval: Duration::from_millis(5),
            events_per_tick: 25,
            ..fast_sim()
        },
        |c| c.symbols = vec!["SOLUSDT".into()],
    )
    .await;
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT_261225"];
    run.books_live("every book live", &symbols, Duration::from_secs(10))
        .await;
    run.assert_books_equal(&symbols).await;
    let started = Instant::now();
    let mut gaps = 0;
    let mut next_gap = target / 8;
    while run.stats.depth_applied.load(Relaxed) < target {
        if run.stats.depth_applied.load(Relaxed) >= next_gap {
            run.sim.inject(Fault::DepthGap);
            gaps += 1;
            next_gap += target / 8;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(started.elapsed() < Duration::from_secs(600), "too slow");
    }
    run.assert_books_equal(&symbols).await;
    let applied = run.stats.depth_applied.load(Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "book: {applied} diffs applied in {secs:.1} s ({:.0}/s), {gaps} gaps injected, {} resyncs, {} snapshots, books identical",
        applied as f64 / secs,
        run.stats.resyncs.load(Relaxed),
        run.stats.snapshots.load(Relaxed),
    );
    // Every injected gap was found (one per symbol) and healed from a snapshot.
    assert!(
        run.stats.resyncs.load(Relaxed) >= gaps,
        "gaps went unnoticed"
    );
    assert_eq!(
        run.stats.public.connects(),
        1,
        "a gap must not cost the socket"
    );
}

#[tokio::test]
async fn drops_and_silence_rebuild_the_book() {
    let run = start(fast_sim(), |_| {}).await;
    let symbols = ["BTCUSDT", "ETHUSDT"];
    run.books_live("books live", &symbols, Duration::from_secs(10))
        .await;
    run.sim.inject(Fault::Drop);
    wait_for("reconnect after a drop", Duration::from_secs(5), || {
        run.stats.public.connects() >= 2
    })
    .await;
    run.books_live("books live again", &symbols, Duration::from_secs(5))
        .await;
    run.assert_books_equal(&symbols).await;
    run.sim.inject(Fault::Silent);
    let t = Instant::now();
    wait_for("a silent socket replaced", Duration::from_secs(10), || {
        run.stats.public.connects() >= 3
    })
    .await;
    let found = t.elapsed();
    run.sim.inject(Fault::Resume);
    run.books_live("books live after silence", &symbols, Duration::from_secs(5))
        .await;
    run.assert_books_equal(&symbols).await;
    println!("silent socket replaced after {found:?}");
}

#[tokio::test]
async fn positions_become_events_and_account_updates_move_them() {
    let run = start(fast_sim(), |_| {}).await;
    // Three futures positions and two options.
    wait_for("five positions", Duration::from_secs(5), || {
        run.latest.lock().unwrap().len() == 5
    })
    .await;
    for (symbol, amount) in run.sim.positions() {
        assert_eq!(run.amount(&symbol), Some(amount), "{symbol}");
    }
    // Marks arrive for held symbols.
    wait_for("a mark for BTCUSDT", Duration::from_secs(5), || {
        run.latest
            .lock()
            .unwrap()
            .get("BTCUSDT")
            .is_some_and(|q| q.mark.is_some())
    })
    .await;
    // The start-up read and the one the user stream's first connect asks for are
    // both done before the baseline (on a loaded machine the socket can be late).
    wait_for(
        "the user stream's reconcile",
        Duration::from_secs(10),
        || run.stats.user.connects() >= 1 && run.stats.reconciles.load(Relaxed) >= 2,
    )
    .await;
    let reconciles = run.stats.reconciles.load(Relaxed);
    run.sim.set_position("ETHUSDT", d("-1.5"));
    wait_for("ACCOUNT_UPDATE applied", Duration::from_secs(5), || {
        run.amount("ETHUSDT") == Some(d("-1.5"))
    })
    .await;
    // It came from the stream, not from a REST read.
    assert_eq!(run.stats.reconciles.load(Relaxed), reconciles);
    assert!(run.stats.account_updates.load(Relaxed) >= 1);
    // A new symbol starts streaming when it is first held.
    run.sim.set_position("SOLUSDT", d("10"));
    run.books_live("SOLUSDT book live", &["SOLUSDT"], Duration::from_secs(5))
        .await;
    run.sim.set_position("SOLUSDT", Decimal::ZERO);
    wait_for("a closed position", Duration::from_secs(5), || {
        run.amount("SOLUSDT") == Some(Decimal::ZERO)
    })
    .await;
    assert_eq!(run.stats.positions.load(Relaxed), 5);
}

#[tokio::test]
async fn the_margin_account_totals_are_read_with_the_positions() {
    let run = start(fast_sim(), |c| {
        c.positions_refresh = Duration::from_millis(300);
    })
    .await;
    let account = || run.stats.account.lock().unwrap().clone();
    wait_for("the account totals", Duration::from_secs(5), || {
        account().is_some()
    })
    .await;
    let a = account().unwrap();
    assert_eq!(a.total_wallet_balance, Decimal::from(100_000));
    assert_eq!(
        a.total_margin_balance,
        a.total_wallet_balance + a.total_unrealized_profit
    );
    assert_eq!(
        a.available_balance,
        a.total_margin_balance - a.total_initial_margin
    );
    // Maintenance is each future's bracket amount at its mark (which moves a little
    // between the venue's read and ours).
    let expected: Decimal = run
        .sim
        .positions()
        .iter()
        .filter(|(s, _)| !s.contains('-'))
        .map(|(s, amount)| {
            let brackets = if s.starts_with("BTC") {
                model::exchange::Brackets::btcusdt()
            } else {
                model::exchange::Brackets::altcoin()
            };
            brackets.maintenance_margin(run.sim.mark(s).unwrap() * amount)
        })
        .sum();
    assert!(
        (a.total_maint_margin - expected).abs() < expected * d("0.01"),
        "maint {} vs {expected}",
        a.total_maint_margin
    );
    // Closing the ETH short shrinks the margin the next read reports.
    run.sim.set_position("ETHUSDT", Decimal::ZERO);
    wait_for(
        "a smaller maintenance margin",
        Duration::from_secs(5),
        || account().is_some_and(|b| b.total_maint_margin < a.total_maint_margin * d("0.9")),
    )
    .await;
}

#[tokio::test]
async fn option_positions_carry_venue_greeks_and_follow_the_options_api() {
    let run = start(fast_sim(), |c| {
        c.positions_refresh = Duration::from_millis(300);
    })
    .await;
    let call = "BTC-261225-60000-C";
    let put = "ETH-261225-3000-P";
    wait_for("both option positions", Duration::from_secs(5), || {
        let l = run.latest.lock().unwrap();
        l.contains_key(call) && l.contains_key(put)
    })
    .await;
    let first = run.latest.lock().unwrap()[call].clone();
    assert_eq!(first.position.kind, BnKind::Option);
    assert_eq!(first.position.underlying, "BTCUSDT");
    assert_eq!(first.position.amount, run.sim.positions()[call]);
    assert_eq!(
        run.latest.lock().unwrap()[put].position.amount,
        run.sim.positions()[put]
    );
    // The first row already has Greeks (from /eapi/v1/mark), not a missing leg.
    let m = first
        .option
        .clone()
        .expect("option mark with the first row");
    let delta = m.delta.unwrap();
    assert!(delta > 0.0 && delta < 1.0, "call delta {delta}");
    assert!(m.gamma.unwrap() > 0.0 && m.vega.unwrap() > 0.0 && m.theta.unwrap() < 0.0);
    // Then the `btcusdt@optionMarkPrice` stream moves it, with the index price.
    wait_for("a streamed option mark", Duration::from_secs(5), || {
        run.latest.lock().unwrap()[call]
            .option
            .as_ref()
            .is_some_and(|o| o.index.is_some())
    })
    .await;
    let streamed = run.latest.lock().unwrap()[call].option.clone().unwrap();
    let spot = run.sim.mark("BTCUSDT").unwrap();
    let index = streamed.index.unwrap();
    assert!(
        (index - spot).abs() / spot < Decimal::new(1, 2),
        "index {index} vs spot {spot}"
    );
    // The options API is the source of truth for option positions: a change, then a
    // close, is found on the next read.
    run.sim.set_position(call, d("3"));
    wait_for("the option position grows", Duration::from_secs(5), || {
        run.amount(call) == Some(d("3"))
    })
    .await;
    // Closed from outside the process, as an operator or a black-box test would.
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/position", run.sim.rest_url()))
        .json(&serde_json::json!({"symbol": put, "amount": "0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/position", run.sim.rest_url()))
        .json(&serde_json::json!({"symbol": "NOPE", "amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    wait_for("the put is closed", Duration::from_secs(5), || {
        run.amount(put) == Some(Decimal::ZERO)
    })
    .await;
    assert_eq!(run.stats.positions.load(Relaxed), 4);
}

#[tokio::test]
async fn an_expired_listen_key_is_replaced_and_positions_reconciled() {
    let run = start(fast_sim(), |_| {}).await;
    wait_for("positions", Duration::from_secs(5), || {
        run.latest.lock().unwrap().len() == 5
    })
    .await;
    let first_key = run.sim.listen_key().unwrap();
    // Changed while the stream is about to die: no event will tell us.
    run.sim.set_position_quietly("BTCUSDT", d("1.25"));
    run.sim.inject(Fault::ExpireListenKey);
    // Both, whichever comes first: the position may also arrive by the periodic
    // position refresh before the new key is made (seen on a slow machine).
    wait_for(
        "a new listen key and a reconcile",
        Duration::from_secs(5),
        || {
            run.amount("BTCUSDT") == Some(d("1.25"))
                && run.stats.listen_keys_created.load(Relaxed) == 2
        },
    )
    .await;
    assert_eq!(run.stats.listen_key_expiries.load(Relaxed), 1);
    assert_eq!(run.stats.listen_keys_created.load(Relaxed), 2);
    let second = run.sim.listen_key().unwrap();
    assert_ne!(first_key, second);
    // The new key carries events.
    run.sim.set_position("BTCUSDT", d("2"));
    wait_for("an event on the new key", Duration::from_secs(5), || {
        run.amount("BTCUSDT") == Some(d("2"))
    })
    .await;
}

#[tokio::test]
async fn a_keepalive_refused_for_an_unknown_key_gets_a_new_key() {
    let run = start(fast_sim(), |c| {
        c.listen_key_keepalive = Duration::from_millis(300);
    })
    .await;
    wait_for("a listen key", Duration::from_secs(5), || {
        run.sim.listen_key().is_some() && run.stats.user.connects() == 1
    })
    .await;
    // Gone on the venue without an event on the socket (as after a venue restart).
    let rest = Rest::new(
        &run.sim.rest_url(),
        keys(run.sim.config()),
        Duration::from_secs(2),
    )
    .unwrap();
    rest.delete_listen_key().await.unwrap();
    wait_for("a second key", Duration::from_secs(5), || {
        run.stats.listen_keys_created.load(Relaxed) == 2 && run.stats.user.connects() == 2
    })
    .await;
    assert!(run.sim.listen_key().is_some());
}

#[tokio::test]
async fn maintenance_loses_nothing_and_everything_resumes_after_it() {
    let run = start(fast_sim(), |c| {
        c.positions_refresh = Duration::from_millis(300);
    })
    .await;
    wait_for("positions and a live book", Duration::from_secs(10), || {
        run.latest.lock().unwrap().len() == 5
            && run.stats.book("BTCUSDT").is_some_and(|b| b.is_live())
    })
    .await;
    let errors = run.stats.rest.errors.load(Relaxed);
    let before = run.sim.positions();
    run.sim.inject(Fault::Maintenance);
    run.sim.set_position_quietly("BTCUSDT", d("0.9"));
    wait_for("503s on the position reads", Duration::from_secs(5), || {
        run.stats.rest.errors.load(Relaxed) >= errors + 2
    })
    .await;
    // A failed read is not an empty book: nothing was closed or changed.
    for (symbol, amount) in &before {
        assert_eq!(run.amount(symbol), Some(*amount), "{symbol}");
    }
    let connects = run.stats.public.connects();
    run.sim.inject(Fault::MaintenanceOff);
    wait_for(
        "the change made during maintenance",
        Duration::from_secs(10),
        || run.amount("BTCUSDT") == Some(d("0.9")),
    )
    .await;
    wait_for("sockets back", Duration::from_secs(10), || {
        run.stats.public.connects() > connects
    })
    .await;
    run.assert_books_equal(&["BTCUSDT", "ETHUSDT"]).await;
}

#[tokio::test]
async fn malformed_frames_are_counted_without_a_reconnect() {
    let run = start(fast_sim(), |_| {}).await;
    run.books_live("books live", &["BTCUSDT"], Duration::from_secs(10))
        .await;
    run.sim.inject(Fault::Malformed(6));
    // Two market sockets each get six.
    wait_for("12 malformed frames", Duration::from_secs(5), || {
        run.stats.malformed.load(Relaxed) >= 12
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run.stats.public.connects(), 1);
    assert_eq!(run.stats.market.connects(), 1);
    run.assert_books_equal(&["BTCUSDT"]).await;
}

#[tokio::test]
async fn rate_limits_and_bans_stop_requests_until_they_end() {
    let sim = BinanceSim::bind(
        BinanceSimConfig {
            weight_window: Duration::from_secs(1),
            ban_after: 2,
            ban_duration: Duration::from_secs(5),
            ..fast_sim()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let rest = Rest::new(&sim.rest_url(), keys(sim.config()), Duration::from_secs(2)).unwrap();
    rest.sync_time().await.unwrap();
    assert!(
        rest.stats.used_weight.load(Relaxed) >= 1,
        "weight header not read"
    );
    // 429: the client stops until Retry-After.
    sim.inject(Fault::RateLimit);
    let err = rest.depth("BTCUSDT", 5).await.unwrap_err();
    assert!(
        matches!(err, RestError::Paused { status: 429, .. }),
        "{err}"
    );
    let seen = sim.stats().rest_requests.load(Relaxed);
    let held = rest.depth("BTCUSDT", 5).await.unwrap_err();
    assert!(matches!(held, RestError::Paused { .. }));
    assert_eq!(
        sim.stats().rest_requests.load(Relaxed),
        seen,
        "a request went out during the pause"
    );
    assert!(rest.stats.held_back.load(Relaxed) >= 1);
    // Another process on the same IP keeps hammering: 429s, then a 418 ban.
    let raw = reqwest::Client::new();
    let url = format!("{}/fapi/v1/time", sim.rest_url());
    sim.inject(Fault::RateLimit);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(raw.get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&418), "{statuses:?}");
    // Our client's pause may be over by now; its next request meets the ban and stops
    // until the ban's end (the venue's time, from the message or Retry-After).
    while rest.paused_for().is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = rest.depth("BTCUSDT", 5).await.unwrap_err();
    assert!(
        matches!(err, RestError::Paused { status: 418, .. }),
        "{err}"
    );
    let pause = rest.paused_for().unwrap();
    assert!(pause > Duration::from_millis(2500), "{pause:?}");
    let before = sim.stats().rest_requests.load(Relaxed);
    while rest.paused_for().is_some() {
        assert!(rest.depth("BTCUSDT", 5).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.stats().rest_requests.load(Relaxed),
        before,
        "requests during the ban"
    );
    let book = rest.depth("BTCUSDT", 5).await.unwrap();
    assert_eq!(book.bids.len(), 5);
    assert_eq!(rest.stats.banned.load(Relaxed), 1);
    sim.stop();
}

#[tokio::test]
async fn signatures_keys_and_timestamps_are_checked() {
    let sim = BinanceSim::bind(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let good = Rest::new(&sim.rest_url(), keys(sim.config()), Duration::from_secs(2)).unwrap();
    let (rows, bad) = good.position_risk().await.unwrap();
    assert!(bad.is_empty());
    assert_eq!(rows.len(), 3);
    let wrong_secret = Keys {
        api_key: Secret::new(sim.config().api_key.clone()),
        secret: Secret::new("not-the-secret"),
    };
    let rest = Rest::new(&sim.rest_url(), wrong_secret, Duration::from_secs(2)).unwrap();
    let err = rest.position_risk().await.unwrap_err();
    assert_eq!(err.code(), Some(-1022), "{err}");
    assert!(err.is_auth());
    assert_eq!(sim.stats().bad_signatures.load(Relaxed), 1);
    let wrong_key = Keys {
        api_key: Secret::new("nobody"),
        secret: Secret::new(sim.config().secret.clone()),
    };
    let rest = Rest::new(&sim.rest_url(), wrong_key, Duration::from_secs(2)).unwrap();
    let err = rest.position_risk().await.unwrap_err();
    assert!(
        matches!(
            err,
            RestError::Api {
                status: 401,
                code: -2015,
                ..
            }
        ),
        "{err}"
    );
    // A tampered parameter after signing fails too.
    let raw = reqwest::Client::new();
    let ts = chrono::Utc::now().timestamp_millis();
    let q = format!("symbol=BTCUSDT&timestamp={ts}");
    let sig = streaming::binance::sign::sign(sim.config().secret.as_bytes(), q.as_bytes());
    let tampered = format!(
        "{}/fapi/v3/positionRisk?symbol=ETHUSDT&timestamp={ts}&signature={sig}",
        sim.rest_url()
    );
    let resp = raw
        .get(&tampered)
        .header("X-MBX-APIKEY", &sim.config().api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("-1022"));
    // A clock 10 s behind is outside recvWindow: -1021, and the client re-measures
    // its offset and succeeds on the retry.
    let stale = format!("timestamp={}", ts - 10_000);
    let sig = streaming::binance::sign::sign(sim.config().secret.as_bytes(), stale.as_bytes());
    let resp = raw
        .get(format!(
            "{}/fapi/v3/positionRisk?{stale}&signature={sig}",
            sim.rest_url()
        ))
        .header("X-MBX-APIKEY", &sim.config().api_key)
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("-1021"));
    good.stats.time_offset_ms.store(-10_000, Relaxed);
    assert!(good.position_risk().await.is_ok());
    assert!(good.stats.time_offset_ms.load(Relaxed).abs() < 1000);
    sim.stop();
}

#[tokio::test]
async fn a_limit_order_is_placed_queried_and_cancelled() {
    let sim = BinanceSim::bind(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let rest = Rest::new(&sim.rest_url(), keys(sim.config()), Duration::from_secs(2)).unwrap();
    let params = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut p = vec![("symbol", "BTCUSDT".to_owned())];
        p.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        p
    };
    let placed: serde_json::Value = serde_json::from_str(
        &rest
            .signed(
                Method::POST,
                "/fapi/v1/order",
                &params(&[
                    ("side", "BUY"),
                    ("type", "LIMIT"),
                    ("timeInForce", "GTC"),
                    ("quantity", "0.010"),
                    ("price", "30000.0"),
                    ("newClientOrderId", "gs-1"),
                ]),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(placed["status"], "NEW");
    let id = placed["orderId"].as_u64().unwrap().to_string();
    let got: serde_json::Value = serde_json::from_str(
        &rest
            .signed(
                Method::GET,
                "/fapi/v1/order",
                &params(&[("origClientOrderId", "gs-1")]),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got["orderId"].as_u64().unwrap().to_string(), id);
    let dup = rest
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &params(&[
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.010"),
                ("price", "30000.0"),
                ("newClientOrderId", "gs-1"),
            ]),
        )
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(-4116));
    let cancelled: serde_json::Value = serde_json::from_str(
        &rest
            .signed(
                Method::DELETE,
                "/fapi/v1/order",
                &params(&[("orderId", &id)]),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cancelled["status"], "CANCELED");
    let again = rest
        .signed(
            Method::DELETE,
            "/fapi/v1/order",
            &params(&[("orderId", &id)]),
        )
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(-2011));
    let off_tick = rest
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &params(&[
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.010"),
                ("price", "30000.05"),
            ]),
        )
        .await
        .unwrap_err();
    assert_eq!(off_tick.code(), Some(-4014));
    // A marketable order fills at the touch and moves the position.
    let before = sim.positions()["BTCUSDT"];
    rest.signed(
        Method::POST,
        "/fapi/v1/order",
        &params(&[("side", "SELL"), ("type", "MARKET"), ("quantity", "0.100")]),
    )
    .await
    .unwrap();
    assert_eq!(sim.positions()["BTCUSDT"], before - d("0.1"));
    sim.stop();
}

async fn call(rest: &Rest, method: Method, path: &str, p: &[(&str, &str)]) -> serde_json::Value {
    let p: Vec<(&str, String)> = p.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    serde_json::from_str(&rest.signed(method, path, &p).await.unwrap()).unwrap()
}

#[tokio::test]
async fn batch_orders_answer_per_slot_and_conditional_orders_live_on_the_algo_api() {
    let sim = BinanceSim::bind(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let rest = Rest::new(&sim.rest_url(), keys(sim.config()), Duration::from_secs(2)).unwrap();
    // ccxt's spelling: compact JSON, booleans and numbers unquoted.
    let batch = r#"[{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","quantity":"0.010","price":"30000.0","newClientOrderId":"b-1"},{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","quantity":0.01,"price":"30000.05"},{"symbol":"BTCUSDT","side":"SELL","type":"STOP_MARKET","quantity":"0.01","stopPrice":"1000","reduceOnly":true},{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","quantity":"0.010","price":"30001.0","newClientOrderId":"b-2"}]"#;
    let placed = call(
        &rest,
        Method::POST,
        "/fapi/v1/batchOrders",
        &[("batchOrders", batch)],
    )
    .await;
    let slots = placed.as_array().unwrap();
    assert_eq!(slots.len(), 4);
    assert_eq!(slots[0]["status"], "NEW");
    assert_eq!(slots[1]["code"], -4014, "off-tick price");
    assert_eq!(slots[2]["code"], -4120, "conditional type");
    assert_eq!(slots[3]["clientOrderId"], "b-2");
    let too_many = format!("[{}]", [r#"{"symbol":"BTCUSDT"}"#; 6].join(","));
    let err = rest
        .signed(
            Method::POST,
            "/fapi/v1/batchOrders",
            &[("batchOrders", too_many)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(-4082));
    let first = slots[0]["orderId"].as_u64().unwrap().to_string();
    let list = format!("[{first},424242]");
    let cancelled = call(
        &rest,
        Method::DELETE,
        "/fapi/v1/batchOrders",
        &[("symbol", "BTCUSDT"), ("orderIdList", &list)],
    )
    .await;
    assert_eq!(cancelled[0]["status"], "CANCELED");
    assert_eq!(cancelled[1]["code"], -2011);
    let by_cid = call(
        &rest,
        Method::DELETE,
        "/fapi/v1/batchOrders",
        &[
            ("symbol", "BTCUSDT"),
            ("origclientorderidlist", r#"["b-2"]"#),
        ],
    )
    .await;
    assert_eq!(by_cid[0]["clientOrderId"], "b-2");
    assert_eq!(by_cid[0]["status"], "CANCELED");

    // A stop far below the market rests as an algo order until cancelled.
    let algo = call(
        &rest,
        Method::POST,
        "/fapi/v1/algoOrder",
        &[
            ("algoType", "CONDITIONAL"),
            ("symbol", "BTCUSDT"),
            ("side", "SELL"),
            ("type", "STOP_MARKET"),
            ("quantity", "0.01"),
            ("triggerPrice", "1000"),
            ("clientAlgoId", "stop-1"),
        ],
    )
    .await;
    assert_eq!(algo["algoStatus"], "NEW");
    assert_eq!(algo["orderType"], "STOP_MARKET");
    let id = algo["algoId"].as_u64().unwrap().to_string();
    let open = call(&rest, Method::GET, "/fapi/v1/openAlgoOrders", &[]).await;
    assert_eq!(open.as_array().unwrap().len(), 1);
    let got = call(
        &rest,
        Method::GET,
        "/fapi/v1/algoOrder",
        &[("clientAlgoId", "stop-1")],
    )
    .await;
    assert_eq!(got["algoId"].as_u64().unwrap().to_string(), id);
    let gone = call(
        &rest,
        Method::DELETE,
        "/fapi/v1/algoOrder",
        &[("algoId", &id)],
    )
    .await;
    assert_eq!(gone["clientAlgoId"], "stop-1");
    let again = rest
        .signed(
            Method::DELETE,
            "/fapi/v1/algoOrder",
            &[("algoId", id.clone())],
        )
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(-2011));
    let got = call(&rest, Method::GET, "/fapi/v1/algoOrder", &[("algoId", &id)]).await;
    assert_eq!(got["algoStatus"], "CANCELED");
    let open = call(&rest, Method::GET, "/fapi/v1/openAlgoOrders", &[]).await;
    assert!(open.as_array().unwrap().is_empty());
    // The plain endpoint refuses conditional types.
    let err = rest
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT".into()),
                ("side", "SELL".into()),
                ("type", "TAKE_PROFIT_MARKET".into()),
                ("quantity", "0.01".into()),
                ("stopPrice", "90000".into()),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(-4120));
    sim.stop();
}

#[tokio::test]
async fn a_rate_limit_pause_holds_book_snapshots_back_instead_of_one_try_per_diff() {
    let run = start(
        BinanceSimConfig {
            weight_window: Duration::from_secs(2),
            ..fast_sim()
        },
        |_| {},
    )
    .await;
    let symbols = ["BTCUSDT", "ETHUSDT"];
    run.books_live("books live", &symbols, Duration::from_secs(10))
        .await;
    // The venue rate-limits us, and a gap makes every book want a snapshot at once.
    run.sim.inject(Fault::RateLimit);
    run.sim.inject(Fault::DepthGap);
    wait_for("the pause", Duration::from_secs(5), || {
        run.stats.rest.rate_limited.load(Relaxed) >= 1
    })
    .await;
    let held = run.stats.rest.held_back.load(Relaxed);
    // Diffs keep coming every 20 ms per symbol during the pause.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = run.stats.rest.held_back.load(Relaxed) - held;
    assert!(during <= 2, "{during} requests tried during the pause");
    run.books_live(
        "books live after the pause",
        &symbols,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn option_positions_take_their_contract_unit_from_the_venue() {
    let run = start(
        BinanceSimConfig {
            option_unit: 10,
            ..fast_sim()
        },
        |c| c.positions_refresh = Duration::from_millis(300),
    )
    .await;
    let call = "BTC-261225-60000-C";
    wait_for("the option position", Duration::from_secs(5), || {
        run.latest.lock().unwrap().contains_key(call)
    })
    .await;
    let p = run.latest.lock().unwrap()[call].position.clone();
    assert_eq!(
        p.contract_size,
        Decimal::from(10),
        "the venue's unit, not 1"
    );
}
