//! Wires sources → processor → writer with bounded channels. Closing the event
//! channel (every source gone) drains the pipeline in order: the processor finishes,
//! then the writer writes what is left.

use std::time::Duration;

use database::{run_writer, WriterConfig, WriterReport};
use processor::model_greeks::ModelSettings;
use processor::pipeline::{run_processor, ProcessorReport};
use processor::position_stream::PositionHub;
use sqlx::PgPool;
use streaming::BrokerEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::telemetry::CHANNEL_DEPTH;

pub struct Pipeline {
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
    ) -> Self {
        let (events, events_rx) = mpsc::channel(channel_capacity);
        let (snapshots, snapshots_rx) = mpsc::channel(channel_capacity);
        let sampler = tokio::spawn(sample_depths(events.downgrade(), snapshots.downgrade()));
        let processor = tokio::spawn(run_processor(events_rx, snapshots, hub, model));
        let writer = tokio::spawn(run_writer(pool, writer, snapshots_rx));
        Self {
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
    snapshots: mpsc::WeakSender<processor::GreekSnapshot>,
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
