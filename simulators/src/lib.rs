//! The venues' side: faithful local simulators of the IBKR Client Portal gateway,
//! Tastytrade (OAuth REST, DXLink, account streamer) and Binance USDⓈ-M (REST with
//! signatures and weights, market and user streams, options, algo orders), with what
//! they share ([`kit`]: serving with optional TLS, WebSocket reading, the price walk
//! and option values). Used by `greekstream sim`, the zero-config demo and every
//! loopback test; third-party client libraries run against them unchanged.
//!
//! Must not be depended on by the venue clients (`streaming`) except as a
//! dev-dependency of their tests: production code never links a simulator through
//! the clients.

pub mod binance;
pub mod cli;
pub mod ibkr;
pub mod kit;
pub mod tastytrade;
pub mod testkit;
