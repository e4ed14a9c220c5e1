//! IBKR Client Portal → unified records. The conid's position row gives the
//! contract; the merged market-data fields give prices and Greeks.
//!
//! Units: IBKR's delta (7308) and gamma (7309) are per 1 unit of the underlying,
//! theta (7310) per calendar day and vega (7311) "per 1% vol change" — our
//! conventions already. Implied vol (7633) is in percent and becomes a fraction.
//! IBKR sends no rho. Stocks and futures carry delta 1 per unit by definition (their
//! rows say the Greeks came from the model, not the venue).

use chrono::{NaiveDate, TimeZone, Utc};
use streaming::ibkr::{IbkrPosition, IbkrQuote, MdField, MdFields};
use streaming::BrokerEvent;

use super::shared::{clamp_future, ContractCache, Normalized};
use model::{
    AccountId, AssetClass, Contract, GreekSnapshot, Greeks, GreeksSource, ModelError, OptionRight,
    PositionSide, UnifiedPosition,
};

/// A venue value read as a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Parsed {
    /// Absent or empty: nothing to count.
    Missing,
    /// Present but not a finite number (`"NaN"`, `"abc"`): dropped and counted.
    Invalid,
    Value(f64),
}

impl Parsed {
    fn value(self) -> Option<f64> {
        match self {
            Parsed::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Reads an IBKR number: strips the `C` (previous close) and `H` (halted) price
/// prefixes, a trailing `%`, and thousands separators.
pub fn parse_number(raw: Option<&str>) -> Parsed {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Parsed::Missing;
    };
    let body = raw
        .strip_prefix(['C', 'H'])
        .unwrap_or(raw)
        .trim_end_matches('%')
        .trim();
    let parsed = if body.contains(',') {
        body.replace(',', "").parse::<f64>()
    } else {
        body.parse::<f64>()
    };
    match parsed {
        Ok(v) if v.is_finite() => Parsed::Value(v),
        _ => Parsed::Invalid,
    }
}

struct Reader<'a> {
    fields: &'a MdFields,
    dropped: u32,
}

impl Reader<'_> {
    fn get(&mut self, f: MdField) -> Option<f64> {
        let p = parse_number(self.fields.get(f));
        if p == Parsed::Invalid {
            self.dropped += 1;
        }
        p.value()
    }
}

/// Mark (7635), else the bid/ask mid, else the last price.
fn price(r: &mut Reader<'_>) -> Option<f64> {
    let mark = r.get(MdField::Mark);
    let bid = r.get(MdField::Bid);
    let ask = r.get(MdField::Ask);
    let last = r.get(MdField::Last);
    mark.or(match (bid, ask) {
        (Some(b), Some(a)) if b > 0.0 && a >= b => Some((a + b) / 2.0),
        _ => None,
    })
    .or(last)
}

fn expiry(p: &IbkrPosition) -> Result<NaiveDate, ModelError> {
    let raw = p
        .expiry
        .as_deref()
        .ok_or(ModelError::MissingField("expiry"))?;
    NaiveDate::parse_from_str(raw.trim(), "%Y%m%d")
        .map_err(|_| ModelError::InvalidExpiry(raw.to_owned()))
}

fn symbol(p: &IbkrPosition) -> Result<&str, ModelError> {
    p.underlying_symbol
        .as_deref()
        .ok_or(ModelError::MissingField("undSym"))
}

/// The unified contract of a position row.
pub fn contract(p: &IbkrPosition) -> Result<Contract, ModelError> {
    let multiplier = || p.multiplier.ok_or(ModelError::MissingField("multiplier"));
    match p.asset_class.as_str() {
        "OPT" | "FOP" => {
            let right = OptionRight::parse(
                p.put_or_call
                    .as_deref()
                    .ok_or(ModelError::MissingField("putOrCall"))?,
            )?;
            let class = if p.asset_class == "OPT" {
                AssetClass::Option
            } else {
                AssetClass::FutureOption
            };
            let strike = p.strike.ok_or(ModelError::MissingField("strike"))?;
            Contract::option(symbol(p)?, class, expiry(p)?, right, strike, multiplier()?)
        }
        "STK" => Contract::stock(symbol(p)?),
        "FUT" => Contract::future(symbol(p)?, expiry(p)?, multiplier()?),
        other => Err(ModelError::UnsupportedAssetClass(other.to_owned())),
    }
}

