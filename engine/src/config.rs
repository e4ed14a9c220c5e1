//! What the executor is told: its timings, the house's positions, the reconciliation
//! lock, the order journal.

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use streaming::binance::rest::RECV_WINDOW_MS;

use super::journal::JournalSync;

#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// How long after a request's timestamp the venue can still accept it: before
    /// then, "does not exist" may only mean "not yet".
    pub acceptance_window: Duration,
    /// The resolver's first and longest waits between queries.
    pub resolve_first: Duration,
    pub resolve_max: Duration,
    /// How often the venue's clock is measured.
    pub clock_every: Duration,
    /// A drift over this is logged as a warning.
    pub drift_warn: Duration,
    /// A drift over this refuses orders that open (reducing ones still go).
    pub drift_block: Duration,
    /// Positions on the shared exchange account that belong to no sub-account (set by
    /// the operator): reconciliation compares the exchange minus these with the book.
    pub house: HashMap<String, Decimal>,
    /// How often reconciliation runs (also after every user-stream reconnect).
    pub reconcile_every: Duration,
    /// A symbol filled this recently is not judged for desync: its fill may still be
    /// on its way to the book.
    pub fill_debounce: Duration,
    /// The lock that keeps two engines from reconciling at once.
    pub lock: Option<ReconcileLock>,
    /// How long the order path trusts an account's book read from the ledger. The
    /// engine's own writes refresh it at once; this bounds how long a change made
    /// outside the engine (an operator's SQL) can go unseen.
    pub book_ttl: Duration,
    /// Our own cap on new orders, below the venue's: the venue's limits (read from
    /// `exchangeInfo`; Binance's 300 per 10 s and 1 200 per minute when it states
    /// none) apply in any case.
    pub order_limits: Option<trading::budget::Limits>,
    /// Where this process's order journal lives ([`super::journal`]); reconciliation
    /// replays the journals other processes left here.
    pub journal_dir: std::path::PathBuf,
    /// Whether each journal append waits for the disk ([`JournalSync`]).
    pub journal_sync: JournalSync,
}

/// The journal's directory when none is configured (`GS_ORDER_JOURNAL_DIR`).
pub const DEFAULT_JOURNAL_DIR: &str = "var/journal";

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            acceptance_window: Duration::from_millis(RECV_WINDOW_MS + 1_000),
            resolve_first: Duration::from_millis(200),
            resolve_max: Duration::from_secs(5),
            clock_every: Duration::from_secs(60),
            drift_warn: Duration::from_secs(1),
            drift_block: Duration::from_secs(5),
            house: HashMap::new(),
            reconcile_every: Duration::from_secs(60),
            fill_debounce: Duration::from_secs(5),
            lock: None,
            book_ttl: Duration::from_secs(10),
            order_limits: None,
            journal_dir: DEFAULT_JOURNAL_DIR.into(),
            journal_sync: Default::default(),
        }
    }
}

/// `SET {key} {token} NX PX {ttl}` around a reconciliation, released only by its
/// owner: two engines (or an engine and an operator's `greekstream order reconcile`)
/// never reconcile at once. Redis unreachable: the round is skipped (fail closed) and
/// retried at the next.
#[derive(Clone)]
pub struct ReconcileLock {
    pub client: redis::Client,
    /// `pms:lock:reconcile`.
    pub key: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for ReconcileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client: its URL can carry a password.
        f.debug_struct("ReconcileLock")
            .field("key", &self.key)
            .finish()
    }
}

const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

impl ReconcileLock {
    /// The lock's token if taken; `None` if another holds it.
    pub(super) async fn take(&self) -> Result<Option<String>, redis::RedisError> {
        let mut c = self.client.get_multiplexed_async_connection().await?;
        let token = format!(
            "{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let got: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(got.map(|_| token))
    }

    pub(super) async fn release(&self, token: &str) {
        let Ok(mut c) = self.client.get_multiplexed_async_connection().await else {
            return;
        };
        // Compare and delete in one step (EVAL: no script cache needed).
        let _: Result<i64, _> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&self.key)
            .arg(token)
            .query_async(&mut c)
            .await;
    }
}
