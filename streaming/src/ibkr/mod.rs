//! Interactive Brokers through the Client Portal gateway: the wire format
//! ([`wire`]), the streaming client ([`client`]) and a simulator of the gateway
//! ([`sim`]) for the demo and the tests.

pub mod client;
pub mod wire;

use std::sync::Arc;

pub use client::{run_ibkr, IbkrConfig, IbkrStats};
pub use wire::{IbkrPosition, MdField, MdFields};

/// What the IBKR source hands the processor: the merged market data of one conid,
/// for one position that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct IbkrQuote {
    pub position: Arc<IbkrPosition>,
    /// Every field seen so far for this conid (partial updates already merged).
    pub fields: Arc<MdFields>,
    /// The merged fields of the position's underlying, if we have any yet.
    pub underlying: Option<Arc<MdFields>>,
    /// The venue's `_updated` time, epoch milliseconds.
    pub updated_ms: Option<i64>,
}
