//! The processor task: broker events in, Greek snapshots out. A bad event is
//! counted (by broker and reason) and logged, and the stream goes on.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Histogram};
use streaming::{Broker, BrokerEvent};
use tokio::sync::mpsc;

use crate::model_greeks::{cross_check, fill_missing_greeks, ModelSettings};
use crate::normalize::Normalizer;
use crate::position_stream::PositionHub;
use model::GreekSnapshot;

/// After the first ten, at most one disagreement warning this often: a feed that is
/// wrong throughout must not flood the log.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub const EVENTS_RECEIVED: &str = "greekstream_events_received_total";
pub const EVENTS_REJECTED: &str = "greekstream_events_rejected_total";
pub const VALUES_NON_FINITE: &str = "greekstream_values_non_finite_total";
pub const MODEL_GREEKS: &str = "greekstream_model_greeks_total";
pub const MODEL_CROSS_CHECKS: &str = "greekstream_model_cross_checks_total";
pub const MODEL_DISAGREEMENTS: &str = "greekstream_model_disagreements_total";
pub const MODEL_DELTA_DEVIATION: &str = "greekstream_model_delta_deviation";

/// When each broker's last event reached the processor (Unix milliseconds, 0 for
/// never): what `/health` judges a source's silence by.
#[derive(Debug, Default)]
pub struct SourceActivity {
    last_event_ms: [AtomicI64; Broker::ALL.len()],
}

impl SourceActivity {
    pub fn record(&self, broker: Broker, at: chrono::DateTime<chrono::Utc>) {
        self.last_event_ms[broker as usize].store(at.timestamp_millis(), Ordering::Relaxed);
    }

    pub fn last_event(&self, broker: Broker) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.last_event_ms[broker as usize].load(Ordering::Relaxed) {
            0 => None,
            ms => chrono::DateTime::from_timestamp_millis(ms),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorReport {
    pub received: u64,
    pub forwarded: u64,
    pub rejected: u64,
    /// Snapshots whose Greeks the local model filled in.
    pub model_greeks: u64,
    /// Venue Greeks compared with the model, and how many of those disagreed by more
    /// than the configured delta.
    pub cross_checked: u64,
    pub disagreements: u64,
}

struct BrokerCounters {
    received: Counter,
    non_finite: Counter,
    model_greeks: Counter,
    cross_checks: Counter,
    disagreements: Counter,
    deviation: Histogram,
}

fn counters() -> Vec<BrokerCounters> {
    Broker::ALL
        .iter()
        .map(|b| BrokerCounters {
            received: metrics::counter!(EVENTS_RECEIVED, "broker" => b.as_str()),
            non_finite: metrics::counter!(VALUES_NON_FINITE, "broker" => b.as_str()),
            model_greeks: metrics::counter!(MODEL_GREEKS, "broker" => b.as_str()),
            cross_checks: metrics::counter!(MODEL_CROSS_CHECKS, "broker" => b.as_str()),
            disagreements: metrics::counter!(MODEL_DISAGREEMENTS, "broker" => b.as_str()),
            deviation: metrics::histogram!(MODEL_DELTA_DEVIATION, "broker" => b.as_str()),
        })
        .collect()
}

/// Registers this module's metrics at zero so dashboards and alerts see them before
/// the first event.
pub fn register_metrics() {
    for b in Broker::ALL {
        metrics::counter!(EVENTS_RECEIVED, "broker" => b.as_str()).increment(0);
        metrics::counter!(VALUES_NON_FINITE, "broker" => b.as_str()).increment(0);
        metrics::counter!(MODEL_GREEKS, "broker" => b.as_str()).increment(0);
        metrics::counter!(MODEL_CROSS_CHECKS, "broker" => b.as_str()).increment(0);
        metrics::counter!(MODEL_DISAGREEMENTS, "broker" => b.as_str()).increment(0);
        metrics::counter!(EVENTS_REJECTED, "broker" => b.as_str(), "reason" => "missing_field")
            .increment(0);
    }
}

pub const PANICS: &str = "greekstream_panics_total";

/// Runs `f`, turning a panic into `None`, logged and counted in
/// `greekstream_panics_total{task}` (the panic hook has printed its message).
pub fn contain_panic<T>(task: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            metrics::counter!(PANICS, "task" => task).increment(1);
            tracing::error!(task, panic = %what, "a panic was contained; the work item is dropped and the task goes on");
            None
        }
    }
}

