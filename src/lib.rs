//! greekstream: the composition root and the IO edges. Configuration, start-up and
//! shutdown ([`app`]), the pipeline wiring, supervision, `/health`, the read API,
//! Redis position events, telemetry and the benchmarks. Pure logic belongs in the
//! library crates, not here.

pub mod api;
pub mod app;
pub mod bench;
pub mod config;
pub mod health;
pub mod order_cli;
pub mod pipeline;
pub mod position_events;
pub mod price;
pub mod supervisor;
pub mod telemetry;
pub mod what_if;
