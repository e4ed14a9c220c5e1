//! What every source hands to the processor.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::binance::BnQuote;
use crate::ibkr::IbkrQuote;
use crate::synthetic::SyntheticTick;
use crate::tastytrade::TtQuote;

pub use model::{Broker, UnknownBroker};

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
