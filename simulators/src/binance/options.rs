//! The simulator's options (eapi): listed European options on BTC and ETH whose
//! marks, IV and Greeks come from Black-Scholes on the perpetual's mid, so they
//! move with the futures books. Values are sent in Binance's units, which are ours:
//! delta and gamma per unit of the underlying, theta per calendar day, vega per
//! volatility point.

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::kit;

/// Binance options expire at 08:00 UTC on the expiry date.
const EXPIRY_HOUR: u32 = 8;
const YEAR_MS: f64 = 365.0 * 86_400_000.0;

#[derive(Debug, Clone)]
pub struct OptionSpec {
    pub symbol: String,
    /// The perpetual whose mid is the underlying price (`BTCUSDT`).
    pub underlying: String,
    pub expiry: NaiveDate,
    pub strike: f64,
    pub call: bool,
    /// The simulator's fixed mark IV for this option.
    pub vol: f64,
    /// Contract unit (`exchangeInfo` `unit`): underlying per contract.
    pub unit: u32,
}

impl OptionSpec {
    fn new(base: &str, expiry: NaiveDate, strike: u32, call: bool, vol: f64) -> Self {
        Self {
            symbol: format!(
                "{base}-{}-{strike}-{}",
                expiry.format("%y%m%d"),
                if call { 'C' } else { 'P' }
            ),
            underlying: format!("{base}USDT"),
            expiry,
            strike: f64::from(strike),
            call,
            vol,
            unit: 1,
        }
    }

    fn expiry_ms(&self) -> i64 {
        let at = self
            .expiry
            .and_time(NaiveTime::from_hms_opt(EXPIRY_HOUR, 0, 0).expect("time"));
        Utc.from_utc_datetime(&at).timestamp_millis()
    }

    /// Mark and Greeks at underlying price `spot` and time `now_ms`. At or after
    /// expiry the option is worth its intrinsic value with a 0/±1 delta.
    pub fn value(&self, spot: f64, now_ms: i64) -> kit::OptionValue {
        let years = (self.expiry_ms() - now_ms) as f64 / YEAR_MS;
        if years <= 0.0 {
            let itm = if self.call {
                spot > self.strike
            } else {
                spot < self.strike
            };
            let sign = if self.call { 1.0 } else { -1.0 };
            return kit::OptionValue {
                price: (sign * (spot - self.strike)).max(0.0),
                delta: if itm { sign } else { 0.0 },
                gamma: 0.0,
                theta_day: 0.0,
                vega_point: 0.0,
                rho_point: 0.0,
            };
        }
        kit::bsm(spot, self.strike, years, 0.0, self.vol, self.call)
    }
}

pub fn listed() -> Vec<OptionSpec> {
    let dec = NaiveDate::from_ymd_opt(2026, 12, 25).expect("date");
    let mar = NaiveDate::from_ymd_opt(2027, 3, 26).expect("date");
    vec![
        OptionSpec::new("BTC", dec, 60_000, true, 0.55),
        OptionSpec::new("BTC", dec, 60_000, false, 0.55),
        OptionSpec::new("BTC", mar, 70_000, true, 0.60),
        OptionSpec::new("ETH", dec, 3_000, false, 0.70),
    ]
}

fn money(x: f64, dp: u32) -> String {
    Decimal::from_f64(x)
        .map(|d| d.round_dp(dp).normalize().to_string())
        .unwrap_or_else(|| "0".into())
}

/// One element of the `<underlying>@optionMarkPrice` array.
pub fn stream_row(spec: &OptionSpec, spot: f64, t: i64) -> Value {
    let v = spec.value(spot, t);
    json!({
        "e": "markPrice", "E": t, "s": spec.symbol, "mp": money(v.price, 3),
        "i": money(spot, 8), "P": "0.000", "bo": "0.000", "ao": "0.000", "bq": "0.0000",
        "aq": "0.0000", "b": "-1.0", "a": "-1.0",
        "hl": money(v.price * 1.2 + 5.0, 3), "ll": money(v.price * 0.8, 3),
        "vo": format!("{:.8}", spec.vol), "rf": "0.0",
        "d": format!("{:.8}", v.delta), "t": format!("{:.8}", v.theta_day),
        "g": format!("{:.8}", v.gamma), "v": format!("{:.8}", v.vega_point),
    })
}

