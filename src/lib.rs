//! greekstream: option Greeks and positions from several brokers, normalized into
//! one stream and persisted into partitioned PostgreSQL.

pub mod app;
pub mod bench;
pub mod config;
pub mod pipeline;
pub mod supervisor;
pub mod telemetry;
