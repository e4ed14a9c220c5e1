//! The price an order is checked at: the in-process Binance prices first, then the
//! Redis cache (`pms:price:{SYMBOL}`, written by [`bus::price_cache`]), then
//! the venue's `GET /fapi/v1/premiumIndex`, each quote judged fresh or stale by
//! `trading::price` against one bound. A source that fails or does not answer within
//! its timeout counts as having no quote; an order is never checked at a stale price.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use rust_decimal::Decimal;
use streaming::binance::prices::Prices;
use tokio::sync::Mutex;
use trading::price::{Lookup, PriceError, Quote, Source};

pub const SOURCE_ERRORS: &str = "greekstream_price_source_errors_total";

#[derive(Debug, Clone)]
pub struct PriceChainConfig {
    /// A quote older than this (by its venue time) is stale. The JS used 10 s.
    pub max_age: Duration,
    /// How long the cache and REST each get to answer.
    pub timeout: Duration,
    /// Key namespace of the cache (`pms:`).
    pub prefix: String,
}

impl Default for PriceChainConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
            prefix: "pms:".into(),
        }
    }
}

pub struct PriceChain {
    config: PriceChainConfig,
    prices: Option<Arc<Prices>>,
    redis: Option<(redis::Client, Mutex<Option<MultiplexedConnection>>)>,
    rest: Option<(reqwest::Client, String)>,
}

impl std::fmt::Debug for PriceChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the Redis URL: it can carry a password.
        f.debug_struct("PriceChain")
            .field("stream", &self.prices.is_some())
            .field("cache", &self.redis.is_some())
            .field("rest", &self.rest.as_ref().map(|(_, base)| base))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("timed out")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected answer: {0}")]
    Shape(String),
}

impl PriceChain {
    pub fn new(config: PriceChainConfig) -> Self {
        metrics::counter!(SOURCE_ERRORS).increment(0);
        Self {
            config,
            prices: None,
            redis: None,
            rest: None,
        }
    }

    pub fn with_stream(mut self, prices: Arc<Prices>) -> Self {
        self.prices = Some(prices);
        self
    }

    pub fn with_cache(mut self, client: redis::Client) -> Self {
        self.redis = Some((client, Mutex::new(None)));
        self
    }

    /// `base` is the futures REST root, e.g. `https://fapi.binance.com`.
    pub fn with_rest(mut self, client: reqwest::Client, base: &str) -> Self {
        self.rest = Some((client, base.trim_end_matches('/').to_owned()));
        self
    }

    /// How old a quote may be and still be fresh.
    pub fn max_age(&self) -> Duration {
        self.config.max_age
    }

    /// The first fresh quote for `symbol`, or why there is none.
    pub async fn mark(&self, symbol: &str) -> Result<Quote, PriceError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut lookup = Lookup::new(symbol, now, self.config.max_age.as_millis() as i64);
        let stream = self.prices.as_ref().and_then(|p| {
            let e = p.get(symbol)?;
            Some(Quote {
                price: e.mark?,
                at_ms: e.mark_time,
                source: Source::Stream,
            })
        });
        if let Some(q) = lookup.offer(stream) {
            return Ok(q);
        }
        if self.redis.is_some() {
            let cached = self.counted(Source::Cache, self.cached(symbol)).await;
            if let Some(q) = lookup.offer(cached) {
                return Ok(q);
            }
        }
        if self.rest.is_some() {
            let fetched = self.counted(Source::Rest, self.fetched(symbol)).await;
            if let Some(q) = lookup.offer(fetched) {
                return Ok(q);
            }
        }
        Err(lookup.fail())
    }

    async fn counted(
        &self,
        source: Source,
        f: impl std::future::Future<Output = Result<Option<Quote>, SourceError>>,
    ) -> Option<Quote> {
        let r = match tokio::time::timeout(self.config.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout),
        };
        r.unwrap_or_else(|e| {
            metrics::counter!(SOURCE_ERRORS, "source" => source.as_str()).increment(1);
            tracing::debug!(source = source.as_str(), error = %e, "price source failed");
            None
        })
    }

    async fn cached(&self, symbol: &str) -> Result<Option<Quote>, SourceError> {
        let (client, conn) = self.redis.as_ref().expect("checked by the caller");
        // The connection is multiplexed: a clone of it is used outside the lock, so
        // one slow Redis call never holds up the others (the lock only guards the
        // connecting).
        let mut c = {
            let mut guard = conn.lock().await;
            if guard.is_none() {
                *guard = Some(client.get_multiplexed_async_connection().await?);
            }
            guard.clone().expect("set above")
        };
        let key = format!("{}price:{symbol}", self.config.prefix);
        let got: Result<(Option<String>, Option<i64>), _> = redis::cmd("HMGET")
            .arg(&key)
            .arg("mark")
            .arg("mark_time")
            .query_async(&mut c)
            .await;
        let (mark, at) = match got {
            Ok(v) => v,
            Err(e) => {
                *conn.lock().await = None;
                return Err(e.into());
            }
        };
        let (Some(mark), Some(at)) = (mark, at) else {
            return Ok(None);
        };
        let price = mark
            .parse::<Decimal>()
            .map_err(|_| SourceError::Shape(format!("{key} mark {mark:?}")))?;
        Ok(Some(Quote {
            price,
            at_ms: at,
            source: Source::Cache,
        }))
    }

    async fn fetched(&self, symbol: &str) -> Result<Option<Quote>, SourceError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct PremiumIndex {
            mark_price: String,
            time: i64,
        }
        let (client, base) = self.rest.as_ref().expect("checked by the caller");
        let r = client
            .get(format!("{base}/fapi/v1/premiumIndex"))
            .query(&[("symbol", symbol)])
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::BAD_REQUEST {
            // -1121 Invalid symbol: the venue has no price for it.
            return Ok(None);
        }
        let p: PremiumIndex = r.error_for_status()?.json().await?;
        let price = p
            .mark_price
            .parse::<Decimal>()
            .map_err(|_| SourceError::Shape(format!("markPrice {:?}", p.mark_price)))?;
        Ok(Some(Quote {
            price,
            at_ms: p.time,
            source: Source::Rest,
        }))
    }
}