pub(super) fn normalize(
    contracts: &mut ContractCache,
    event: &BrokerEvent,
    quote: &IbkrQuote,
) -> Result<Normalized, ModelError> {
    let p = &quote.position;
    if p.account.trim().is_empty() {
        return Err(ModelError::MissingField("acctId"));
    }
    let contract = contracts.contract(&format!("ibkr|{}", p.conid), || contract(p))?;
    let mut own = Reader {
        fields: &quote.fields,
        dropped: 0,
    };
    let mark_price = price(&mut own);
    let (unit, greeks_source, implied_vol, underlying_price) = if contract.asset_class().is_option()
    {
        let unit = Greeks {
            delta: own.get(MdField::Delta),
            gamma: own.get(MdField::Gamma),
            theta: own.get(MdField::Theta),
            vega: own.get(MdField::Vega),
            rho: None,
        };
        let iv = own.get(MdField::ImpliedVol).map(|pct| pct / 100.0);
        let underlying = quote.underlying.as_deref().and_then(|u| {
            let mut r = Reader {
                fields: u,
                dropped: 0,
            };
            price(&mut r)
        });
        let source = (!unit.is_empty()).then_some(GreeksSource::Venue);
        (unit, source, iv, underlying)
    } else {
        let linear = Greeks::LINEAR;
        let underlying = match contract.asset_class() {
            AssetClass::Stock => mark_price,
            _ => None,
        };
        (linear, Some(GreeksSource::Model), None, underlying)
    };
    let event_time = quote
        .updated_ms
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or(event.received_at);
    Ok(Normalized {
        snapshot: GreekSnapshot {
            event_time: clamp_future(event_time, event.received_at),
            received_at: event.received_at,
            total: unit.scaled(p.position, contract.multiplier()),
            position: UnifiedPosition {
                broker: event.broker,
                account_id: AccountId::new(p.account.clone())?,
                contract,
                side: PositionSide::Net,
                quantity: p.position,
            },
            mark_price,
            underlying_price,
            implied_vol,
            unit,
            greeks_source,
            source_seq: None,
        },
        non_finite: own.dropped,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rust_decimal::Decimal;
    use streaming::{Broker, BrokerPayload};

    use super::*;
    use crate::normalize::Normalizer;

    fn option_row() -> IbkrPosition {
        IbkrPosition {
            account: Arc::from("DU1234567"),
            conid: 700000001,
            asset_class: "OPT".into(),
            position: Decimal::from(-2),
            expiry: Some("20260619".into()),
            put_or_call: Some("C".into()),
            strike: Some(Decimal::from(500)),
            multiplier: Some(Decimal::ONE_HUNDRED),
            und_conid: Some(756733),
            underlying_symbol: Some("SPY".into()),
        }
    }

    fn fields(pairs: &[(MdField, &str)]) -> Arc<MdFields> {
        let mut f = MdFields::default();
        let update: Vec<_> = pairs.iter().map(|(k, v)| (*k, Arc::from(*v))).collect();
        f.merge(&update);
        Arc::new(f)
    }

    fn event(
        position: IbkrPosition,
        own: Arc<MdFields>,
        und: Option<Arc<MdFields>>,
    ) -> BrokerEvent {
        BrokerEvent {
            broker: Broker::Ibkr,
            account: position.account.clone(),
            received_at: Utc.timestamp_millis_opt(1_715_515_201_000).unwrap(),
            payload: BrokerPayload::Ibkr(IbkrQuote {
                position: Arc::new(position),
                fields: own,
                underlying: und,
                updated_ms: Some(1_715_515_200_000),
            }),
        }
    }

    /// The values of the protocol document's market-data sample (§4.4).
    fn sample() -> Arc<MdFields> {
        fields(&[
            (MdField::Last, "12.35"),
            (MdField::Bid, "12.30"),
            (MdField::Ask, "12.40"),
            (MdField::Delta, "0.552"),
            (MdField::Gamma, "0.012"),
            (MdField::Theta, "-0.081"),
            (MdField::Vega, "0.452"),
            (MdField::ImpliedVol, "21.2%"),
            (MdField::Mark, "12.35"),
        ])
    }

    #[test]
    fn a_size_that_overflows_is_a_rejected_event_not_a_panic() {
        let mut row = option_row();
        row.position = Decimal::MAX;
        let err = Normalizer::new()
            .normalize(event(row, sample(), None))
            .unwrap_err();
        assert_eq!(err.reason(), "size_overflow");
    }

    #[test]
    fn odd_values() {
        assert_eq!(parse_number(Some("C123.4")), Parsed::Value(123.4));
        assert_eq!(parse_number(Some("H99")), Parsed::Value(99.0));
        assert_eq!(parse_number(Some("21.2%")), Parsed::Value(21.2));
        assert_eq!(parse_number(Some(" 14.7 ")), Parsed::Value(14.7));
        assert_eq!(parse_number(Some("1,234.5")), Parsed::Value(1234.5));
        assert_eq!(parse_number(Some("")), Parsed::Missing);
        assert_eq!(parse_number(None), Parsed::Missing);
        assert_eq!(parse_number(Some("NaN")), Parsed::Invalid);
        assert_eq!(parse_number(Some("inf")), Parsed::Invalid);
        assert_eq!(parse_number(Some("n/a")), Parsed::Invalid);
        assert_eq!(parse_number(Some("%")), Parsed::Invalid);
    }

    #[test]
    fn option_snapshot_has_our_units_and_position_greeks() {
        let und = fields(&[(MdField::Last, "C591.20")]);
        let out = Normalizer::new()
            .normalize(event(option_row(), sample(), Some(und)))
            .unwrap();
        assert_eq!(out.non_finite, 0);
        let s = out.snapshot;
        assert_eq!(s.contract().key().as_str(), "SPY 20260619 C 500");
        assert_eq!(s.contract().asset_class(), AssetClass::Option);
        assert_eq!(s.position.quantity, Decimal::from(-2));
        assert_eq!(s.unit.delta, Some(0.552));
        assert_eq!(s.unit.rho, None);
        // short 2 calls × 100
        assert!((s.total.delta.unwrap() + 110.4).abs() < 1e-9);
        assert!((s.total.theta.unwrap() - 16.2).abs() < 1e-9);
        assert!((s.total.vega.unwrap() + 90.4).abs() < 1e-9);
        assert!((s.implied_vol.unwrap() - 0.212).abs() < 1e-12);
        assert_eq!(s.mark_price, Some(12.35));
        assert_eq!(s.underlying_price, Some(591.2));
        assert_eq!(s.greeks_source, Some(GreeksSource::Venue));
        assert_eq!(s.event_time.timestamp_millis(), 1_715_515_200_000);
    }

    #[test]
    fn bad_values_are_missing_and_counted() {
        let f = fields(&[
            (MdField::Delta, "NaN"),
            (MdField::Gamma, ""),
            (MdField::Theta, "abc"),
            (MdField::Vega, "0.1"),
            (MdField::ImpliedVol, "%"),
            (MdField::Bid, "1.0"),
            (MdField::Ask, "1.2"),
        ]);
        let out = Normalizer::new()
            .normalize(event(option_row(), f, None))
            .unwrap();
        assert_eq!(
            out.non_finite, 3,
            "NaN, abc and a bare %; empty is just missing"
        );
        let s = out.snapshot;
        assert_eq!(s.unit.delta, None);
        assert_eq!(s.total.delta, None);
        assert_eq!(s.unit.vega, Some(0.1));
        assert!(
            (s.mark_price.unwrap() - 1.1).abs() < 1e-12,
            "mid when there is no mark"
        );
        assert_eq!(s.underlying_price, None);
    }

    #[test]
    fn stock_rows_carry_delta_one_from_the_model() {
        let row = IbkrPosition {
            conid: 265598,
            asset_class: "STK".into(),
            position: Decimal::from(300),
            expiry: None,
            put_or_call: None,
            strike: None,
            multiplier: None,
            und_conid: None,
            underlying_symbol: Some("AAPL".into()),
            ..option_row()
        };
        let s = Normalizer::new()
            .normalize(event(row, fields(&[(MdField::Last, "C230.10")]), None))
            .unwrap()
            .snapshot;
        assert_eq!(s.contract().key().as_str(), "AAPL");
        assert_eq!(s.total.delta, Some(300.0));
        assert_eq!(s.total.gamma, Some(0.0));
        assert_eq!(s.greeks_source, Some(GreeksSource::Model));
        assert_eq!(s.underlying_price, Some(230.1));
    }

    #[test]
    fn contract_mapping_errors_are_explicit() {
        let mut r = option_row();
        r.multiplier = None;
        assert_eq!(contract(&r), Err(ModelError::MissingField("multiplier")));
        let mut r = option_row();
        r.expiry = Some("JUN2026".into());
        assert_eq!(
            contract(&r),
            Err(ModelError::InvalidExpiry("JUN2026".into()))
        );
        let mut r = option_row();
        r.asset_class = "BOND".into();
        assert_eq!(
            contract(&r),
            Err(ModelError::UnsupportedAssetClass("BOND".into()))
        );
        let mut r = option_row();
        r.asset_class = "FOP".into();
        r.underlying_symbol = Some("ES".into());
        assert_eq!(
            contract(&r).unwrap().asset_class(),
            AssetClass::FutureOption
        );
        let mut r = option_row();
        r.asset_class = "FUT".into();
        r.underlying_symbol = Some("ES".into());
        r.multiplier = Some(Decimal::from(50));
        assert_eq!(contract(&r).unwrap().key().as_str(), "ES 20260619 FUT");
    }

    #[test]
    fn a_venue_clock_far_ahead_is_not_trusted() {
        let mut e = event(option_row(), sample(), None);
        if let BrokerPayload::Ibkr(q) = &mut e.payload {
            q.updated_ms = Some(1_815_515_200_000);
        }
        let s = Normalizer::new().normalize(e.clone()).unwrap().snapshot;
        assert_eq!(s.event_time, e.received_at);
    }
}
