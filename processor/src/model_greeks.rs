//! Fills in Greeks a venue did not send, from the local pricing model: an option
//! snapshot with no Greeks but with an underlying price and either an implied
//! volatility or a mark price (whose IV is solved) gets model Greeks, labelled
//! `model`. Options on futures use Black-76 on the futures price; every other option
//! BSM with no dividend yield. Expiry is taken as 21:00 UTC on the expiry date (the
//! US equity close in winter; within an hour of it otherwise).

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;

use crate::model::{AssetClass, GreekSnapshot, Greeks, GreeksSource};
use crate::pricing::{self, Inputs, Model};

const YEAR_SECONDS: f64 = 365.0 * 86_400.0;

/// Fills the snapshot's Greeks if it has none and the model has what it needs;
/// returns whether it did.
pub fn fill_missing_greeks(s: &mut GreekSnapshot, rate: f64) -> bool {
    let c = s.position.contract.clone();
    if !c.asset_class.is_option() || !s.unit.is_empty() {
        return false;
    }
    let (Some(expiry), Some(strike), Some(right), Some(spot)) = (
        c.expiry,
        c.strike.and_then(|k| k.to_f64()),
        c.right,
        s.underlying_price,
    ) else {
        return false;
    };
    let close = NaiveTime::from_hms_opt(21, 0, 0).expect("literal");
    let expires: DateTime<Utc> = Utc.from_utc_datetime(&expiry.and_time(close));
    let years =
        ((expires - s.event_time).num_milliseconds() as f64 / 1000.0 / YEAR_SECONDS).max(0.0);
    let mut inputs = Inputs {
        model: if c.asset_class == AssetClass::FutureOption {
            Model::Black76
        } else {
            Model::Bsm
        },
        right,
        spot,
        strike,
        years,
        rate,
        dividend: 0.0,
        vol: 0.0,
    };
    inputs.vol = match (s.implied_vol.filter(|v| *v > 0.0), s.mark_price) {
        (Some(v), _) => v,
        (None, Some(mark)) => match pricing::implied_vol(&inputs, mark) {
            Ok(v) => v,
            Err(_) => return false,
        },
        (None, None) => return false,
    };
    let Ok(v) = pricing::value(&inputs) else {
        return false;
    };
    let (unit, _) = Greeks::from_raw(v.delta, v.gamma, v.theta, v.vega, v.rho);
    s.unit = unit;
    s.total = unit.scaled(s.position.quantity, c.multiplier);
    s.implied_vol = Some(inputs.vol);
    s.greeks_source = Some(GreeksSource::Model);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;
    use rust_decimal::Decimal;
    use streaming::Broker;

    use super::*;
    use crate::model::{Contract, OptionRight, UnifiedPosition};

    fn snapshot(class: AssetClass, iv: Option<f64>, mark: Option<f64>) -> GreekSnapshot {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 21, 0, 0).unwrap();
        let contract = Contract::option(
            "SPY",
            class,
            NaiveDate::from_ymd_opt(2027, 11, 21).unwrap(),
            OptionRight::Call,
            Decimal::from(100),
            Decimal::from(100),
        )
        .unwrap();
        GreekSnapshot {
            event_time: at,
            received_at: at,
            position: UnifiedPosition {
                broker: Broker::Tastytrade,
                account_id: "A".into(),
                contract: Arc::new(contract),
                quantity: Decimal::from(-2),
            },
            mark_price: mark,
            underlying_price: Some(100.0),
            implied_vol: iv,
            unit: Greeks::default(),
            total: Greeks::default(),
            greeks_source: None,
            source_seq: None,
        }
    }

    #[test]
    fn an_option_without_greeks_gets_model_greeks_from_its_iv_or_its_mark() {
        // One year, at the money, r = 0, σ = 20%: delta N(0.1) = 0.5398.
        let mut s = snapshot(AssetClass::Option, Some(0.2), None);
        assert!(fill_missing_greeks(&mut s, 0.0));
        assert_eq!(s.greeks_source, Some(GreeksSource::Model));
        assert!((s.unit.delta.unwrap() - 0.539_827_837).abs() < 1e-6);
        assert!((s.total.delta.unwrap() - -2.0 * 100.0 * 0.539_827_837).abs() < 1e-4);
        assert!(s.unit.rho.is_some());
        // From the mark: the BSM price at 20% solves back to 20%.
        let mut m = snapshot(AssetClass::Option, None, Some(7.965_567_455));
        assert!(fill_missing_greeks(&mut m, 0.0));
        assert!((m.implied_vol.unwrap() - 0.2).abs() < 1e-6);
        // Black-76 for options on futures: with r > 0 its delta is discounted.
        let mut f = snapshot(AssetClass::FutureOption, Some(0.2), None);
        assert!(fill_missing_greeks(&mut f, 0.05));
        assert!((f.unit.delta.unwrap() - 0.539_827_837 * (-0.05f64).exp()).abs() < 1e-6);
    }

    #[test]
    fn venue_greeks_and_incomplete_inputs_are_left_alone() {
        let mut venue = snapshot(AssetClass::Option, Some(0.2), None);
        venue.unit.delta = Some(0.4);
        assert!(!fill_missing_greeks(&mut venue, 0.0));
        assert_eq!(venue.unit.delta, Some(0.4));
        let mut nothing = snapshot(AssetClass::Option, None, None);
        assert!(!fill_missing_greeks(&mut nothing, 0.0));
        assert_eq!(nothing.greeks_source, None);
        // A mark below intrinsic has no IV: no invented Greeks.
        let mut bad = snapshot(AssetClass::Option, None, Some(-1.0));
        assert!(!fill_missing_greeks(&mut bad, 0.0));
    }
}
