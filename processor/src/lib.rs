//! The processor task that turns broker events into unified records
//! ([`pipeline`]), with normalization per broker ([`normalize`]: nothing else in the
//! service interprets a venue payload), model-Greeks fill-in ([`model_greeks`]) and
//! the position stream's fan-out ([`position_stream`]). The model itself lives in the
//! pure `model` crate, which every user names directly.
//!
//! Must not depend on: `database`, the binary (`streaming` only for `BrokerEvent`).

pub mod model_greeks;
pub mod normalize;
pub mod pipeline;
pub mod position_stream;
pub mod position_view;
