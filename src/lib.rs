//! greekstream: option Greeks and positions from several brokers, normalized into
//! one stream and persisted into partitioned PostgreSQL.

pub mod api;
pub mod app;
pub mod bench;
pub mod config;
pub mod events;
pub mod health;
pub mod pipeline;
pub mod price;
pub mod supervisor;
pub mod telemetry;
