//! The price cache (`bus::price_cache`) fed by the Binance client running
//! against the simulator, with real Redis: prices land with a TTL, start-up clears only
//! price keys, and Redis being down costs nothing but the cache.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bus::price_cache::{run_price_cache, PriceCacheConfig, PriceCacheStats, CACHE_ERRORS};
use bus::RedisLink;
use rust_decimal::Decimal;
use simulators::binance::{BinanceSim, BinanceSimConfig};
use simulators::testkit::{unique_prefix, wait_for};
use streaming::binance::rest::Keys;
use streaming::binance::{run_binance, BinanceConfig, BinanceStats};
use streaming::secret::Secret;
use streaming::BrokerEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379";

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

struct Run {
    _sim: BinanceSim,
    stats: Arc<BinanceStats>,
    cache: Arc<PriceCacheStats>,
    cache_errors: Arc<std::sync::atomic::AtomicU64>,
    events: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The Binance client on the simulator (plus `symbols` not held), and the price cache
/// writing through `redis_url` under `prefix`.
async fn start(redis_url: &str, prefix: &str, symbols: &[&str]) -> Run {
    let sim_cfg = BinanceSimConfig {
        tick_interval: Duration::from_millis(20),
        mark_interval: Duration::from_millis(200),
        ..BinanceSimConfig::default()
    };
    let keys = Keys {
        api_key: Secret::new(sim_cfg.api_key.clone()),
        secret: Secret::new(sim_cfg.secret.clone()),
    };
    let sim = BinanceSim::bind(sim_cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cfg = BinanceConfig::new(sim.rest_url(), sim.ws_url(), keys);
    cfg.symbols = symbols.iter().map(|s| s.to_string()).collect();
    cfg.positions_refresh = Duration::from_secs(3600);
    let stats = Arc::new(BinanceStats::default());
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<BrokerEvent>(4096);
    tokio::spawn(run_binance(cfg, tx, stats.clone(), cancel.clone()));
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = events.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            seen.fetch_add(1, Relaxed);
        }
    });
    let pc = PriceCacheConfig {
        prefix: prefix.to_owned(),
        ttl: Duration::from_secs(30),
        ..PriceCacheConfig::default()
    };
    let link = RedisLink::open(redis_url, "price cache", CACHE_ERRORS).unwrap();
    let cache = Arc::new(PriceCacheStats::default());
    let cache_errors = link.errors();
    tokio::spawn(run_price_cache(
        link,
        pc,
        stats.prices.clone(),
        cache.clone(),
        cancel.clone(),
    ));
    Run {
        _sim: sim,
        stats,
        cache,
        cache_errors,
        events,
        cancel,
    }
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

#[tokio::test]
async fn prices_reach_redis_and_start_up_clears_only_price_keys() {
    let prefix = unique_prefix("prices");
    let mut conn = redis().await;
    let stale = format!("{prefix}price:OLDUSDT");
    let keep = [
        format!("{prefix}algo:twap:1"),
        format!("{prefix}risk:limits"),
    ];
    for k in std::iter::once(&stale).chain(&keep) {
        redis::cmd("SET")
            .arg(k)
            .arg("keep")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let run = start(REDIS, &prefix, &["SOLUSDT"]).await;
    let key = format!("{prefix}price:BTCUSDT");
    let mut fields: HashMap<String, String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(fields.contains_key("mark") && fields.contains_key("mid")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no prices in Redis: {fields:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        fields = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let bid = d(&fields["bid"]);
    let ask = d(&fields["ask"]);
    assert!(bid < ask, "{fields:?}");
    assert_eq!(d(&fields["mid"]), (bid + ask) / Decimal::TWO);
    let mark = d(&fields["mark"]);
    assert!(
        (mark - bid).abs() < d("100"),
        "mark {mark} far from the book {bid}"
    );
    assert!(fields["mark_time"].parse::<i64>().unwrap() > 0);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "ttl {ttl}");
    wait_for(
        "a configured symbol not held",
        Duration::from_secs(5),
        || {
            run.stats
                .prices
                .get("SOLUSDT")
                .is_some_and(|e| e.bid.is_some())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(exists(&mut conn, &format!("{prefix}price:SOLUSDT")).await);
    assert!(
        !exists(&mut conn, &stale).await,
        "the stale price survived start-up"
    );
    for k in &keep {
        let v: Option<String> = redis::cmd("GET")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("keep"), "{k} was deleted");
    }
    assert_eq!(run.cache.cleared.load(Relaxed), 1);
    drop(run);
    let mut all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    all.extend(keep);
    redis::cmd("DEL")
        .arg(&all)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_down_is_survived() {
    // Nothing listens on port 1: the cache retries, the stream goes on.
    let run = start("redis://127.0.0.1:1", &unique_prefix("down"), &[]).await;
    wait_for("marks and cache errors", Duration::from_secs(5), || {
        run.stats
            .prices
            .get("BTCUSDT")
            .is_some_and(|e| e.mark.is_some())
            && run.cache_errors.load(Relaxed) >= 1
    })
    .await;
    let sent = run.events.load(Relaxed);
    wait_for("events still flowing", Duration::from_secs(5), || {
        run.events.load(Relaxed) > sent
    })
    .await;
}
