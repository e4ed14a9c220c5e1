//! Metric names every broker adapter shares, labelled by `broker`.

pub const AUTHENTICATED: &str = "greekstream_broker_authenticated";
pub const POSITIONS: &str = "greekstream_broker_positions";
pub const REST_ERRORS: &str = "greekstream_broker_rest_errors_total";

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::event::Broker;

/// Counts a frame or row that could not be used (in `count` and in the shared
/// metric) and logs the first ten, then one in a thousand: a flood of bad frames
/// must not become a flood of log lines.
pub fn report_malformed(
    broker: Broker,
    count: &AtomicU64,
    what: &str,
    text: &str,
    err: &dyn std::fmt::Display,
) {
    let n = count.fetch_add(1, Relaxed) + 1;
    crate::ws::count_malformed(broker);
    if n <= 10 || n.is_multiple_of(1000) {
        let head: String = text.chars().take(120).collect();
        tracing::warn!(%broker, error = %err, frame = %head, malformed = n, "{what} skipped");
    }
}

/// Records whether the venue accepts our credentials, in `flag` and the gauge.
pub fn set_authenticated(broker: Broker, flag: &AtomicBool, ok: bool) {
    flag.store(ok, Relaxed);
    metrics::gauge!(AUTHENTICATED, "broker" => broker.as_str()).set(if ok { 1.0 } else { 0.0 });
}
