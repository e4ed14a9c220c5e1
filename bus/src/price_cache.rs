//! The price cache in Redis: one hash per symbol, `pms:price:BTCUSDT`, with mark,
//! bid, ask, mid and their venue timestamps, expiring after a TTL so a stopped feed
//! leaves no stale price behind.
//!
//! It is a cache, not a source of truth: the Binance market handler records the latest
//! values in memory ([`Prices`]); this task writes the changed symbols every
//! `flush_every` in one pipeline. With Redis down it keeps the latest values and
//! retries through its [`RedisLink`]. At start-up it deletes only `pms:price:*` (SCAN +
//! UNLINK, never FLUSHDB) so state kept under other keys survives a restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use streaming::binance::prices::Prices;
use tokio_util::sync::CancellationToken;

use super::link::RedisLink;

pub const CACHE_WRITES: &str = "greekstream_price_cache_writes_total";
pub const CACHE_ERRORS: &str = "greekstream_price_cache_errors_total";

/// What the cache has done, for tests and status (errors are its link's).
#[derive(Debug, Default)]
pub struct PriceCacheStats {
    pub writes: AtomicU64,
    /// Keys deleted at start-up.
    pub cleared: AtomicU64,
    pub connected: AtomicBool,
}

#[derive(Debug, Clone)]
pub struct PriceCacheConfig {
    /// Key namespace; keys are `{prefix}price:{SYMBOL}`.
    pub prefix: String,
    pub ttl: Duration,
    pub flush_every: Duration,
}

impl Default for PriceCacheConfig {
    fn default() -> Self {
        Self {
            prefix: "pms:".into(),
            ttl: Duration::from_secs(60),
            flush_every: Duration::from_millis(100),
        }
    }
}

impl PriceCacheConfig {
    pub fn key(&self, symbol: &str) -> String {
        format!("{}price:{symbol}", self.prefix)
    }
}

pub fn register_metrics() {
    metrics::counter!(CACHE_WRITES).increment(0);
}

/// Deletes every `{prefix}price:*` key and nothing else. Returns how many went.
pub async fn clear_prices(
    conn: &mut MultiplexedConnection,
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
    mut link: RedisLink,
    cfg: PriceCacheConfig,
    prices: Arc<Prices>,
    stats: Arc<PriceCacheStats>,
    cancel: CancellationToken,
) {
    register_metrics();
    let mut cleared = false;
    let ttl_ms = cfg.ttl.as_millis() as i64;
    loop {
        let Some(mut conn) = link.connect(&cancel).await else {
            return;
        };
        if !cleared {
            match clear_prices(&mut conn, &cfg.prefix).await {
                Ok(n) => {
                    cleared = true;
                    stats.cleared.store(n, Relaxed);
                    tracing::info!(deleted = n, pattern = %format!("{}price:*", cfg.prefix),
                        "price cache cleared");
                }
                Err(e) => {
                    if !link.failed(&e, &cancel).await {
                        return;
                    }
                    continue;
                }
            }
        }
        link.succeeded();
        stats.connected.store(true, Relaxed);
        prices.mark_all_dirty();
        let mut every = tokio::time::interval(cfg.flush_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let err = loop {
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
                pipe.pexpire(&key, ttl_ms).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    stats.writes.fetch_add(batch.len() as u64, Relaxed);
                    metrics::counter!(CACHE_WRITES).increment(batch.len() as u64);
                }
                Err(e) => break e,
            }
        };
        // What was taken is written again after the reconnect (mark_all_dirty).
        stats.connected.store(false, Relaxed);
        if !link.failed(&err, &cancel).await {
            return;
        }
    }
}
