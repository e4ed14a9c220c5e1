//! The price cache in Redis: one hash per symbol, `pms:price:BTCUSDT`, with mark,
//! bid, ask, mid and their venue timestamps, expiring after a TTL so a stopped feed
//! leaves no stale price behind.
//!
//! It is a cache, not a source of truth: the market handler only records the latest
//! values in memory; this task writes the changed symbols every `flush_every` in one
//! pipeline. With Redis down it logs once, keeps the latest values, and retries with
//! backoff. At start-up it deletes only `pms:price:*` (SCAN + UNLINK, never FLUSHDB)
//! so algo and risk state kept under other keys survives a restart.

use backoff::backoff::Backoff;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

pub const CACHE_WRITES: &str = "greekstream_price_cache_writes_total";
pub const CACHE_ERRORS: &str = "greekstream_price_cache_errors_total";

#[derive(Debug, Clone)]
pub struct PriceCacheConfig {
    pub redis_url: String,
    /// Key namespace; keys are `{prefix}price:{SYMBOL}`.
    pub prefix: String,
    pub ttl: Duration,
    pub flush_every: Duration,
}

impl PriceCacheConfig {
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            prefix: "pms:".into(),
            ttl: Duration::from_secs(60),
            flush_every: Duration::from_millis(100),
        }
    }

    pub fn key(&self, symbol: &str) -> String {
        format!("{}price:{symbol}", self.prefix)
    }
}

/// The latest prices of one symbol (venue times in epoch ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceEntry {
    pub mark: Option<Decimal>,
    pub mark_time: i64,
    pub bid: Option<Decimal>,
    pub ask: Option<Decimal>,
    pub book_time: i64,
}

impl PriceEntry {
    pub fn mid(&self) -> Option<Decimal> {
        match (self.bid, self.ask) {
            (Some(b), Some(a)) if b > Decimal::ZERO && a >= b => Some((a + b) / Decimal::TWO),
            _ => None,
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::with_capacity(7);
        let mut put = |k, v: Option<Decimal>| {
            if let Some(v) = v {
                f.push((k, v.normalize().to_string()));
            }
        };
        put("mark", self.mark);
        put("bid", self.bid);
        put("ask", self.ask);
        put("mid", self.mid());
        if self.mark_time > 0 {
            f.push(("mark_time", self.mark_time.to_string()));
        }
        if self.book_time > 0 {
            f.push(("book_time", self.book_time.to_string()));
        }
        f.push((
            "updated_at",
            chrono::Utc::now().timestamp_millis().to_string(),
        ));
        f
    }
}

#[derive(Debug, Default)]
pub struct PriceCacheStats {
    pub writes: AtomicU64,
    pub errors: AtomicU64,
    pub cleared: AtomicU64,
    pub connected: std::sync::atomic::AtomicBool,
}

/// What the market handler writes into and the flush task reads from.
#[derive(Debug, Default)]
pub struct Prices {
    inner: Mutex<(HashMap<String, PriceEntry>, HashSet<String>)>,
    pub stats: PriceCacheStats,
}

impl Prices {
    pub fn update(&self, symbol: &str, f: impl FnOnce(&mut PriceEntry)) {
        let mut g = self.inner.lock().expect("prices lock");
        let (entries, dirty) = &mut *g;
        match entries.get_mut(symbol) {
            Some(e) => f(e),
            None => {
                let mut e = PriceEntry::default();
                f(&mut e);
                entries.insert(symbol.to_owned(), e);
            }
        }
        if !dirty.contains(symbol) {
            dirty.insert(symbol.to_owned());
        }
    }

    pub fn get(&self, symbol: &str) -> Option<PriceEntry> {
        self.inner
            .lock()
            .expect("prices lock")
            .0
            .get(symbol)
            .cloned()
    }

    fn take_dirty(&self) -> Vec<(String, PriceEntry)> {
        let mut g = self.inner.lock().expect("prices lock");
        let (entries, dirty) = &mut *g;
        dirty
            .drain()
            .filter_map(|s| entries.get(&s).map(|e| (s, e.clone())))
            .collect()
    }

