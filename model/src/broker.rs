//! The venues a position can come from.

use std::fmt;
use std::str::FromStr;

/// A venue we stream from. `Synthetic` is the built-in load generator; its rows are
/// labelled as such so analysts never mistake them for a real book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Broker {
    Ibkr,
    Tastytrade,
    Binance,
    Synthetic,
}

impl Broker {
    pub const ALL: [Broker; 4] = [
        Broker::Ibkr,
        Broker::Tastytrade,
        Broker::Binance,
        Broker::Synthetic,
    ];

    /// The label used in the database and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Broker::Ibkr => "ibkr",
            Broker::Tastytrade => "tastytrade",
            Broker::Binance => "binance",
            Broker::Synthetic => "synthetic",
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown broker {0:?} (expected ibkr, tastytrade, binance or synthetic)")]
pub struct UnknownBroker(pub String);

impl FromStr for Broker {
    type Err = UnknownBroker;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Broker::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownBroker(s.to_owned()))
    }
}
