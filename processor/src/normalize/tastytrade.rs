//! Tastytrade → unified records. The position row (REST or account streamer) gives
//! the contract and the signed quantity; DXLink gives Greeks and quotes.
//!
//! Units: dxFeed's `volatility` is a fraction (0.21 = 21%); delta and gamma are per
//! unit of the underlying; theta per calendar day; vega and rho per 1 point (1%) of
//! volatility and rate — our conventions, so they pass through unchanged. The
//! protocol notes mark theta/vega/rho units as not stated by dxFeed's spec; the
//! simulator emits these units and the tests pin them. Stocks and futures carry
//! delta 1 per unit (labelled `model`).

use streaming::tastytrade::dxlink::QuoteEvent;
use streaming::tastytrade::symbols::parse_occ;
use streaming::tastytrade::{TtPosition, TtQuote};
use streaming::BrokerEvent;

use super::shared::{event_time, ContractCache, Normalized};
use model::{
    finite, AccountId, AssetClass, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError,
    OptionRight, PositionSide, UnifiedPosition,
};

/// The unified contract of a position row.
pub fn contract(p: &TtPosition) -> Result<Contract, ModelError> {
    match p.instrument_type.as_str() {
        "Equity Option" => {
            let occ =
                parse_occ(&p.symbol).map_err(|_| ModelError::InvalidSymbol(p.symbol.clone()))?;
            let right = OptionRight::parse(&occ.right.to_string())?;
            Contract::option(
                &p.underlying_symbol,
                AssetClass::Option,
                occ.expiry,
                right,
                occ.strike,
                p.multiplier,
            )
        }
        "Equity" => Contract::stock(&p.symbol),
        "Future" => {
            let expiry = p.expires_at.ok_or(ModelError::MissingField("expires-at"))?;
            let root = p.underlying_symbol.trim_start_matches('/');
            Contract::future(root, expiry, p.multiplier)
        }
        other => Err(ModelError::UnsupportedAssetClass(other.to_owned())),
    }
}

/// Bid/ask mid when both sides are sane; NaN sides count as dropped values.
fn mid(q: &QuoteEvent, dropped: &mut u32) -> Option<f64> {
    let (bid, ask) = (finite(q.bid_price), finite(q.ask_price));
    *dropped += u32::from(bid.is_none()) + u32::from(ask.is_none());
    match (bid, ask) {
        (Some(b), Some(a)) if b > 0.0 && a >= b => Some((a + b) / 2.0),
        _ => None,
    }
}

