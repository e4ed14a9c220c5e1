//! Tastytrade REST bodies we read. Pure parsing for now; the HTTP client (OAuth
//! refresh, quote tokens) comes with the streaming client.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::json::decimal;

/// One position, with the sign applied: the API sends an unsigned `quantity` and a
/// separate `quantity-direction`.
#[derive(Debug, Clone, PartialEq)]
pub struct TtPosition {
    pub account: Arc<str>,
    /// OCC for options (`SPY   260619C00500000`), the ticker for equities.
    pub symbol: String,
    pub instrument_type: String,
    pub underlying_symbol: String,
    pub quantity: Decimal,
    pub multiplier: Decimal,
    /// The DXLink symbol, when the API gives one.
    pub streamer_symbol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("positions body has no data.items array")]
    NoItems,
    #[error("position row {index}: {what}")]
    BadRow { index: usize, what: &'static str },
}

fn text<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Reads one position object (a REST row, or the `data` of a `CurrentPosition`
/// account-streamer message).
pub fn parse_position(row: &Value) -> Result<TtPosition, &'static str> {
    let obj = row.as_object().ok_or("not an object")?;
    let magnitude = obj.get("quantity").and_then(decimal).ok_or("no quantity")?;
    if magnitude.is_sign_negative() {
        return Err("negative quantity: the API sends it unsigned");
    }
    let quantity = match text(obj, "quantity-direction").ok_or("no quantity-direction")? {
        "Long" => magnitude,
        "Short" => -magnitude,
        "Zero" => Decimal::ZERO,
        _ => return Err("unknown quantity-direction"),
    };
    Ok(TtPosition {
        account: Arc::from(text(obj, "account-number").ok_or("no account-number")?),
        symbol: text(obj, "symbol").ok_or("no symbol")?.to_owned(),
        instrument_type: text(obj, "instrument-type")
            .ok_or("no instrument-type")?
            .to_owned(),
        underlying_symbol: text(obj, "underlying-symbol")
            .ok_or("no underlying-symbol")?
            .to_owned(),
        quantity: quantity.normalize(),
        multiplier: obj
            .get("multiplier")
            .and_then(decimal)
            .unwrap_or(Decimal::ONE)
            .normalize(),
        streamer_symbol: text(obj, "streamer-symbol").map(str::to_owned),
    })
}

/// `GET /accounts/{n}/positions`: good rows, and the bad ones as errors beside them.
pub fn parse_positions(
    body: &Value,
) -> Result<(Vec<TtPosition>, Vec<PositionError>), PositionError> {
    let items = body
        .get("data")
        .and_then(|d| d.get("items"))
        .and_then(Value::as_array)
        .ok_or(PositionError::NoItems)?;
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (index, row) in items.iter().enumerate() {
        match parse_position(row) {
            Ok(p) => good.push(p),
            Err(what) => bad.push(PositionError::BadRow { index, what }),
        }
    }
    Ok((good, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_row_is_short_two() {
        let body: Value =
            serde_json::from_str(include_str!("../../testdata/tastytrade/positions.json")).unwrap();
        let (good, bad) = parse_positions(&body).unwrap();
        assert_eq!(good.len(), 3);
        assert_eq!(good[0].quantity, Decimal::from(-2));
        assert_eq!(good[0].multiplier, Decimal::ONE_HUNDRED);
        assert_eq!(good[0].streamer_symbol.as_deref(), Some(".SPY260619C500"));
        assert_eq!(
            good[1].quantity,
            Decimal::from(100),
            "Long, quantity as a number"
        );
        assert_eq!(good[2].quantity, Decimal::ZERO);
        assert_eq!(
            bad,
            vec![
                PositionError::BadRow {
                    index: 3,
                    what: "no quantity-direction"
                },
                PositionError::BadRow {
                    index: 4,
                    what: "negative quantity: the API sends it unsigned"
                },
            ]
        );
        assert_eq!(parse_positions(&Value::Null), Err(PositionError::NoItems));
    }
}
