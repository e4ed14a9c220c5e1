//! Which price an order is checked at: the in-process stream, then the Redis cache,
//! then the venue's REST (the simulator), each with the staleness bound; stale or
//! missing everywhere refuses with a code. Real Redis, real simulator.

use std::sync::Arc;
use std::time::Duration;

use engine::prices::{PriceChain, PriceChainConfig};
use rust_decimal::Decimal;
use simulators::binance::{BinanceSim, BinanceSimConfig};
use simulators::testkit::unique_prefix;
use streaming::binance::prices::Prices;
use trading::price::Source;

const REDIS: &str = "redis://127.0.0.1:6379";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (README set-up)")
}

async fn cache(prefix: &str, symbol: &str, mark: &str, at: i64) {
    let mut c = redis().await;
    let key = format!("{prefix}price:{symbol}");
    redis::cmd("HSET")
        .arg(&key)
        .arg("mark")
        .arg(mark)
        .arg("mark_time")
        .arg(at)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    redis::cmd("EXPIRE")
        .arg(&key)
        .arg(60)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
}

fn chain(prefix: &str, prices: &Arc<Prices>, redis_url: &str, rest: &str) -> PriceChain {
    PriceChain::new(PriceChainConfig {
        max_age: Duration::from_secs(10),
        timeout: Duration::from_millis(500),
        prefix: prefix.to_owned(),
    })
    .with_stream(prices.clone())
    .with_cache(redis::Client::open(redis_url).unwrap())
    .with_rest(reqwest::Client::new(), rest)
}

#[tokio::test]
async fn the_first_fresh_source_is_used_and_a_stale_price_is_never() {
    let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let prefix = unique_prefix("pricechain");
    let prices = Arc::new(Prices::default());
    let c = chain(&prefix, &prices, REDIS, &sim.rest_url());

    // Nothing in the stream or the cache: the venue's premiumIndex answers.
    let q = c.mark("BTCUSDT").await.unwrap();
    assert_eq!(q.source, Source::Rest);
    assert!(q.price > Decimal::ZERO);

    // A fresh cache entry wins over REST; a stale one does not.
    cache(&prefix, "BTCUSDT", "61000.5", now_ms() - 1_000).await;
    let q = c.mark("BTCUSDT").await.unwrap();
    assert_eq!(
        (q.source, q.price),
        (Source::Cache, "61000.5".parse().unwrap())
    );
    cache(&prefix, "BTCUSDT", "61000.5", now_ms() - 60_000).await;
    assert_eq!(c.mark("BTCUSDT").await.unwrap().source, Source::Rest);

    // A fresh stream mark wins over everything.
    prices.update("BTCUSDT", |e| {
        e.mark = Some("60123.4".parse().unwrap());
        e.mark_time = now_ms();
    });
    let q = c.mark("BTCUSDT").await.unwrap();
    assert_eq!(
        (q.source, q.price),
        (Source::Stream, "60123.4".parse().unwrap())
    );

    // Everything stale: the stream 30 s old, the cache a minute, the venue's clock
    // a minute behind. Refused, with the nearest quote's age.
    prices.update("BTCUSDT", |e| e.mark_time = now_ms() - 30_000);
    sim.set_clock_offset(-60_000);
    let e = c.mark("BTCUSDT").await.unwrap_err();
    assert_eq!(e.code(), "PRICE_STALE", "{e}");
    assert!(e.to_string().contains("(stream) is 30"), "{e}");

    // A symbol nobody prices.
    let e = c.mark("NOPEUSDT").await.unwrap_err();
    assert_eq!(e.code(), "PRICE_UNAVAILABLE");
}

#[tokio::test]
async fn a_cache_that_is_down_costs_only_itself() {
    let sim = BinanceSim::bind(BinanceSimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let c = chain("x:", &Arc::new(Prices::default()), &url, &sim.rest_url());
    assert_eq!(c.mark("BTCUSDT").await.unwrap().source, Source::Rest);
    // And no venue either: no price.
    let c = PriceChain::new(PriceChainConfig::default())
        .with_cache(redis::Client::open(url.as_str()).unwrap());
    assert_eq!(
        c.mark("BTCUSDT").await.unwrap_err().code(),
        "PRICE_UNAVAILABLE"
    );
}
