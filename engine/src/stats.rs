//! The executor's counters and recent latencies, for tests, benchmarks and reports.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

/// Counters a test or a status page can read.
#[derive(Debug, Default)]
pub struct ExecutionStats {
    pub placed: AtomicU64,
    pub ambiguous: AtomicU64,
    pub resolved: AtomicU64,
    pub fills_booked: AtomicU64,
    pub duplicates: AtomicU64,
    pub feed_errors: AtomicU64,
    pub foreign: AtomicU64,
    pub desync_closes: AtomicU64,
    /// The last measured |venue clock − ours|, in ms.
    pub drift_ms: AtomicI64,
    /// Recent latencies in µs (the newest `LATENCY_SAMPLES` of each), for reports.
    pub latencies: std::sync::Mutex<Latencies>,
}

/// How many recent samples of each latency are kept.
pub const LATENCY_SAMPLES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Latencies {
    pub overhead_us: std::collections::VecDeque<u32>,
    /// Of the overhead: the checks before the write (gates, book, price, risk).
    pub checks_us: std::collections::VecDeque<u32>,
    /// Of the overhead: the order's journal append, durable.
    pub write_us: std::collections::VecDeque<u32>,
    /// The order row's commit, beside the venue call (not part of the overhead).
    pub row_us: std::collections::VecDeque<u32>,
    pub ack_us: std::collections::VecDeque<u32>,
    pub fill_booking_us: std::collections::VecDeque<u32>,
    /// Of the fill booking: its transaction (the order locked, the fill booked, the
    /// order's event row), from its start to its commit.
    pub booking_tx_us: std::collections::VecDeque<u32>,
    /// Of the fill booking: after the commit (the book read again, the events).
    pub booking_after_us: std::collections::VecDeque<u32>,
}

fn sample(q: &mut std::collections::VecDeque<u32>, d: Duration) {
    if q.len() == LATENCY_SAMPLES {
        q.pop_front();
    }
    q.push_back(d.as_micros().min(u32::MAX as u128) as u32);
}

impl ExecutionStats {
    pub fn record(
        &self,
        pick: fn(&mut Latencies) -> &mut std::collections::VecDeque<u32>,
        d: Duration,
    ) {
        sample(pick(&mut self.latencies.lock().expect("latency lock")), d);
    }
}
