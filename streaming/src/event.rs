//! What every source hands to the processor.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::binance::BnQuote;
use crate::ibkr::IbkrQuote;
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

/// One synthetic venue message: a position with its option's Greeks. Fields that a
/// real venue can omit are `Option`s so the processor's handling of them is exercised.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticTick {
    pub seq: u64,
    pub event_time: DateTime<Utc>,
    pub symbol: Option<Arc<str>>,
    pub expiry: NaiveDate,
    pub right: char,
    pub strike: Decimal,
    pub multiplier: Decimal,
    pub position: Decimal,
    pub greeks: Option<TickGreeks>,
}

/// Per-unit values as the synthetic venue sends them (already in our conventions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickGreeks {
    pub price: f64,
    pub underlying_price: f64,
    pub implied_vol: f64,
    pub delta: f64,
    pub gamma: f64,
    pub theta: f64,
    pub vega: f64,
    pub rho: f64,
}
