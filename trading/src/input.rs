//! Reading the offline commands' JSON (`risk what-if`, `risk value`): decimals given as
//! strings or numbers, required fields, one of a few words — each failure a clear
//! message naming the field.

use rust_decimal::Decimal;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0} is not valid JSON: {1}")]
    Json(&'static str, serde_json::Error),
    #[error("{0}: expected a decimal number, got {1}")]
    Number(String, String),
    #[error("{0}: missing")]
    Missing(String),
    #[error("{0}: expected one of {1}")]
    Choice(String, &'static str),
}

pub(crate) fn decimal(what: &str, raw: &str) -> Result<Decimal, InputError> {
    raw.trim()
        .parse()
        .map_err(|_| InputError::Number(what.to_owned(), raw.to_owned()))
}

/// A decimal field of a JSON object, given as a string or a number.
pub(crate) fn field(v: &Value, what: &str, key: &str) -> Result<Option<Decimal>, InputError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => decimal(&format!("{what}.{key}"), s).map(Some),
        Some(Value::Number(n)) => decimal(&format!("{what}.{key}"), &n.to_string()).map(Some),
        Some(other) => Err(InputError::Number(
            format!("{what}.{key}"),
            other.to_string(),
        )),
    }
}

pub(crate) fn required(v: &Value, what: &str, key: &str) -> Result<Decimal, InputError> {
    field(v, what, key)?.ok_or_else(|| InputError::Missing(format!("{what}.{key}")))
}

pub(crate) fn text<'a>(v: &'a Value, what: &str, key: &str) -> Result<&'a str, InputError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| InputError::Missing(format!("{what}.{key}")))
}

pub(crate) fn parse(what: &'static str, raw: &str) -> Result<Value, InputError> {
    serde_json::from_str(raw).map_err(|e| InputError::Json(what, e))
}

/// `raw` as one of `choices`' words.
pub(crate) fn choice<T: Copy>(
    what: &str,
    raw: &str,
    choices: &[(&str, T)],
    expected: &'static str,
) -> Result<T, InputError> {
    choices
        .iter()
        .find(|(w, _)| *w == raw)
        .map(|(_, t)| *t)
        .ok_or_else(|| InputError::Choice(what.to_owned(), expected))
}