    fn mark_all_dirty(&self) {
        let mut g = self.inner.lock().expect("prices lock");
        let (entries, dirty) = &mut *g;
        dirty.extend(entries.keys().cloned());
    }
}

pub fn register_metrics() {
    metrics::counter!(CACHE_WRITES).increment(0);
    metrics::counter!(CACHE_ERRORS).increment(0);
}

/// Deletes every `{prefix}price:*` key and nothing else. Returns how many went.
pub async fn clear_prices(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<u64> {
    let pattern = format!("{prefix}price:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Writes changed prices until `cancel` fires; survives Redis being down.
pub async fn run_price_cache(
    cfg: PriceCacheConfig,
    prices: std::sync::Arc<Prices>,
    cancel: CancellationToken,
) {
    register_metrics();
    let client = match redis::Client::open(cfg.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid Redis URL; the price cache is off");
            return;
        }
    };
    let mut cleared = false;
    let mut failures = 0u32;
    let mut retry = crate::retry::redis();
    let ttl_ms = cfg.ttl.as_millis() as u64;
    while !cancel.is_cancelled() {
        let conn = tokio::select! {
            c = client.get_multiplexed_async_connection() => c,
            _ = cancel.cancelled() => return,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                failure(&prices, &mut failures, &e);
                backoff(&mut retry, &cancel).await;
                continue;
            }
        };
        if !cleared {
            match clear_prices(&mut conn, &cfg.prefix).await {
                Ok(n) => {
                    cleared = true;
                    prices.stats.cleared.store(n, Relaxed);
                    tracing::info!(deleted = n, pattern = %format!("{}price:*", cfg.prefix),
                        "price cache cleared");
                }
                Err(e) => {
                    failure(&prices, &mut failures, &e);
                    backoff(&mut retry, &cancel).await;
                    continue;
                }
            }
        }
        if failures > 0 {
            tracing::info!("Redis is back; the price cache writes again");
            failures = 0;
            retry.reset();
        }
        prices.stats.connected.store(true, Relaxed);
        prices.mark_all_dirty();
        let mut every = tokio::time::interval(cfg.flush_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let batch = prices.take_dirty();
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (symbol, entry) in &batch {
                let key = cfg.key(symbol);
                pipe.hset_multiple(&key, &entry.fields()).ignore();
                pipe.pexpire(&key, ttl_ms as i64).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    prices.stats.writes.fetch_add(batch.len() as u64, Relaxed);
                    metrics::counter!(CACHE_WRITES).increment(batch.len() as u64);
                }
                Err(e) => {
                    prices.stats.connected.store(false, Relaxed);
                    prices.mark_all_dirty();
                    failure(&prices, &mut failures, &e);
                    break;
                }
            }
        }
        backoff(&mut retry, &cancel).await;
    }
}

fn failure(prices: &Prices, failures: &mut u32, e: &redis::RedisError) {
    *failures += 1;
    prices.stats.errors.fetch_add(1, Relaxed);
    metrics::counter!(CACHE_ERRORS).increment(1);
    if *failures == 1 || failures.is_power_of_two() {
        tracing::warn!(error = %e, failures = *failures, "Redis unavailable; price cache retrying");
    }
}

async fn backoff(backoff: &mut backoff::ExponentialBackoff, cancel: &CancellationToken) {
    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_needs_a_sane_book() {
        let mut e = PriceEntry {
            bid: Some(Decimal::from(100)),
            ask: Some(Decimal::from(101)),
            ..PriceEntry::default()
        };
        assert_eq!(e.mid(), Some(Decimal::new(1005, 1)));
        e.ask = Some(Decimal::from(99));
        assert_eq!(e.mid(), None);
        let keys: Vec<_> = e.fields().into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"bid") && !keys.contains(&"mid") && !keys.contains(&"mark"));
    }

    #[test]
    fn dirty_symbols_are_taken_once() {
        let p = Prices::default();
        p.update("BTCUSDT", |e| e.mark = Some(Decimal::ONE));
        p.update("BTCUSDT", |e| e.bid = Some(Decimal::ONE));
        let batch = p.take_dirty();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1.bid, Some(Decimal::ONE));
        assert!(p.take_dirty().is_empty());
        p.mark_all_dirty();
        assert_eq!(p.take_dirty().len(), 1);
    }
}
