//! What the brokers' normalizers share: the result type, the contract cache and the
//! event-time rules.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::{Contract, GreekSnapshot, ModelError};

/// The result of normalizing one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub snapshot: GreekSnapshot,
    /// How many venue values were NaN/Infinity and were stored as missing.
    pub non_finite: u32,
}

/// Contracts kept parsed at once (far above any real book); past it the cache
/// starts over.
pub const MAX_CACHED_CONTRACTS: usize = 100_000;

/// One `Arc<Contract>` per distinct contract, so a hot stream does not rebuild (and
/// re-allocate) the same contract key for every event.
#[derive(Debug, Default)]
pub struct ContractCache {
    contracts: HashMap<String, Arc<Contract>>,
}

impl ContractCache {
    /// Returns the cached contract for `cache_key`, building it on first sight.
    pub fn contract(
        &mut self,
        cache_key: &str,
        build: impl FnOnce() -> Result<Contract, ModelError>,
    ) -> Result<Arc<Contract>, ModelError> {
        if let Some(c) = self.contracts.get(cache_key) {
            return Ok(c.clone());
        }
        if self.contracts.len() >= MAX_CACHED_CONTRACTS {
            // Expired contracts would otherwise stay for ever; rebuilding the live
            // ones from their next event is cheap.
            self.contracts.clear();
        }
        let c = Arc::new(build()?);
        self.contracts.insert(cache_key.to_owned(), c.clone());
        Ok(c)
    }

    pub fn len(&self) -> usize {
        self.contracts.len()
    }
}

/// The row's event time: the venue's epoch-ms timestamp when it sent one, else our
/// receive time; never far in the future (see [`clamp_future`]).
pub fn event_time(venue_ms: i64, received_at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::TimeZone;
    let venue = (venue_ms > 0)
        .then(|| Utc.timestamp_millis_opt(venue_ms).single())
        .flatten();
    clamp_future(venue.unwrap_or(received_at), received_at)
}

/// A venue clock far ahead of ours would put rows in a future partition; past a
/// minute of skew we trust our receive time instead.
pub fn clamp_future(event_time: DateTime<Utc>, received_at: DateTime<Utc>) -> DateTime<Utc> {
    if event_time > received_at + chrono::Duration::minutes(1) {
        received_at
    } else {
        event_time
    }
}
