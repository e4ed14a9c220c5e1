//! Redis, the bus between this service and the JS gateway: one link type
//! ([`link`]) that every publisher and consumer connects through, the position-event
//! publisher ([`positions`]), the price cache ([`price_cache`]) and the engine's
//! ordered event and snapshot writer ([`outbox`]).

pub mod link;
pub mod outbox;
pub mod positions;
pub mod price_cache;

pub use link::{InvalidRedisUrl, RedisLink};
