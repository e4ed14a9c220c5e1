//! The unified model, pure: brokers, contracts and their keys, Greeks and their
//! conventions, snapshots and unified positions ([`contract`]), the portfolio book and
//! its aggregates ([`portfolio`]), Binance's exchange formulas ([`exchange`]: brackets,
//! liquidation price), and the pricing model ([`pricing`]: BSM,
//! Black-76, implied volatility).
//!
//! Must not depend on: tokio, any network, WebSocket, HTTP or database crate, or any
//! other crate of this workspace. `scripts/check_deps.sh` (run by the test command)
//! enforces it. Every other crate (`streaming`, `processor`, `database`, the coming
//! `trading`) depends on this one.

pub mod broker;
pub mod contract;
pub mod exchange;
pub mod ids;
pub mod portfolio;
pub mod pricing;

pub use broker::{Broker, UnknownBroker};
pub use contract::{
    finite, AssetClass, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError, OptionRight,
    PositionSide, UnifiedPosition,
};
pub use ids::{AccountId, ContractKey};
