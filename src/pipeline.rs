//! Wires sources → processor → writer with bounded channels. Closing the event
//! channel (every source gone) drains the pipeline in order: the processor finishes,
//! then the writer writes what is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use database::{run_writer, WriterConfig, WriterReport};
use processor::model_greeks::ModelSettings;
use processor::pipeline::{run_processor, ProcessorReport, SourceActivity};
use processor::position_stream::PositionHub;
use sqlx::PgPool;
use streaming::BrokerEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Messages waiting in a pipeline channel, by channel.
pub const CHANNEL_DEPTH: &str = "greekstream_channel_depth";

/// Whether the processor and the writer tasks are still running (false once one
/// has ended, by returning or by a panic), for `/health`.
#[derive(Debug)]
pub struct PipelineAlive {
    pub processor: AtomicBool,
    pub writer: AtomicBool,
}

impl Default for PipelineAlive {
    /// Not started yet counts as running: start-up has its own checks.
    fn default() -> Self {
        Self {
            processor: AtomicBool::new(true),
            writer: AtomicBool::new(true),
        }
    }
}

/// Sets its flag to false when the task holding it ends, however it ends.
struct AliveGuard(Arc<PipelineAlive>, fn(&PipelineAlive) -> &AtomicBool);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        (self.1)(&self.0).store(false, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("alive", &self.alive)
            .finish_non_exhaustive()
    }
}

pub struct Pipeline {
    pub alive: Arc<PipelineAlive>,
    pub activity: Arc<SourceActivity>,
    events: mpsc::Sender<BrokerEvent>,
    processor: JoinHandle<ProcessorReport>,
    writer: JoinHandle<WriterReport>,
    sampler: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
pub struct PipelineReport {
    pub processor: ProcessorReport,
    pub writer: WriterReport,
}

impl Pipeline {
    pub fn start(
        pool: PgPool,
        channel_capacity: usize,
        writer: WriterConfig,
        hub: PositionHub,
        model: ModelSettings,
        activity: Arc<SourceActivity>,
        alive: Arc<PipelineAlive>,
    ) -> Self {
        let (events, events_rx) = mpsc::channel(channel_capacity);
        let (snapshots, snapshots_rx) = mpsc::channel(channel_capacity);
        let sampler = tokio::spawn(sample_depths(events.downgrade(), snapshots.downgrade()));
        let guard = AliveGuard(alive.clone(), |a| &a.processor);
        let processor = tokio::spawn({
            let activity = activity.clone();
            async move {
                let _guard = guard;
                run_processor(events_rx, snapshots, hub, model, activity).await
            }
        });
        let guard = AliveGuard(alive.clone(), |a| &a.writer);
        let writer = tokio::spawn(async move {
            let _guard = guard;
            run_writer(pool, writer, snapshots_rx).await
        });
        Self {
            alive,
            activity,
            events,
            processor,
            writer,
            sampler,
        }
    }

    /// Where sources send their events.
    pub fn sender(&self) -> mpsc::Sender<BrokerEvent> {
        self.events.clone()
    }

    /// Waits until every sender is gone and everything is written.
    pub async fn finish(self) -> PipelineReport {
        drop(self.events);
        let processor = self.processor.await.expect("processor task");
        let writer = self.writer.await.expect("writer task");
        self.sampler.abort();
        PipelineReport { processor, writer }
    }
}

/// Channel depths as gauges. Holds weak senders so it never keeps the pipeline open.
async fn sample_depths(
    events: mpsc::WeakSender<BrokerEvent>,
    snapshots: mpsc::WeakSender<model::GreekSnapshot>,
) {
    let events_gauge = metrics::gauge!(CHANNEL_DEPTH, "channel" => "events");
    let snapshots_gauge = metrics::gauge!(CHANNEL_DEPTH, "channel" => "snapshots");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Some(tx) = events.upgrade() {
            events_gauge.set((tx.max_capacity() - tx.capacity()) as f64);
        }
        if let Some(tx) = snapshots.upgrade() {
            snapshots_gauge.set((tx.max_capacity() - tx.capacity()) as f64);
        }
    }
}
