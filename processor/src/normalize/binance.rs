//! Binance → unified records. The position (positionRisk or ACCOUNT_UPDATE) gives
//! the contract and the signed amount; the mark-price streams give prices.
//!
//! A perpetual or delivery future is linear: delta = signed quantity × contract
//! size, no other Greeks (labelled `model`). An option takes delta, gamma, theta and
//! vega from the options mark-price stream (labelled `venue`). Its units, checked
//! against Black-Scholes on the documented example (BTC-251120-126000-C: d 0.111,
//! g 1.245e-5, t −164.3, v 30.6 at index 104 335, IV 0.94, 9 days): delta and gamma
//! per unit of the underlying, theta per calendar day, vega per 1 volatility point —
//! our conventions, so they pass through. Binance sends no rho.

use chrono::NaiveDate;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use streaming::binance::{BnKind, BnPosition, BnQuote};
use streaming::BrokerEvent;

use super::shared::{event_time, ContractCache, Normalized};
use model::{
    AccountId, AssetClass, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError, OptionRight,
    PositionSide, UnifiedPosition,
};

/// `BTC-261225-100000-C` → (expiry, strike, right).
fn parse_option(symbol: &str) -> Result<(NaiveDate, Decimal, OptionRight), ModelError> {
    let bad = || ModelError::InvalidSymbol(symbol.to_owned());
    let mut parts = symbol.split('-');
    let (_, date, strike, right) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(b), Some(d), Some(k), Some(r)) if parts.next().is_none() => (b, d, k, r),
        _ => return Err(bad()),
    };
    let expiry = NaiveDate::parse_from_str(date, "%y%m%d")
        .map_err(|_| ModelError::InvalidExpiry(date.into()))?;
    let strike: Decimal = strike.parse().map_err(|_| bad())?;
    Ok((expiry, strike, OptionRight::parse(right)?))
}

/// The unified contract of a position.
pub fn contract(p: &BnPosition) -> Result<Contract, ModelError> {
    match p.kind {
        BnKind::Perpetual => Contract::perpetual(&p.symbol, p.contract_size),
        BnKind::Future(expiry) => Contract::future(&p.underlying, expiry, p.contract_size),
        BnKind::Option => {
            let (expiry, strike, right) = parse_option(&p.symbol)?;
            Contract::option(
                &p.underlying,
                AssetClass::Option,
                expiry,
                right,
                strike,
                p.contract_size,
            )
        }
    }
}

fn f(d: Decimal) -> Option<f64> {
    d.to_f64().filter(|x| x.is_finite())
}

