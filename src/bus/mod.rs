//! Redis, the bus between this service and the JS gateway: one link type
//! ([`link`]) that every publisher and consumer connects through, the position-event
//! publisher ([`positions`]) and the price cache ([`price_cache`]).

pub mod link;
pub mod positions;
pub mod price_cache;

pub use link::{InvalidRedisUrl, RedisLink};
