//! What every loopback test needs besides a venue, in one place for the clients' tests
//! (`streaming/tests`) and the service's (`tests/`): polling for a condition with a
//! deadline, and names that keep concurrent tests apart in a shared Redis.

use std::time::Duration;

use tokio::time::Instant;

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Redis key prefix no other test (or test process) uses: `gs-{tag}-{pid}-{µs}:`.
pub fn unique_prefix(tag: &str) -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("gs-{tag}-{}-{micros}:", std::process::id())
}
