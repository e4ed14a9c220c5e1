//! The local pricing model applied to the stream. An option snapshot with no Greeks
//! but with an underlying price and either an implied volatility or a mark price
//! (whose IV is solved) gets model Greeks, labelled `model`. One that came with the
//! venue's Greeks is cross-checked: the model's delta at the venue's own IV, compared
//! with the venue's. Options on futures use Black-76 on the futures price; every other
//! option BSM with no dividend yield. Expiry is 08:00 UTC on the expiry date for
//! Binance options (their settlement) and 21:00 UTC for the rest (the US equity close
//! in winter; within an hour of it otherwise).

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;
use streaming::Broker;

use model::pricing::{self, Inputs, Model, Valuation};
use model::{AssetClass, GreekSnapshot, Greeks, GreeksSource};

const YEAR_SECONDS: f64 = 365.0 * 86_400.0;

/// How the processor uses the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSettings {
    /// Risk-free rate, as a fraction.
    pub rate: f64,
    /// A venue delta further than this from the model's counts as a disagreement;
    /// 0 turns the cross-check off.
    pub cross_check_delta: f64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            rate: 0.04,
            cross_check_delta: 0.1,
        }
    }
}

/// The model's inputs and value for an option snapshot, if it has what they need.
/// The vol is the snapshot's IV, or else the one solved from its mark.
fn model_value(s: &GreekSnapshot, rate: f64) -> Option<(Inputs, Valuation)> {
    let c = &s.position.contract;
    if !c.asset_class().is_option() {
        return None;
    }
    let expiry = c.expiry()?;
    let strike = c.strike().and_then(|k| k.to_f64())?;
    let right = c.right()?;
    let spot = s.underlying_price?;
    let hour = match s.position.broker {
        Broker::Binance => 8,
        Broker::Ibkr | Broker::Tastytrade | Broker::Synthetic => 21,
    };
    let close = NaiveTime::from_hms_opt(hour, 0, 0).expect("literal");
    let expires: DateTime<Utc> = Utc.from_utc_datetime(&expiry.and_time(close));
    let years =
        ((expires - s.event_time).num_milliseconds() as f64 / 1000.0 / YEAR_SECONDS).max(0.0);
    let mut inputs = Inputs {
        model: if c.asset_class() == AssetClass::FutureOption {
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
        (None, Some(mark)) => pricing::implied_vol(&inputs, mark).ok()?,
        (None, None) => return None,
    };
    let v = pricing::value(&inputs).ok()?;
    Some((inputs, v))
}

/// Fills the snapshot's Greeks if it has none and the model has what it needs;
/// returns whether it did.
pub fn fill_missing_greeks(s: &mut GreekSnapshot, rate: f64) -> bool {
    if !s.unit.is_empty() {
        return false;
    }
    let Some((inputs, v)) = model_value(s, rate) else {
        return false;
    };
    let (unit, _) = Greeks::from_raw(v.delta, v.gamma, v.theta, v.vega, v.rho);
    s.unit = unit;
    s.total = unit.scaled(s.position.quantity, s.position.contract.multiplier());
    s.implied_vol = Some(inputs.vol);
    s.greeks_source = Some(GreeksSource::Model);
    true
}

/// The venue's delta against the model's at the venue's IV (or its mark's), for an
/// option that came with venue Greeks. Only the venue's delta is compared: it is the
/// Greek every venue sends and the one risk leans on most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossCheck {
    pub venue_delta: f64,
    pub model_delta: f64,
}

impl CrossCheck {
    pub fn deviation(&self) -> f64 {
        (self.venue_delta - self.model_delta).abs()
    }
}

pub fn cross_check(s: &GreekSnapshot, rate: f64) -> Option<CrossCheck> {
    if s.greeks_source != Some(GreeksSource::Venue) {
        return None;
    }
    let venue_delta = s.unit.delta?;
    let (_, v) = model_value(s, rate)?;
    Some(CrossCheck {
        venue_delta,
        model_delta: v.delta,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;
    use rust_decimal::Decimal;
    use streaming::Broker;

    use super::*;
    use model::{Contract, OptionRight, UnifiedPosition};

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
                account_id: model::AccountId::new("A").unwrap(),
                contract: Arc::new(contract),
                side: model::PositionSide::Net,
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

    #[test]
    fn binance_options_expire_at_eight_utc_the_rest_at_the_us_close() {
        // Nine o'clock UTC on the expiry day: the Binance call is settled (delta 1 in
        // the money), the US-listed one still has twelve hours to go.
        let expiry_day = Utc.with_ymd_and_hms(2027, 11, 21, 9, 0, 0).unwrap();
        let mut us = snapshot(AssetClass::Option, Some(0.2), None);
        us.event_time = expiry_day;
        us.underlying_price = Some(100.5);
        let mut bn = us.clone();
        bn.position.broker = Broker::Binance;
        assert!(fill_missing_greeks(&mut us, 0.0) && fill_missing_greeks(&mut bn, 0.0));
        assert_eq!(bn.unit.delta, Some(1.0));
        let d = us.unit.delta.unwrap();
        assert!(d > 0.6 && d < 0.99, "{d}");
    }

    #[test]
    fn venue_greeks_are_cross_checked_against_the_model_at_the_venues_iv() {
        // Agreeing: the venue's delta is the model's (N(0.1) at 20%, r = 0).
        let mut s = snapshot(AssetClass::Option, Some(0.2), None);
        s.unit.delta = Some(0.539_827_837);
        s.greeks_source = Some(GreeksSource::Venue);
        let c = cross_check(&s, 0.0).unwrap();
        assert!(c.deviation() < 1e-6, "{c:?}");
        // A put's delta sent for a call (a sign slip): far off.
        s.unit.delta = Some(-0.46);
        let c = cross_check(&s, 0.0).unwrap();
        assert!((c.deviation() - 0.999_827_837).abs() < 1e-6, "{c:?}");
        // Nothing to compare: model Greeks, no IV or mark, no venue delta.
        let mut filled = snapshot(AssetClass::Option, Some(0.2), None);
        assert!(fill_missing_greeks(&mut filled, 0.0));
        assert_eq!(cross_check(&filled, 0.0), None);
        let mut blind = snapshot(AssetClass::Option, None, None);
        blind.unit.delta = Some(0.5);
        blind.greeks_source = Some(GreeksSource::Venue);
        assert_eq!(cross_check(&blind, 0.0), None);
        let mut no_delta = snapshot(AssetClass::Option, Some(0.2), None);
        no_delta.unit.gamma = Some(0.01);
        no_delta.greeks_source = Some(GreeksSource::Venue);
        assert_eq!(cross_check(&no_delta, 0.0), None);
    }
}
