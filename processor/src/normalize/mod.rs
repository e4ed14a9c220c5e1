//! Broker payload → unified records. One module per broker; [`Normalizer`] owns the
//! contract cache they share ([`shared`]).

mod binance;
mod ibkr;
mod shared;
mod synthetic;
mod tastytrade;

use streaming::{BrokerEvent, BrokerPayload};

use model::ModelError;

use shared::ContractCache;
pub use shared::{Normalized, MAX_CACHED_CONTRACTS};

/// Keeps one `Arc<Contract>` per distinct contract so a hot stream does not rebuild
/// (and re-allocate) the same contract key for every event.
#[derive(Debug, Default)]
pub struct Normalizer {
    contracts: ContractCache,
}

impl Normalizer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn normalize(&mut self, event: BrokerEvent) -> Result<Normalized, ModelError> {
        let out = match event.payload {
            BrokerPayload::Synthetic(ref tick) => {
                synthetic::normalize(&mut self.contracts, &event, tick)
            }
            BrokerPayload::Ibkr(ref quote) => ibkr::normalize(&mut self.contracts, &event, quote),
            BrokerPayload::Tastytrade(ref quote) => {
                tastytrade::normalize(&mut self.contracts, &event, quote)
            }
            BrokerPayload::Binance(ref quote) => {
                binance::normalize(&mut self.contracts, &event, quote)
            }
        }?;
        // Every consumer multiplies these (position Greeks, notional): a size that
        // overflows is refused here, once, rather than panicking somewhere later.
        let (quantity, multiplier) = (
            out.snapshot.position.quantity,
            out.snapshot.position.contract.multiplier(),
        );
        if quantity.checked_mul(multiplier).is_none() {
            return Err(ModelError::SizeOverflow {
                quantity,
                multiplier,
            });
        }
        Ok(out)
    }

    pub fn known_contracts(&self) -> usize {
        self.contracts.len()
    }
}