/// One row of `GET /eapi/v1/mark`.
pub fn mark_row(spec: &OptionSpec, spot: f64, t: i64) -> Value {
    let v = spec.value(spot, t);
    json!({
        "symbol": spec.symbol, "markPrice": money(v.price, 3),
        "bidIV": format!("{:.8}", spec.vol - 0.02), "askIV": format!("{:.8}", spec.vol + 0.02),
        "markIV": format!("{:.8}", spec.vol),
        "delta": format!("{:.8}", v.delta), "theta": format!("{:.8}", v.theta_day),
        "gamma": format!("{:.8}", v.gamma), "vega": format!("{:.8}", v.vega_point),
        "highPriceLimit": money(v.price * 1.2 + 5.0, 3), "lowPriceLimit": money(v.price * 0.8, 3),
        "riskFreeInterest": "0",
    })
}

/// One row of `GET /eapi/v1/position`.
pub fn position_row(
    spec: &OptionSpec,
    quantity: Decimal,
    entry: Decimal,
    spot: f64,
    t: i64,
) -> Value {
    let mark = Decimal::from_f64(spec.value(spot, t).price)
        .unwrap_or_default()
        .round_dp(3);
    let value = (mark * quantity).round_dp(8);
    let cost = (entry * quantity).round_dp(8);
    json!({
        "entryPrice": entry.normalize().to_string(), "symbol": spec.symbol,
        "side": if quantity.is_sign_negative() { "SHORT" } else { "LONG" },
        "quantity": quantity.normalize().to_string(), "reducibleQty": "0",
        "markValue": value.to_string(), "ror": "0", "unrealizedPNL": (value - cost).to_string(),
        "markPrice": mark.normalize().to_string(), "strikePrice": money(spec.strike, 0),
        "positionCost": cost.to_string(), "expiryDate": spec.expiry_ms(),
        "priceScale": 3, "quantityScale": 2,
        "optionSide": if spec.call { "CALL" } else { "PUT" }, "quoteAsset": "USDT",
    })
}

/// `GET /eapi/v1/exchangeInfo`.
pub fn exchange_info(specs: &[OptionSpec], t: i64) -> Value {
    let rows: Vec<Value> = specs
        .iter()
        .map(|s| {
            json!({
                "id": 1, "contractId": 2, "symbol": s.symbol, "side": if s.call { "CALL" } else { "PUT" },
                "strikePrice": money(s.strike, 0), "underlying": s.underlying,
                "unit": s.unit, "makerFeeRate": "0.0002", "takerFeeRate": "0.0002",
                "minQty": "0.01", "maxQty": "10000", "initialMargin": "0.15",
                "maintenanceMargin": "0.075", "minInitialMargin": "0.1",
                "minMaintenanceMargin": "0.05", "priceScale": 3, "quantityScale": 2,
                "quoteAsset": "USDT", "expiryDate": s.expiry_ms(),
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "5", "maxPrice": "1000000", "tickSize": "5"},
                    {"filterType": "LOT_SIZE", "minQty": "0.01", "maxQty": "10000", "stepSize": "0.01"}
                ]
            })
        })
        .collect();
    json!({
        "timezone": "UTC", "serverTime": t,
        "optionContracts": [{"baseAsset": "BTC", "quoteAsset": "USDT", "underlying": "BTCUSDT", "settleAsset": "USDT"},
                            {"baseAsset": "ETH", "quoteAsset": "USDT", "underlying": "ETHUSDT", "settleAsset": "USDT"}],
        "optionAssets": [{"name": "USDT"}],
        "optionSymbols": rows,
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_and_calls_are_consistent_and_expiry_is_intrinsic() {
        let specs = listed();
        let (c, p) = (&specs[0], &specs[1]);
        let t = Utc
            .with_ymd_and_hms(2026, 11, 21, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let (vc, vp) = (c.value(61_000.0, t), p.value(61_000.0, t));
        // Put-call parity with r = 0: C − P = S − K.
        assert!((vc.price - vp.price - 1_000.0).abs() < 1e-6);
        assert!((vc.delta - vp.delta - 1.0).abs() < 1e-9);
        assert!(vc.theta_day < 0.0 && vc.vega_point > 0.0);
        let after = c.expiry_ms() + 1;
        assert_eq!(c.value(61_000.0, after).price, 1_000.0);
        assert_eq!(c.value(61_000.0, after).delta, 1.0);
        assert_eq!(p.value(61_000.0, after).delta, 0.0);
        assert_eq!(c.symbol, "BTC-261225-60000-C");
    }
}
