//! The processor task that turns broker events into unified records
//! ([`pipeline`]), with normalization per broker ([`normalize`]: nothing else in the
//! service interprets a venue payload), model-Greeks fill-in ([`model_greeks`]) and
//! the position stream's fan-out ([`position_stream`]). The model itself lives in the
//! pure `model` crate; it is re-exported here under its old paths.
//!
//! Must not depend on: `database`, the binary (`streaming` only for `BrokerEvent`).

pub use ::model::contract as model;
pub use ::model::{portfolio, pricing};

pub mod model_greeks;
pub mod normalize;
pub mod pipeline;
pub mod position_stream;

pub use ::model::{
    AssetClass, Broker, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError, OptionRight,
    PositionSide, UnifiedPosition,
};
