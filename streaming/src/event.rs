//! What every source hands to the processor.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::binance::BnQuote;
use crate::ibkr::IbkrQuote;
use crate::synthetic::SyntheticTick;
use crate::tastytrade::TtQuote;

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

/// One parsed message from a venue, before normalization.
#[derive(Debug, Clone)]
pub struct BrokerEvent {
    pub broker: Broker,
    pub account: Arc<str>,
    /// When the frame reached us (not the venue's own timestamp, which lives in the payload).
    pub received_at: DateTime<Utc>,
    pub payload: BrokerPayload,
}

#[derive(Debug, Clone)]
pub enum BrokerPayload {
    Synthetic(SyntheticTick),
    Ibkr(IbkrQuote),
    Tastytrade(TtQuote),
    Binance(BnQuote),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_labels_round_trip() {
        for b in Broker::ALL {
            assert_eq!(b.as_str().parse::<Broker>(), Ok(b));
        }
        assert_eq!("IBKR".parse::<Broker>(), Ok(Broker::Ibkr));
        assert!("schwab".parse::<Broker>().is_err());
    }
}
