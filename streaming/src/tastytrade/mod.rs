//! Tastytrade: REST with OAuth ([`rest`]), DXLink market data from dxFeed
//! ([`dxlink`], [`feed_session`]), the account streamer ([`account_stream`]), option
//! symbols ([`symbols`]), the streaming client ([`client`]) and a simulator of all
//! three endpoints ([`sim`]) for the demo and the tests.

pub mod account_stream;
pub mod client;
pub mod dxlink;
pub mod feed_session;
pub mod rest;
pub mod symbols;

use std::sync::Arc;

pub use client::{run_tastytrade, TastytradeConfig, TastytradeStats};
pub use dxlink::{GreeksEvent, QuoteEvent};
pub use rest::TtPosition;

/// What the Tastytrade source hands the processor: one position with the latest
/// market data of its symbol and of its underlying.
#[derive(Debug, Clone, PartialEq)]
pub struct TtQuote {
    pub position: Arc<TtPosition>,
    /// The latest Greeks event (options only).
    pub greeks: Option<Arc<GreeksEvent>>,
    /// The latest quote of the position's own symbol.
    pub quote: Option<Arc<QuoteEvent>>,
    /// The latest quote of the underlying.
    pub underlying: Option<Arc<QuoteEvent>>,
}
