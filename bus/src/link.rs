//! The one way this service connects to Redis: open the URL once (a bad URL is a
//! configuration error, found at start-up), connect with the one backoff, and report
//! an outage once when it starts, sparsely while it lasts, and once when it ends.
//!
//! Redis is a bus, not the source of truth: every user of a link keeps working (and
//! keeps what it must publish) while Redis is down, and retries through this type.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct InvalidRedisUrl(redis::RedisError);

/// How long connecting may take, and a reply: past either, the connection is taken
/// for dead and replaced. Without them a half-open connection (a Redis that went away
/// without a word, a forgotten NAT flow) would hang its user for good.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

/// A named connection to Redis with its retry state.
pub struct RedisLink {
    client: redis::Client,
    /// Says who is waiting in logs (`price cache`, `position events`).
    name: &'static str,
    /// The counter every failure increments (`greekstream_price_cache_errors_total`).
    errors_metric: &'static str,
    errors: Arc<AtomicU64>,
    retry: ExponentialBackoff,
    /// Consecutive failures: the outage in progress.
    failures: u32,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it can carry a password.
        f.debug_struct("RedisLink")
            .field("name", &self.name)
            .field("failures", &self.failures)
            .finish()
    }
}

impl RedisLink {
    pub fn open(
        url: &str,
        name: &'static str,
        errors_metric: &'static str,
    ) -> Result<Self, InvalidRedisUrl> {
        metrics::counter!(errors_metric).increment(0);
        Ok(Self {
            client: redis::Client::open(url).map_err(InvalidRedisUrl)?,
            name,
            errors_metric,
            errors: Arc::default(),
            retry: streaming::retry::redis(),
            failures: 0,
        })
    }

    /// A connection, retrying until one is made; `None` once `cancel` fires.
    pub async fn connect(&mut self, cancel: &CancellationToken) -> Option<MultiplexedConnection> {
        loop {
            let config = connection_config();
            let made = tokio::select! {
                c = self.client.get_multiplexed_async_connection_with_config(&config) => c,
                _ = cancel.cancelled() => return None,
            };
            match made {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    if !self.failed(&e, cancel).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Records a failure and waits the backoff; false when `cancel` fired meanwhile.
    pub async fn failed(&mut self, e: &redis::RedisError, cancel: &CancellationToken) -> bool {
        self.errors.fetch_add(1, Relaxed);
        metrics::counter!(self.errors_metric).increment(1);
        self.failures += 1;
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(error = %e, failures = self.failures, "Redis unavailable; the {} retries", self.name);
        }
        let wait = self.retry.next_backoff().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// Call after a success: ends an outage (logged once) and resets the backoff.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "Redis is back; the {} goes on",
                self.name
            );
            self.failures = 0;
            self.retry.reset();
        }
    }

    /// Runs `cmd` on `conn` (connecting when there is none) until it succeeds; a
    /// failure drops the connection and waits the backoff. False once `cancel` fires:
    /// what must be published is kept by its caller until then, in order.
    pub async fn run_until_done(
        &mut self,
        conn: &mut Option<MultiplexedConnection>,
        cmd: &redis::Cmd,
        cancel: &CancellationToken,
    ) -> bool {
        loop {
            if conn.is_none() {
                *conn = self.connect(cancel).await;
            }
            let Some(c) = conn.as_mut() else {
                return false;
            };
            match cmd.query_async::<redis::Value>(c).await {
                Ok(_) => {
                    self.succeeded();
                    return true;
                }
                Err(e) => {
                    *conn = None;
                    if !self.failed(&e, cancel).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Every failure so far (connects and commands), for tests and status pages.
    pub fn errors(&self) -> Arc<AtomicU64> {
        self.errors.clone()
    }

    /// True while the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }
}