pub(super) fn normalize(
    contracts: &mut ContractCache,
    event: &BrokerEvent,
    q: &TtQuote,
) -> Result<Normalized, ModelError> {
    let p = &q.position;
    if p.account.trim().is_empty() {
        return Err(ModelError::MissingField("account-number"));
    }
    let contract = contracts.contract(&format!("tastytrade|{}", p.symbol), || contract(p))?;
    let mut dropped = 0;
    let own_mid = q.quote.as_deref().and_then(|x| mid(x, &mut dropped));
    let underlying_mid = q.underlying.as_deref().and_then(|x| mid(x, &mut dropped));
    let (unit, source, implied_vol, mark_price, underlying_price, venue_ms) =
        if contract.asset_class().is_option() {
            match q.greeks.as_deref() {
                Some(g) => {
                    let (unit, n) = Greeks::from_raw(g.delta, g.gamma, g.theta, g.vega, g.rho);
                    dropped += n;
                    let iv = finite(g.volatility);
                    dropped += u32::from(iv.is_none());
                    let source = (!unit.is_empty()).then_some(GreeksSource::Venue);
                    (
                        unit,
                        source,
                        iv,
                        own_mid.or(finite(g.price)),
                        underlying_mid,
                        g.time_ms,
                    )
                }
                // A position change before any Greeks arrived: the row says so.
                None => (Greeks::default(), None, None, own_mid, underlying_mid, 0),
            }
        } else {
            let linear = Greeks::LINEAR;
            let underlying = (contract.asset_class() == AssetClass::Stock)
                .then_some(own_mid)
                .flatten();
            let venue_ms = q.quote.as_deref().map_or(0, |x| x.time_ms);
            (
                linear,
                Some(GreeksSource::Model),
                None,
                own_mid,
                underlying,
                venue_ms,
            )
        };
    Ok(Normalized {
        snapshot: GreekSnapshot {
            event_time: event_time(venue_ms, event.received_at),
            received_at: event.received_at,
            total: unit.scaled(p.quantity, contract.multiplier()),
            position: UnifiedPosition {
                broker: event.broker,
                account_id: AccountId::new(p.account.clone())?,
                contract,
                side: PositionSide::Net,
                quantity: p.quantity,
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

    use chrono::{NaiveDate, TimeZone, Utc};
    use rust_decimal::Decimal;
    use streaming::tastytrade::GreeksEvent;
    use streaming::{Broker, BrokerPayload};

    use super::*;
    use crate::normalize::Normalizer;

    fn position(symbol: &str, kind: &str, qty: i64, mult: i64) -> TtPosition {
        TtPosition {
            account: Arc::from("5WT00001"),
            symbol: symbol.into(),
            instrument_type: kind.into(),
            underlying_symbol: "SPY".into(),
            quantity: Decimal::from(qty),
            multiplier: Decimal::from(mult),
            streamer_symbol: None,
            expires_at: NaiveDate::from_ymd_opt(2026, 12, 18),
        }
    }

    fn greeks(delta: f64, vega: f64) -> Arc<GreeksEvent> {
        Arc::new(GreeksEvent {
            symbol: ".SPY260619C500".into(),
            time_ms: 1_718_900_000_000,
            price: 12.34,
            volatility: 0.2123,
            delta,
            gamma: 0.012,
            theta: -0.08,
            rho: 0.3,
            vega,
        })
    }

    fn quote(bid: f64, ask: f64) -> Arc<QuoteEvent> {
        Arc::new(QuoteEvent {
            symbol: "SPY".into(),
            time_ms: 1_718_900_000_500,
            bid_price: bid,
            ask_price: ask,
            bid_size: 1.0,
            ask_size: 1.0,
        })
    }

    fn event(q: TtQuote) -> BrokerEvent {
        BrokerEvent {
            broker: Broker::Tastytrade,
            account: q.position.account.clone(),
            received_at: Utc.timestamp_millis_opt(1_718_900_001_000).unwrap(),
            payload: BrokerPayload::Tastytrade(q),
        }
    }

    #[test]
    fn a_short_call_scales_by_signed_quantity_and_multiplier() {
        let mut n = Normalizer::new();
        let out = n
            .normalize(event(TtQuote {
                position: Arc::new(position("SPY   260619C00500000", "Equity Option", -2, 100)),
                greeks: Some(greeks(0.55, 0.45)),
                quote: None,
                underlying: Some(quote(589.9, 590.1)),
            }))
            .unwrap();
        let s = out.snapshot;
        assert_eq!(s.position.contract.key().as_str(), "SPY 20260619 C 500");
        assert_eq!(s.position.quantity, Decimal::from(-2));
        assert_eq!(s.unit.delta, Some(0.55));
        assert!((s.total.delta.unwrap() - (-110.0)).abs() < 1e-9);
        assert!((s.total.vega.unwrap() - (-90.0)).abs() < 1e-9);
        assert!((s.total.rho.unwrap() - (-60.0)).abs() < 1e-9);
        assert_eq!(s.implied_vol, Some(0.2123));
        assert_eq!(
            s.mark_price,
            Some(12.34),
            "no option quote: the Greeks price"
        );
        assert_eq!(s.underlying_price, Some(590.0));
        assert_eq!(s.greeks_source, Some(GreeksSource::Venue));
        assert_eq!(s.event_time.timestamp_millis(), 1_718_900_000_000);
        assert_eq!(out.non_finite, 0);
    }

    #[test]
    fn nan_greeks_are_missing_and_counted() {
        let mut n = Normalizer::new();
        let out = n
            .normalize(event(TtQuote {
                position: Arc::new(position("SPY   260619P00500000", "Equity Option", 3, 100)),
                greeks: Some(greeks(f64::NAN, f64::INFINITY)),
                quote: Some(quote(f64::NAN, 9.9)),
                underlying: None,
            }))
            .unwrap();
        let s = out.snapshot;
        assert_eq!(s.unit.delta, None);
        assert_eq!(s.total.delta, None);
        assert_eq!(s.unit.vega, None);
        assert_eq!(s.unit.gamma, Some(0.012));
        assert_eq!(out.non_finite, 3, "delta, vega and the bid");
    }

    #[test]
    fn stocks_futures_and_unsupported_rows() {
        let mut n = Normalizer::new();
        let out = n
            .normalize(event(TtQuote {
                position: Arc::new(position("SPY", "Equity", -50, 1)),
                greeks: None,
                quote: Some(quote(589.9, 590.1)),
                underlying: None,
            }))
            .unwrap();
        assert_eq!(out.snapshot.total.delta, Some(-50.0));
        assert_eq!(out.snapshot.greeks_source, Some(GreeksSource::Model));
        assert_eq!(out.snapshot.underlying_price, Some(590.0));

        let mut fut = position("/ESZ6", "Future", 2, 50);
        fut.underlying_symbol = "/ES".into();
        assert_eq!(contract(&fut).unwrap().key().as_str(), "ES 20261218 FUT");
        fut.expires_at = None;
        assert_eq!(contract(&fut), Err(ModelError::MissingField("expires-at")));
        let crypto = position("BTC/USD", "Cryptocurrency", 1, 1);
        assert_eq!(
            contract(&crypto).unwrap_err().reason(),
            "unsupported_asset_class"
        );
        let bad = position("SPY   2606", "Equity Option", 1, 100);
        assert_eq!(contract(&bad).unwrap_err().reason(), "invalid_symbol");
    }
}
