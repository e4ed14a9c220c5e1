//! An order a sub-account asks for, and why one is not placed.

use database::ledger::LedgerError;
use database::orders::OrderKind;
use rust_decimal::Decimal;
use trading::position::OrderSide;
use trading::price::PriceError;
use trading::risk::{OrderRequest, Refusal};

use super::journal::JournalError;

/// An order a sub-account asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub sub_account_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub kind: OrderKind,
    pub quantity: Decimal,
    /// The limit price; `None` for a market order.
    pub price: Option<Decimal>,
    pub leverage: Decimal,
    pub reduce_only: bool,
    pub origin: String,
    pub request_id: Option<String>,
    /// The position this order closes (a close or a limit close).
    pub position_id: Option<String>,
    /// What a close's fills are booked as when not its origin's default.
    pub close_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("Sub-account not found")]
    AccountNotFound,
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Price(PriceError),
    #[error("Unknown symbol {0}")]
    UnknownSymbol(String),
    #[error("{0}: the exchange position disagrees with the sub-accounts'; only orders that reduce are taken until it is reconciled")]
    SymbolDesync(String),
    #[error("The clock is {drift_ms} ms off the venue's (limit {limit_ms} ms): only orders that reduce are taken")]
    ClockDrift { drift_ms: i64, limit_ms: i64 },
    #[error("{0}")]
    Storage(LedgerError),
    #[error("{0}")]
    RateLimited(trading::budget::OverBudget),
    /// The order's record could not be made durable: nothing was sent.
    #[error("{0}")]
    Journal(JournalError),
    /// The order was sent but what the venue said could not be stored: it is being
    /// resolved by asking the venue.
    #[error("Order state unknown: the order was sent; its outcome is being resolved ({error})")]
    StateUnknown {
        order_id: String,
        client_order_id: String,
        error: LedgerError,
    },
}

impl PlaceError {
    pub fn code(&self) -> &'static str {
        match self {
            PlaceError::AccountNotFound => "ACCOUNT_NOT_FOUND",
            PlaceError::Refused(r) => r.code(),
            PlaceError::Price(p) => p.code(),
            PlaceError::UnknownSymbol(_) => "INVALID_SYMBOL",
            PlaceError::ClockDrift { .. } => "CLOCK_DRIFT",
            PlaceError::SymbolDesync(_) => "SYMBOL_DESYNC",
            PlaceError::Storage(e) => e.code(),
            PlaceError::RateLimited(_) => "ORDER_RATE_LIMITED",
            PlaceError::Journal(_) => "JOURNAL_UNAVAILABLE",
            PlaceError::StateUnknown { .. } => "ORDER_STATE_UNKNOWN",
        }
    }
}

impl From<LedgerError> for PlaceError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::AccountNotFound(_) => PlaceError::AccountNotFound,
            e => PlaceError::Storage(e),
        }
    }
}

pub fn request_of(symbol: &str, p: &PlaceOrder) -> OrderRequest {
    OrderRequest {
        symbol: symbol.to_owned(),
        side: p.side,
        quantity: p.quantity,
        limit: p.price,
        leverage: p.leverage,
        reduce_only: p.reduce_only,
    }
}
