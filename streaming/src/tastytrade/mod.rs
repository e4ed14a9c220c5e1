//! Tastytrade: REST (positions), DXLink market data (dxFeed) and option symbols.
//! So far the pure wire parts; the streaming client, the account streamer and the
//! simulator are still to come (issue 4).

pub mod dxlink;
pub mod rest;
pub mod symbols;
