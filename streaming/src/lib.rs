//! Venue clients: each source parses its venue's wire format into typed
//! [`BrokerEvent`]s and stamps `received_at` the moment a frame arrives; turning those
//! into unified records is the processor's job, not ours. Owns the one reconnecting
//! WebSocket loop ([`ws`]), a source's task group ([`tasks`]), the IBKR, Tastytrade
//! and Binance clients, and (for now, beside them) their venue simulators.
//!
//! Must not depend on: `processor`, `database` or the binary (events flow one way).

pub mod binance;
pub mod broker_metrics;
pub mod event;
pub mod ibkr;
pub mod json;
pub mod retry;
pub mod rng;
pub mod secret;
pub mod synthetic;
pub mod tasks;
pub mod tastytrade;
pub mod ws;

pub use event::{Broker, BrokerEvent, BrokerPayload};
