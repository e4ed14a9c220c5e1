//! PostgreSQL: pool and migrations ([`pool`]), the batch writer ([`writer`]) with
//! its binary COPY encoding ([`copy`]) and dead letters, partition maintenance
//! ([`partitions`]), the trading tables' repository ([`ledger`]), and, behind the `testing` feature for dev-dependencies only,
//! helpers for tests that need a database of their own (`testing`).
//!
//! Must not depend on: the binary, Redis or any venue client (it takes snapshots,
//! whoever produced them).

pub mod commands;
pub mod copy;
pub mod latency;
pub mod ledger;
pub mod orders;
pub mod partitions;
pub mod pool;
pub mod portfolio;
#[cfg(feature = "testing")]
pub mod testing;
mod upsert;
pub mod writer;

pub use pool::{connect_options, lazy_pool, migrate, DbError, SessionLimits, MIGRATOR};
pub use writer::{run_writer, FlushPolicy, WriterConfig, WriterReport};
