//! Lenient readers for venue JSON: brokers send numbers as JSON numbers or as
//! strings, sometimes in scientific notation.

use rust_decimal::Decimal;
use serde_json::Value;

/// A decimal from a number or a numeric string (plain or scientific).
pub fn decimal(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_strings_and_scientific() {
        assert_eq!(decimal(&json!(-2.0)), Some(Decimal::new(-20, 1)));
        assert_eq!(decimal(&json!(" 440 ")), Some(Decimal::from(440)));
        assert_eq!(decimal(&json!("1e3")), Some(Decimal::from(1000)));
        assert_eq!(decimal(&json!("abc")), None);
        assert_eq!(decimal(&json!(null)), None);
    }
}
