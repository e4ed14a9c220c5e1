//! A simulator of Binance USDⓈ-M futures (placeholder until written).
