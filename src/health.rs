//! `GET /health`: 200 when the service is doing its job, 503 with the reasons when
//! it is not. The judgement ([`assess`]) is pure; [`HealthMonitor`] gathers its
//! inputs and exports them as gauges so a dashboard shows the same verdict.
//!
//! Unhealthy when
//! - the writer has failed every attempt to commit for longer than `writer_window`,
//! - the processor or the writer task has stopped,
//! - a configured source has sent no event for longer than its silence window (from
//!   start-up if it never sent one).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use database::writer::WriterHealth;
use engine::EngineStatus;
use processor::pipeline::SourceActivity;
use serde::Serialize;
use serde_json::json;
use streaming::Broker;

use crate::pipeline::PipelineAlive;

pub const HEALTHY: &str = "greekstream_healthy";
pub const HEALTH_CHECK: &str = "greekstream_health_check";

/// What one check found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `writer`, `processor`, or the silent source's broker name.
    pub check: &'static str,
    pub message: String,
}

/// Everything [`assess`] judges by.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub now: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub writer_failing_since: Option<DateTime<Utc>>,
    pub writer_window: Duration,
    pub processor_running: bool,
    pub writer_running: bool,
    /// Each configured source: its last event and its silence window.
    pub sources: Vec<(Broker, Option<DateTime<Utc>>, Duration)>,
    /// The trading engine is still reconciling with the venue after start-up.
    pub engine_recovering: bool,
}

fn seconds_since(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

pub fn assess(i: &Inputs) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(since) = i.writer_failing_since {
        let failing = seconds_since(i.now, since);
        if failing > i.writer_window {
            problems.push(Problem {
                check: "writer",
                message: format!(
                    "the writer cannot commit to PostgreSQL: every attempt for {} s has failed",
                    failing.as_secs()
                ),
            });
        }
    }
    if !i.writer_running {
        problems.push(Problem {
            check: "writer",
            message: "the writer task has stopped".into(),
        });
    }
    if !i.processor_running {
        problems.push(Problem {
            check: "processor",
            message: "the processor task has stopped".into(),
        });
    }
    if i.engine_recovering {
        problems.push(Problem {
            check: "engine",
            message: "the trading engine is RECOVERING: reconciling orders and positions with the venue before it takes commands".into(),
        });
    }
    for &(broker, last, window) in &i.sources {
        let quiet = seconds_since(i.now, last.unwrap_or(i.started));
        if quiet > window {
            let what = if last.is_some() {
                "no data"
            } else {
                "no data since start-up"
            };
            problems.push(Problem {
                check: broker.as_str(),
                message: format!(
                    "{broker}: {what} for {} s (silence window {} s)",
                    quiet.as_secs(),
                    window.as_secs()
                ),
            });
        }
    }
    problems
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("started", &self.started)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// The live inputs of [`assess`].
#[derive(Clone)]
pub struct HealthMonitor {
    started: DateTime<Utc>,
    writer: Arc<WriterHealth>,
    writer_window: Duration,
    activity: Arc<SourceActivity>,
    alive: Arc<PipelineAlive>,
    sources: Vec<(Broker, Duration)>,
    engine: Arc<EngineStatus>,
}

impl HealthMonitor {
    pub fn new(
        writer: Arc<WriterHealth>,
        writer_window: Duration,
        activity: Arc<SourceActivity>,
        alive: Arc<PipelineAlive>,
        sources: Vec<(Broker, Duration)>,
        engine: Arc<EngineStatus>,
    ) -> Self {
        Self {
            started: Utc::now(),
            writer,
            writer_window,
            activity,
            alive,
            sources,
            engine,
        }
    }

    fn inputs(&self) -> Inputs {
        Inputs {
            now: Utc::now(),
            started: self.started,
            writer_failing_since: self.writer.failing_since(),
            writer_window: self.writer_window,
            processor_running: self.alive.processor.load(Ordering::Relaxed),
            writer_running: self.alive.writer.load(Ordering::Relaxed),
            engine_recovering: self.engine.is_recovering(),
            sources: self
                .sources
                .iter()
                .map(|&(b, w)| (b, self.activity.last_event(b), w))
                .collect(),
        }
    }

    /// Judges now, and sets the gauges to the verdict.
    pub fn check(&self) -> Vec<Problem> {
        let problems = assess(&self.inputs());
        let failing = |check: &str| problems.iter().any(|p| p.check == check);
        let checks = ["writer", "processor", "engine"]
            .into_iter()
            .chain(self.sources.iter().map(|(b, _)| b.as_str()));
        for check in checks {
            let ok = if failing(check) { 0.0 } else { 1.0 };
            metrics::gauge!(HEALTH_CHECK, "check" => check).set(ok);
        }
        metrics::gauge!(HEALTHY).set(if problems.is_empty() { 1.0 } else { 0.0 });
        problems
    }

    /// Keeps the gauges current (every second) until the task is dropped.
    pub async fn run_gauges(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            self.check();
        }
    }
}

pub fn router(monitor: HealthMonitor) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(monitor)
}

async fn health(State(monitor): State<HealthMonitor>) -> impl IntoResponse {
    let problems = monitor.check();
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "reasons": problems})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(now: DateTime<Utc>) -> Inputs {
        Inputs {
            now,
            started: now - chrono::Duration::seconds(300),
            writer_failing_since: None,
            writer_window: Duration::from_secs(10),
            processor_running: true,
            writer_running: true,
            sources: vec![(
                Broker::Ibkr,
                Some(now - chrono::Duration::seconds(1)),
                Duration::from_secs(60),
            )],
            engine_recovering: false,
        }
    }

    #[test]
    fn all_well_is_no_problem() {
        assert!(assess(&healthy(Utc::now())).is_empty());
    }

    #[test]
    fn a_recovering_engine_is_unhealthy_until_it_has_reconciled() {
        let mut i = healthy(Utc::now());
        i.engine_recovering = true;
        let p = assess(&i);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].check, "engine");
        assert!(p[0].message.contains("RECOVERING"));
    }

    #[test]
    fn a_writer_failing_past_its_window_is_a_problem_and_within_it_is_not() {
        let now = Utc::now();
        let mut i = healthy(now);
        i.writer_failing_since = Some(now - chrono::Duration::seconds(9));
        assert!(assess(&i).is_empty(), "a blip is not an outage");
        i.writer_failing_since = Some(now - chrono::Duration::seconds(11));
        let p = assess(&i);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].check, "writer");
        assert!(p[0].message.contains("11 s"), "{}", p[0].message);
    }

    #[test]
    fn stopped_tasks_are_problems() {
        let mut i = healthy(Utc::now());
        i.processor_running = false;
        i.writer_running = false;
        let checks: Vec<_> = assess(&i).into_iter().map(|p| p.check).collect();
        assert_eq!(checks, ["writer", "processor"]);
    }

    #[test]
    fn a_silent_source_is_a_problem_counted_from_start_up_if_it_never_spoke() {
        let now = Utc::now();
        let mut i = healthy(now);
        i.sources = vec![
            (
                Broker::Ibkr,
                Some(now - chrono::Duration::seconds(61)),
                Duration::from_secs(60),
            ),
            (Broker::Binance, None, Duration::from_secs(60)),
            (Broker::Tastytrade, None, Duration::from_secs(600)),
        ];
        let p = assess(&i);
        assert_eq!(
            p.iter().map(|p| p.check).collect::<Vec<_>>(),
            ["ibkr", "binance"]
        );
        assert!(p[1].message.contains("since start-up"), "{}", p[1].message);
    }
}
