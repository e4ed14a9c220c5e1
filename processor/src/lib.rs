//! The unified model ([`model`], pure) and the processor task that turns broker
//! events into unified records ([`pipeline`]). Normalization per broker lives in
//! [`normalize`]; nothing else in the service interprets a venue payload. Also the
//! pure pricing model ([`pricing`]) and portfolio book ([`portfolio`]).
//!
//! Must not depend on: `database`, the binary, or any network or database crate
//! (`streaming` only for `BrokerEvent` and `Broker`).

pub mod model;
pub mod model_greeks;
pub mod normalize;
pub mod pipeline;
pub mod portfolio;
pub mod position_stream;
pub mod pricing;

pub use model::{
    AssetClass, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError, OptionRight,
    PositionSide, UnifiedPosition,
};
pub use streaming::Broker;
