//! The synthetic venue already speaks our conventions; only validation and shape
//! change here.

use std::fmt::Write as _;

use streaming::synthetic::SyntheticTick;
use streaming::BrokerEvent;

use super::shared::{ContractCache, Normalized};
use model::{
    finite, AccountId, AssetClass, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError,
    OptionRight, PositionSide, UnifiedPosition,
};

pub(super) fn normalize(
    contracts: &mut ContractCache,
    event: &BrokerEvent,
    tick: &SyntheticTick,
) -> Result<Normalized, ModelError> {
    if event.account.trim().is_empty() {
        return Err(ModelError::MissingField("account"));
    }
    let symbol = tick
        .symbol
        .as_deref()
        .ok_or(ModelError::MissingField("symbol"))?;
    let right = match tick.right {
        'C' => OptionRight::Call,
        'P' => OptionRight::Put,
        other => return Err(ModelError::InvalidRight(other.to_string())),
    };
    let mut cache_key = String::with_capacity(40);
    let _ = write!(
        cache_key,
        "{symbol}|{}|{}|{}|{}",
        tick.expiry, tick.right, tick.strike, tick.multiplier
    );
    let contract = contracts.contract(&cache_key, || {
        Contract::option(
            symbol,
            AssetClass::Option,
            tick.expiry,
            right,
            tick.strike,
            tick.multiplier,
        )
    })?;
    let (unit, non_finite, prices) = match &tick.greeks {
        Some(g) => {
            let (unit, dropped) = Greeks::from_raw(g.delta, g.gamma, g.theta, g.vega, g.rho);
            let prices = [g.price, g.underlying_price, g.implied_vol];
            let dropped_prices = prices.iter().filter(|x| !x.is_finite()).count() as u32;
            (unit, dropped + dropped_prices, prices.map(finite))
        }
        None => (Greeks::default(), 0, [None; 3]),
    };
    let total = unit.scaled(tick.position, contract.multiplier());
    Ok(Normalized {
        snapshot: GreekSnapshot {
            event_time: tick.event_time,
            received_at: event.received_at,
            position: UnifiedPosition {
                broker: event.broker,
                account_id: AccountId::new(event.account.clone())?,
                contract,
                side: PositionSide::Net,
                quantity: tick.position,
            },
            mark_price: prices[0],
            underlying_price: prices[1],
            implied_vol: prices[2],
            greeks_source: (!unit.is_empty()).then_some(GreeksSource::Venue),
            unit,
            total,
            source_seq: i64::try_from(tick.seq).ok(),
        },
        non_finite,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{NaiveDate, Utc};
    use rust_decimal::Decimal;
    use streaming::synthetic::TickGreeks;
    use streaming::{Broker, BrokerPayload};

    use super::*;
    use crate::normalize::Normalizer;

    fn tick() -> SyntheticTick {
        SyntheticTick {
            seq: 7,
            event_time: Utc::now(),
            symbol: Some(Arc::from("SPY")),
            expiry: NaiveDate::from_ymd_opt(2026, 12, 18).unwrap(),
            right: 'P',
            strike: Decimal::new(5900, 1),
            multiplier: Decimal::ONE_HUNDRED,
            position: Decimal::from(-2),
            greeks: Some(TickGreeks {
                price: 12.5,
                underlying_price: 591.0,
                implied_vol: 0.21,
                delta: -0.45,
                gamma: 0.01,
                theta: -0.2,
                vega: 0.5,
                rho: -0.1,
            }),
        }
    }

    fn event(t: SyntheticTick) -> BrokerEvent {
        BrokerEvent {
            broker: Broker::Synthetic,
            account: Arc::from("SIM00001"),
            received_at: Utc::now(),
            payload: BrokerPayload::Synthetic(t),
        }
    }

    #[test]
    fn maps_contract_signs_and_units() {
        let mut n = Normalizer::new();
        let out = n.normalize(event(tick())).unwrap();
        let s = out.snapshot;
        assert_eq!(out.non_finite, 0);
        assert_eq!(s.contract().key().as_str(), "SPY 20261218 P 590");
        assert_eq!(s.position.quantity, Decimal::from(-2));
        assert_eq!(s.unit.delta, Some(-0.45));
        // short 2 puts × 100: delta −0.45 per unit → +90 position delta
        assert!((s.total.delta.unwrap() - 90.0).abs() < 1e-9);
        assert!((s.total.theta.unwrap() - 40.0).abs() < 1e-9);
        assert_eq!(s.greeks_source, Some(GreeksSource::Venue));
        assert_eq!(s.source_seq, Some(7));
    }

    #[test]
    fn contracts_are_cached() {
        let mut n = Normalizer::new();
        let a = n.normalize(event(tick())).unwrap().snapshot;
        let b = n.normalize(event(tick())).unwrap().snapshot;
        assert!(Arc::ptr_eq(&a.position.contract, &b.position.contract));
        assert_eq!(n.known_contracts(), 1);
    }

    #[test]
    fn nan_values_are_missing_and_counted() {
        let mut t = tick();
        if let Some(g) = t.greeks.as_mut() {
            g.delta = f64::NAN;
            g.implied_vol = f64::INFINITY;
        }
        let out = Normalizer::new().normalize(event(t)).unwrap();
        assert_eq!(out.non_finite, 2);
        assert_eq!(out.snapshot.unit.delta, None);
        assert_eq!(out.snapshot.total.delta, None);
        assert_eq!(out.snapshot.implied_vol, None);
        assert_eq!(out.snapshot.unit.gamma, Some(0.01));
    }

    #[test]
    fn no_greeks_means_no_source() {
        let mut t = tick();
        t.greeks = None;
        let s = Normalizer::new().normalize(event(t)).unwrap().snapshot;
        assert_eq!(s.greeks_source, None);
        assert!(s.total.is_empty());
    }

    #[test]
    fn missing_symbol_and_account_are_rejected() {
        let mut t = tick();
        t.symbol = None;
        let e = Normalizer::new().normalize(event(t)).unwrap_err();
        assert_eq!(e, ModelError::MissingField("symbol"));
        let mut ev = event(tick());
        ev.account = Arc::from(" ");
        assert_eq!(
            Normalizer::new().normalize(ev).unwrap_err(),
            ModelError::MissingField("account")
        );
        let mut t = tick();
        t.right = 'X';
        assert!(Normalizer::new().normalize(event(t)).is_err());
    }
}
