//! One engine per stack: the engine that trades for a Redis prefix (and the database
//! and exchange account behind it) holds `{prefix}engine:lease`, renewed every second
//! and gone 5 s after the engine is. A second engine started on the same stack finds
//! it held and refuses to start, with a clear message, rather than run beside the
//! first (two engines would each take commands for the same sub-accounts, answer the
//! other's running commands ENGINE_RESTARTED and reconcile against each other).
//!
//! An engine that was killed leaves its lease behind for at most [`LEASE_TTL`]: its
//! successor waits that long for it. Redis unreachable at start-up: the engine starts
//! without the lease (the bus cannot deliver commands then either), and says so.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a lease outlives its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);

const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another engine ({holder}) is live on this stack (Redis prefix {prefix}): one engine trades per stack; stop it or give this one its own prefix and database")]
    Held { holder: String, prefix: String },
}

#[derive(Clone)]
pub struct EngineLease {
    client: redis::Client,
    key: String,
    token: String,
}

impl std::fmt::Debug for EngineLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client: its URL can carry a password.
        f.debug_struct("EngineLease")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish()
    }
}

impl EngineLease {
    /// Takes the stack's lease for `engine_id`, waiting out one a dead engine left.
    /// `Ok(None)`: Redis could not be asked (logged); the engine runs without it.
    pub async fn take(
        redis_url: &str,
        prefix: &str,
        engine_id: &str,
    ) -> Result<Option<Self>, LeaseError> {
        let Ok(client) = redis::Client::open(redis_url) else {
            return Ok(None);
        };
        let lease = Self {
            client,
            key: format!("{prefix}engine:lease"),
            token: format!(
                "{engine_id}:{}:{}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            ),
        };
        let deadline = tokio::time::Instant::now() + LEASE_TTL + Duration::from_secs(1);
        loop {
            match lease.try_take().await {
                Ok(None) => return Ok(Some(lease)),
                Ok(Some(holder)) if tokio::time::Instant::now() >= deadline => {
                    return Err(LeaseError::Held {
                        holder,
                        prefix: prefix.to_owned(),
                    })
                }
                Ok(Some(holder)) => {
                    tracing::info!(holder = %holder, "the stack's engine lease is held: waiting for it to lapse");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the engine lease cannot be asked for (Redis): starting without it");
                    return Ok(None);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `None` once taken; else who holds it.
    async fn try_take(&self) -> Result<Option<String>, redis::RedisError> {
        let mut c = self
            .client
            .get_multiplexed_async_connection_with_config(&bus::link::connection_config())
            .await?;
        let got: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_TTL.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if got.is_some() {
            return Ok(None);
        }
        let holder: Option<String> = redis::cmd("GET").arg(&self.key).query_async(&mut c).await?;
        Ok(Some(holder.unwrap_or_default()))
    }

    /// Renews the lease every second until `cancel`, then gives it up.
    pub async fn keep(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = cancel.cancelled() => break,
            }
            let renewed = self.script(RENEW, Some(LEASE_TTL)).await;
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    tracing::error!(key = %self.key, "the engine lease was lost to another engine")
                }
                Err(e) => tracing::warn!(error = %e, "the engine lease not renewed (Redis)"),
            }
        }
        self.release().await;
    }

    /// Gives the lease up (only if it is still ours).
    pub async fn release(&self) {
        let _ = self.script(RELEASE, None).await;
    }

    async fn script(&self, script: &str, ttl: Option<Duration>) -> Result<i64, redis::RedisError> {
        let mut c = self
            .client
            .get_multiplexed_async_connection_with_config(&bus::link::connection_config())
            .await?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(1).arg(&self.key).arg(&self.token);
        if let Some(ttl) = ttl {
            cmd.arg(ttl.as_millis() as u64);
        }
        cmd.query_async(&mut c).await
    }
}
