//! Redis, the bus between this service and the JS gateway: one link type
//! ([`link`]) that every publisher and consumer connects through, the price cache
//! ([`price_cache`]) and the engine's ordered event and snapshot writer ([`outbox`]).
//! The ingest's position events are published by the binary (`position_events`).

pub mod link;
pub mod outbox;
pub mod price_cache;

pub use link::{InvalidRedisUrl, RedisLink};
