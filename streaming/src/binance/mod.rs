//! Binance USDⓈ-M futures: request signing ([`sign`]), wire formats ([`wire`]), the
//! local order book ([`book`]), the signed REST client ([`rest`]), the latest prices
//! per symbol ([`prices`], published to Redis by the binary's bus) and the streaming
//! client ([`client`]). The venue's simulator is in the `simulators` crate.

pub mod book;
pub mod client;
pub mod prices;
pub mod rest;
pub mod sign;
pub mod wire;

use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;

pub use client::{run_binance, BinanceConfig, BinanceStats, OrderFeed};
pub use wire::{MarkPrice, OptionMark};

/// What kind of contract a Binance symbol is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BnKind {
    Perpetual,
    /// A delivery future (`BTCUSDT_261225`), with its delivery date.
    Future(NaiveDate),
    /// A European option (`BTC-261225-100000-C`), Greeks from the options mark data.
    Option,
}

/// One held position, from positionRisk or an ACCOUNT_UPDATE.
#[derive(Debug, Clone, PartialEq)]
pub struct BnPosition {
    /// The account label we were configured with (the API has no account number).
    pub account: Arc<str>,
    pub symbol: String,
    /// BOTH (one-way mode), LONG or SHORT (hedge mode).
    pub position_side: String,
    /// Signed quantity in contracts; 0 means the position was closed.
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub kind: BnKind,
    /// Units of the base asset per contract (1 on USDⓈ-M; the option `unit`).
    pub contract_size: Decimal,
    /// The underlying (`BTCUSDT`) for options; the symbol's pair otherwise.
    pub underlying: String,
}

/// What the Binance source hands the processor: a position with the latest mark.
#[derive(Debug, Clone, PartialEq)]
pub struct BnQuote {
    pub position: Arc<BnPosition>,
    pub mark: Option<Arc<MarkPrice>>,
    /// Options only: mark, IV and Greeks from the options mark-price stream.
    pub option: Option<Arc<OptionMark>>,
}
