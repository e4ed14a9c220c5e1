//! The trading core, pure: what a fill does to a sub-account's virtual position
//! ([`position`]: open, add, reduce, close, flip), balances changed only through logged
//! deltas floored at zero ([`balance`]), an account's margin numbers ([`account`]) and
//! its valuation at the marks ([`evaluate`]) and what is done past its threshold
//! ([`liquidation`]), pre-trade checks ([`risk`]), which price
//! is fresh enough to use ([`price`]), and the risk loop's throttles and warnings
//! ([`monitor`]), and the gateway's commands parsed and validated ([`command`]).
//! Many sub-accounts share one exchange account; each has its own book here, and the
//! exchange sees only their net.
//!
//! Must not depend on: tokio, any network, HTTP or database crate, or any crate of this
//! workspace but `model`. Execution drives it with real fills; storage and the risk
//! loop sit at the edges.

pub mod account;
pub mod balance;
pub mod budget;
pub mod close;
pub mod command;
pub mod evaluate;
mod input;
pub mod liquidation;
pub mod monitor;
pub mod order;
pub mod position;
pub mod price;
pub mod risk;
pub mod risk_value;
pub mod what_if;

pub use input::InputError;
