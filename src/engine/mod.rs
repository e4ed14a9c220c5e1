//! The trading engine's IO around the pure `trading` crate: the risk loop
//! ([`risk_loop`]) and the price an order is checked at ([`prices`]). Storage is
//! `database::ledger`; the gateway's Redis is written through `bus::outbox`.

pub mod prices;
pub mod risk_loop;
