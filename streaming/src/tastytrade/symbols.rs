//! Option symbols at Tastytrade: OCC on REST and the account streamer
//! (`SPY   260619C00500000`), dxFeed on DXLink (`.SPY260619C500`). Pure.

use chrono::NaiveDate;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSymbol {
    pub root: String,
    pub expiry: NaiveDate,
    /// `C` or `P`.
    pub right: char,
    pub strike: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an option symbol: {0:?}")]
pub struct SymbolError(pub String);

fn date(yymmdd: &str) -> Option<NaiveDate> {
    if yymmdd.len() != 6 || !yymmdd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = yymmdd[0..2].parse().ok()?;
    let m: u32 = yymmdd[2..4].parse().ok()?;
    let d: u32 = yymmdd[4..6].parse().ok()?;
    NaiveDate::from_ymd_opt(2000 + y, m, d)
}

fn valid_root(root: &str) -> bool {
    !root.is_empty() && root.len() <= 6 && root.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `SPY   260619C00500000`: a 6-character space-padded root, `YYMMDD`, `C|P`, and
/// the strike × 1000 in 8 digits.
pub fn parse_occ(symbol: &str) -> Result<OptionSymbol, SymbolError> {
    let err = || SymbolError(symbol.to_owned());
    if symbol.len() != 21 || !symbol.is_ascii() {
        return Err(err());
    }
    let root = symbol[..6].trim_end();
    let right = symbol.as_bytes()[12] as char;
    let strike_digits = &symbol[13..];
    if !valid_root(root)
        || !matches!(right, 'C' | 'P')
        || !strike_digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let thousandths: i64 = strike_digits.parse().map_err(|_| err())?;
    let strike = Decimal::new(thousandths, 3).normalize();
    if strike.is_zero() {
        return Err(err());
    }
    Ok(OptionSymbol {
        root: root.to_owned(),
        expiry: date(&symbol[6..12]).ok_or_else(err)?,
        right,
        strike,
    })
}

/// `.SPY260619C500` or `.SPY260619P502.5`: the root, `YYMMDD`, `C|P`, and the strike
/// with no trailing zeros. Read from the right, since roots may end in a digit.
pub fn parse_dxfeed(symbol: &str) -> Result<OptionSymbol, SymbolError> {
    let err = || SymbolError(symbol.to_owned());
    let body = symbol.strip_prefix('.').ok_or_else(err)?;
    if !body.is_ascii() {
        return Err(err());
    }
    let strike_start = body
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let right = body.as_bytes()[strike_start] as char;
    let strike: Decimal = body[strike_start + 1..].parse().map_err(|_| err())?;
    if !matches!(right, 'C' | 'P') || strike <= Decimal::ZERO || strike_start < 7 {
        return Err(err());
    }
    let root = &body[..strike_start - 6];
    if !valid_root(root) {
        return Err(err());
    }
    Ok(OptionSymbol {
        root: root.to_owned(),
        expiry: date(&body[strike_start - 6..strike_start]).ok_or_else(err)?,
        right,
        strike: strike.normalize(),
    })
}

impl OptionSymbol {
    pub fn to_occ(&self) -> String {
        let thousandths = (self.strike * Decimal::ONE_THOUSAND).trunc();
        format!(
            "{:<6}{}{}{:08}",
            self.root,
            self.expiry.format("%y%m%d"),
            self.right,
            thousandths
        )
    }

    pub fn to_dxfeed(&self) -> String {
        format!(
            ".{}{}{}{}",
            self.root,
            self.expiry.format("%y%m%d"),
            self.right,
            self.strike.normalize()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_examples() {
        let occ = parse_occ("SPY   260619C00500000").unwrap();
        assert_eq!(occ.root, "SPY");
        assert_eq!(occ.expiry, NaiveDate::from_ymd_opt(2026, 6, 19).unwrap());
        assert_eq!(occ.right, 'C');
        assert_eq!(occ.strike, Decimal::from(500));
        assert_eq!(occ.to_dxfeed(), ".SPY260619C500");
        let dx = parse_dxfeed(".SPY260619P502.5").unwrap();
        assert_eq!(dx.strike, Decimal::new(5025, 1));
        assert_eq!(dx.to_occ(), "SPY   260619P00502500");
        assert_eq!(parse_dxfeed(".SPXW261218C6000").unwrap().root, "SPXW");
    }

    #[test]
    fn bad_symbols_are_errors() {
        for s in [
            "",
            "SPY",
            "SPY   260619X00500000",
            "SPY   261319C00500000",
            "SPY   260619C0050000A",
            "SPY   260619C00000000",
            "      260619C00500000",
        ] {
            assert!(parse_occ(s).is_err(), "{s:?}");
        }
        for s in [
            "",
            ".",
            "SPY260619C500",
            ".SPY260619X500",
            ".SPY261319C500",
            ".260619C500",
            ".SPY260619C",
            ".SPY260619C0",
            ".SPY260619C5.0.0",
            ".SPYÉ260619C500",
        ] {
            assert!(parse_dxfeed(s).is_err(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn occ_and_dxfeed_round_trip(
            root in "[A-Z]{1,5}[0-9]?",
            days in 0u64..3000,
            call in any::<bool>(),
            thousandths in 1i64..99_999_999,
        ) {
            let sym = OptionSymbol {
                root,
                expiry: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Days::new(days),
                right: if call { 'C' } else { 'P' },
                strike: Decimal::new(thousandths, 3).normalize(),
            };
            prop_assert_eq!(parse_occ(&sym.to_occ()).unwrap(), sym.clone());
            prop_assert_eq!(parse_dxfeed(&sym.to_dxfeed()).unwrap(), sym);
        }
    }
}