pub(super) fn normalize(
    contracts: &mut ContractCache,
    event: &BrokerEvent,
    q: &BnQuote,
) -> Result<Normalized, ModelError> {
    let p = &q.position;
    if p.account.trim().is_empty() {
        return Err(ModelError::MissingField("account"));
    }
    let contract = contracts.contract(&format!("binance|{}", p.symbol), || contract(p))?;
    let mut dropped = 0;
    let (unit, source, implied_vol, mark_price, underlying_price, venue_ms) =
        if contract.asset_class().is_option() {
            match q.option.as_deref() {
                Some(m) => {
                    let nan = f64::NAN;
                    let (unit, n) = Greeks::from_raw(
                        m.delta.unwrap_or(nan),
                        m.gamma.unwrap_or(nan),
                        m.theta.unwrap_or(nan),
                        m.vega.unwrap_or(nan),
                        0.0,
                    );
                    dropped += n;
                    // Binance publishes no rho: unknown, not zero.
                    let unit = Greeks { rho: None, ..unit };
                    let iv = m.mark_iv.filter(|v| v.is_finite() && *v >= 0.0);
                    dropped += u32::from(m.mark_iv.is_some() && iv.is_none());
                    let source = (!unit.is_empty()).then_some(GreeksSource::Venue);
                    (
                        unit,
                        source,
                        iv,
                        f(m.mark),
                        m.index.and_then(f),
                        m.event_time,
                    )
                }
                None => (Greeks::default(), None, None, None, None, 0),
            }
        } else {
            let mark = q.mark.as_deref();
            (
                Greeks::LINEAR,
                Some(GreeksSource::Model),
                None,
                mark.and_then(|m| f(m.mark)),
                mark.and_then(|m| m.index.and_then(f).or_else(|| f(m.mark))),
                mark.map_or(0, |m| m.event_time),
            )
        };
    Ok(Normalized {
        snapshot: GreekSnapshot {
            event_time: event_time(venue_ms, event.received_at),
            received_at: event.received_at,
            total: unit.scaled(p.amount, contract.multiplier()),
            position: UnifiedPosition {
                broker: event.broker,
                account_id: AccountId::new(p.account.clone())?,
                contract,
                side: PositionSide::from_binance(&p.position_side)?,
                quantity: p.amount,
            },
            mark_price,
            underlying_price,
            implied_vol,
            unit,
            greeks_source: source,
            source_seq: None,
        },
        non_finite: dropped,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};
    use streaming::binance::{MarkPrice, OptionMark};
    use streaming::{Broker, BrokerPayload};

    use super::*;
    use crate::normalize::Normalizer;

    fn position(symbol: &str, kind: BnKind, amount: &str) -> Arc<BnPosition> {
        Arc::new(BnPosition {
            account: "main".into(),
            symbol: symbol.into(),
            position_side: "BOTH".into(),
            amount: amount.parse().unwrap(),
            entry_price: Decimal::from(60_000),
            kind,
            contract_size: Decimal::ONE,
            underlying: "BTCUSDT".into(),
        })
    }

    fn event(q: BnQuote) -> BrokerEvent {
        BrokerEvent {
            broker: Broker::Binance,
            account: q.position.account.clone(),
            received_at: Utc.timestamp_millis_opt(1_762_867_544_000).unwrap(),
            payload: BrokerPayload::Binance(q),
        }
    }

    #[test]
    fn a_short_perpetual_has_delta_equal_to_its_signed_amount() {
        let mark = Arc::new(MarkPrice {
            symbol: "BTCUSDT".into(),
            event_time: 1_762_867_543_000,
            mark: "61000.5".parse().unwrap(),
            index: Some("60990.1".parse().unwrap()),
            funding_rate: None,
            next_funding_time: None,
        });
        let out = Normalizer::new()
            .normalize(event(BnQuote {
                position: position("BTCUSDT", BnKind::Perpetual, "-0.25"),
                mark: Some(mark),
                option: None,
            }))
            .unwrap()
            .snapshot;
        assert_eq!(out.contract().key().as_str(), "BTCUSDT PERP");
        assert_eq!(out.total.delta, Some(-0.25));
        assert_eq!(out.total.gamma, Some(0.0));
        assert_eq!(out.mark_price, Some(61000.5));
        assert_eq!(out.underlying_price, Some(60990.1));
        assert_eq!(out.greeks_source, Some(GreeksSource::Model));
        assert_eq!(out.event_time.timestamp_millis(), 1_762_867_543_000);
    }

    #[test]
    fn a_delivery_future_keys_by_pair_and_date() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 25).unwrap();
        let out = Normalizer::new()
            .normalize(event(BnQuote {
                position: position("BTCUSDT_261225", BnKind::Future(d), "3"),
                mark: None,
                option: None,
            }))
            .unwrap()
            .snapshot;
        assert_eq!(out.contract().key().as_str(), "BTCUSDT 20261225 FUT");
        assert_eq!(out.total.delta, Some(3.0));
        assert_eq!(out.mark_price, None);
    }

    #[test]
    fn an_option_takes_venue_greeks_and_has_no_rho() {
        let m = Arc::new(OptionMark {
            symbol: "BTC-251120-126000-C".into(),
            event_time: 1_762_867_543_321,
            mark: "770.543".parse().unwrap(),
            index: Some("104334.60217391".parse().unwrap()),
            mark_iv: Some(0.9408058),
            delta: Some(0.11111964),
            gamma: Some(0.00001245),
            theta: Some(-164.26702615),
            vega: Some(f64::NAN),
        });
        let out = Normalizer::new()
            .normalize(event(BnQuote {
                position: position("BTC-251120-126000-C", BnKind::Option, "-2"),
                mark: None,
                option: Some(m),
            }))
            .unwrap();
        assert_eq!(out.non_finite, 1);
        let s = out.snapshot;
        assert_eq!(s.contract().key().as_str(), "BTCUSDT 20251120 C 126000");
        assert_eq!(s.total.delta, Some(-0.22223928));
        assert!((s.total.theta.unwrap() - 328.5340523).abs() < 1e-6);
        assert_eq!(s.unit.vega, None);
        assert_eq!(s.unit.rho, None);
        assert_eq!(s.implied_vol, Some(0.9408058));
        assert_eq!(s.greeks_source, Some(GreeksSource::Venue));
    }

    #[test]
    fn an_account_id_the_database_could_not_hold_is_refused_here() {
        let mut p = (*position("BTCUSDT", BnKind::Perpetual, "1")).clone();
        p.account = Arc::from("bin\u{0}ance");
        let p = Arc::new(p);
        let err = Normalizer::new()
            .normalize(event(BnQuote {
                position: p,
                mark: None,
                option: None,
            }))
            .unwrap_err();
        assert_eq!(err.reason(), "invalid_account");
    }

    #[test]
    fn bad_option_symbols_are_rejected() {
        for sym in [
            "BTC-2512-1-C",
            "BTC-251120-x-C",
            "BTC-251120-100-X",
            "BTC-251120-100",
        ] {
            let err = Normalizer::new()
                .normalize(event(BnQuote {
                    position: position(sym, BnKind::Option, "1"),
                    mark: None,
                    option: None,
                }))
                .unwrap_err();
            assert!(
                matches!(
                    err.reason(),
                    "invalid_symbol" | "invalid_expiry" | "invalid_right"
                ),
                "{sym}: {err}"
            );
        }
    }
}