/// One event: normalized, Greeks filled or cross-checked, applied to the book.
/// `None` when it was rejected (counted here).
fn process(
    normalizer: &mut Normalizer,
    c: &BrokerCounters,
    report: &mut ProcessorReport,
    last_warning: &mut Option<std::time::Instant>,
    hub: &PositionHub,
    model: ModelSettings,
    event: BrokerEvent,
) -> Option<GreekSnapshot> {
    let broker = event.broker;
    match normalizer.normalize(event) {
        Ok(mut out) => {
            if fill_missing_greeks(&mut out.snapshot, model.rate) {
                c.model_greeks.increment(1);
                report.model_greeks += 1;
            } else if model.cross_check_delta > 0.0 && broker != Broker::Synthetic {
                // The synthetic source's Greeks are an approximation by design:
                // checking them would measure the load generator.
                if let Some(check) = cross_check(&out.snapshot, model.rate) {
                    report.cross_checked += 1;
                    c.cross_checks.increment(1);
                    c.deviation.record(check.deviation());
                    if check.deviation() > model.cross_check_delta {
                        report.disagreements += 1;
                        c.disagreements.increment(1);
                        let now = std::time::Instant::now();
                        if report.disagreements <= 10
                            || last_warning.is_none_or(|at| now - at >= WARN_EVERY)
                        {
                            *last_warning = Some(now);
                            tracing::warn!(
                                %broker,
                                contract = %out.snapshot.position.contract.key(),
                                venue_delta = check.venue_delta,
                                model_delta = check.model_delta,
                                disagreements = report.disagreements,
                                "venue delta disagrees with the model"
                            );
                        }
                    }
                }
            }
            if out.non_finite > 0 {
                c.non_finite.increment(u64::from(out.non_finite));
            }
            hub.apply(&out.snapshot);
            Some(out.snapshot)
        }
        Err(err) => {
            report.rejected += 1;
            metrics::counter!(EVENTS_REJECTED, "broker" => broker.as_str(), "reason" => err.reason())
                .increment(1);
            // The first few, then one in a thousand: a flood of bad frames must not
            // turn into a flood of log lines.
            if report.rejected <= 10 || report.rejected.is_multiple_of(1000) {
                tracing::warn!(%broker, error = %err, rejected = report.rejected, "event rejected");
            }
            None
        }
    }
}

/// Runs until `rx` is closed and drained; then drops `tx`, which lets the writer
/// finish in turn.
pub async fn run_processor(
    mut rx: mpsc::Receiver<BrokerEvent>,
    tx: mpsc::Sender<GreekSnapshot>,
    hub: PositionHub,
    model: ModelSettings,
    activity: Arc<SourceActivity>,
) -> ProcessorReport {
    let counters = counters();
    let mut normalizer = Normalizer::new();
    let mut report = ProcessorReport::default();
    let mut last_warning: Option<std::time::Instant> = None;
    while let Some(event) = rx.recv().await {
        let broker = event.broker;
        let c = &counters[broker as usize];
        c.received.increment(1);
        activity.record(broker, event.received_at);
        report.received += 1;
        // Venue input must not be able to stop the processor: a panic in handling
        // one event (a bug) costs that event, counted and logged, and nothing else.
        let step = contain_panic("processor", || {
            process(
                &mut normalizer,
                c,
                &mut report,
                &mut last_warning,
                &hub,
                model,
                event,
            )
        });
        let snapshot = match step {
            Some(Some(snapshot)) => snapshot,
            Some(None) => continue,
            None => {
                report.rejected += 1;
                metrics::counter!(EVENTS_REJECTED, "broker" => broker.as_str(), "reason" => "panic")
                    .increment(1);
                continue;
            }
        };
        if tx.send(snapshot).await.is_err() {
            tracing::error!("snapshot channel closed; processor stops");
            break;
        }
        report.forwarded += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_is_none_and_the_caller_goes_on() {
        assert_eq!(contain_panic("test", || 7), Some(7));
        let mut after = 0;
        for i in 0..3 {
            if contain_panic("test", || {
                if i == 1 {
                    panic!("bad input {i}");
                }
                i
            })
            .is_some()
            {
                after += 1;
            }
        }
        assert_eq!(
            after, 2,
            "the items before and after the panic were handled"
        );
    }
    use streaming::synthetic::{run_synthetic, SyntheticConfig};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn bad_events_are_counted_and_the_rest_flow() {
        let (etx, erx) = mpsc::channel(64);
        let (stx, mut srx) = mpsc::channel(64);
        let cfg = SyntheticConfig {
            rate: None,
            limit: Some(2000),
            bad_ratio: 0.2,
            ..SyntheticConfig::default()
        };
        let src = tokio::spawn(run_synthetic(cfg, etx, CancellationToken::new()));
        let activity = Arc::new(SourceActivity::default());
        let proc = tokio::spawn(run_processor(
            erx,
            stx,
            PositionHub::new(16),
            ModelSettings::default(),
            activity.clone(),
        ));
        let mut out = 0u64;
        while let Some(s) = srx.recv().await {
            assert!(!s.contract().key().is_empty());
            out += 1;
        }
        let report = proc.await.unwrap();
        assert_eq!(src.await.unwrap().events_sent, 2000);
        assert_eq!(report.received, 2000);
        assert_eq!(report.forwarded, out);
        assert_eq!(report.received, report.forwarded + report.rejected);
        // about 10% are missing their symbol
        assert!(report.rejected > 100 && report.rejected < 320, "{report:?}");
        assert!(activity.last_event(Broker::Synthetic).is_some());
        assert!(activity.last_event(Broker::Ibkr).is_none());
    }
}
