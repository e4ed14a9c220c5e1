//! Broker connections. Each source parses its venue's wire format into typed
//! [`BrokerEvent`]s and stamps `received_at` the moment a frame arrives; turning
//! those into unified records is the processor's job, not ours.

pub mod binance;
pub mod broker_metrics;
pub mod event;
pub mod ibkr;
pub mod json;
pub mod rng;
pub mod secret;
pub mod simkit;
pub mod synthetic;
pub mod tasks;
pub mod tastytrade;
pub mod ws;

pub use event::{Broker, BrokerEvent, BrokerPayload};
