//! The unified contract, position and Greek-snapshot model. Pure: no IO, no clock.
//!
//! Conventions (also in docs/pricing.md and the column comments): delta and gamma per 1
//! unit of the underlying, vega per 1 volatility point (0.01), theta per calendar
//! day, rho per 1 rate point (0.01); implied vol as a fraction (0.25 = 25%).
//! Position Greeks = signed quantity × multiplier × per-unit Greek. Quantities and
//! money are `Decimal`; Greeks are `f64`, and a non-finite value from a venue
//! becomes `None`, never a NaN that could reach a sum.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::ids::{AccountId, ContractKey, MAX_ID_LEN};
use crate::Broker;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("invalid account id {0:?}: expected 1 to 64 printable characters, no whitespace")]
    InvalidAccount(String),
    #[error("invalid symbol {0:?}: expected non-empty, printable, no whitespace")]
    InvalidSymbol(String),
    #[error("invalid strike {0}: must be positive")]
    InvalidStrike(Decimal),
    #[error("invalid multiplier {0}: must be positive")]
    InvalidMultiplier(Decimal),
    #[error("invalid option right {0:?}: expected C or P")]
    InvalidRight(String),
    #[error("invalid expiry {0:?}: expected YYYYMMDD")]
    InvalidExpiry(String),
    #[error("unsupported asset class {0:?}")]
    UnsupportedAssetClass(String),
    #[error("invalid position side {0:?}: expected BOTH, LONG or SHORT")]
    InvalidPositionSide(String),
    #[error("position size out of range: {quantity} x multiplier {multiplier} overflows")]
    SizeOverflow {
        quantity: Decimal,
        multiplier: Decimal,
    },
}

impl ModelError {
    /// A short, bounded label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ModelError::MissingField(_) => "missing_field",
            ModelError::InvalidAccount(_) => "invalid_account",
            ModelError::InvalidSymbol(_) => "invalid_symbol",
            ModelError::InvalidStrike(_) => "invalid_strike",
            ModelError::InvalidMultiplier(_) => "invalid_multiplier",
            ModelError::InvalidRight(_) => "invalid_right",
            ModelError::InvalidExpiry(_) => "invalid_expiry",
            ModelError::UnsupportedAssetClass(_) => "unsupported_asset_class",
            ModelError::InvalidPositionSide(_) => "invalid_position_side",
            ModelError::SizeOverflow { .. } => "size_overflow",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetClass {
    Stock,
    Index,
    Option,
    Future,
    FutureOption,
    Perpetual,
}

impl AssetClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            AssetClass::Stock => "stock",
            AssetClass::Index => "index",
            AssetClass::Option => "option",
            AssetClass::Future => "future",
            AssetClass::FutureOption => "future_option",
            AssetClass::Perpetual => "perpetual",
        }
    }

    pub const fn is_option(self) -> bool {
        matches!(self, AssetClass::Option | AssetClass::FutureOption)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionRight {
    Call,
    Put,
}

impl OptionRight {
    pub const fn as_char(self) -> char {
        match self {
            OptionRight::Call => 'C',
            OptionRight::Put => 'P',
        }
    }

    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s.trim() {
            "C" | "c" | "CALL" | "Call" | "call" => Ok(OptionRight::Call),
            "P" | "p" | "PUT" | "Put" | "put" => Ok(OptionRight::Put),
            other => Err(ModelError::InvalidRight(other.to_owned())),
        }
    }
}

/// A tradable instrument, identified across brokers by its canonical `key`:
/// - option: `SPY 20261218 C 590` (underlying, expiry YYYYMMDD, right, strike with no
///   trailing zeros)
/// - future: `ES 20261218 FUT`; perpetual: `BTCUSDT PERP`; stock or index: the symbol.
///
/// The fields are private: a contract exists only through a checked constructor, and
/// its key always agrees with its parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Contract {
    key: ContractKey,
    underlying: String,
    asset_class: AssetClass,
    expiry: Option<NaiveDate>,
    strike: Option<Decimal>,
    right: Option<OptionRight>,
    multiplier: Decimal,
}

fn check_symbol(symbol: &str) -> Result<String, ModelError> {
    let s = symbol.trim();
    if s.is_empty()
        || s.len() > MAX_ID_LEN
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ModelError::InvalidSymbol(symbol.to_owned()));
    }
    Ok(s.to_ascii_uppercase())
}

fn check_multiplier(multiplier: Decimal) -> Result<Decimal, ModelError> {
    if multiplier <= Decimal::ZERO {
        return Err(ModelError::InvalidMultiplier(multiplier));
    }
    Ok(multiplier.normalize())
}

impl Contract {
    pub fn option(
        underlying: &str,
        asset_class: AssetClass,
        expiry: NaiveDate,
        right: OptionRight,
        strike: Decimal,
        multiplier: Decimal,
    ) -> Result<Self, ModelError> {
        debug_assert!(asset_class.is_option());
        let underlying = check_symbol(underlying)?;
        if strike <= Decimal::ZERO {
            return Err(ModelError::InvalidStrike(strike));
        }
        let strike = strike.normalize();
        let mut key = String::with_capacity(underlying.len() + 24);
        let _ = write!(
            key,
            "{underlying} {} {} {strike}",
            expiry.format("%Y%m%d"),
            right.as_char()
        );
        Ok(Self {
            key: ContractKey::derived(key),
            underlying,
            asset_class,
            expiry: Some(expiry),
            strike: Some(strike),
            right: Some(right),
            multiplier: check_multiplier(multiplier)?,
        })
    }

    pub fn future(
        underlying: &str,
        expiry: NaiveDate,
        multiplier: Decimal,
    ) -> Result<Self, ModelError> {
        let underlying = check_symbol(underlying)?;
        Ok(Self {
            key: ContractKey::derived(format!("{underlying} {} FUT", expiry.format("%Y%m%d"))),
            underlying,
            asset_class: AssetClass::Future,
            expiry: Some(expiry),
            strike: None,
            right: None,
            multiplier: check_multiplier(multiplier)?,
        })
    }

    pub fn perpetual(symbol: &str, multiplier: Decimal) -> Result<Self, ModelError> {
        let underlying = check_symbol(symbol)?;
        Ok(Self {
            key: ContractKey::derived(format!("{underlying} PERP")),
            underlying,
            asset_class: AssetClass::Perpetual,
            expiry: None,
            strike: None,
            right: None,
            multiplier: check_multiplier(multiplier)?,
        })
    }

    pub fn stock(symbol: &str) -> Result<Self, ModelError> {
        let underlying = check_symbol(symbol)?;
        Ok(Self {
            key: ContractKey::derived(underlying.clone()),
            underlying,
            asset_class: AssetClass::Stock,
            expiry: None,
            strike: None,
            right: None,
            multiplier: Decimal::ONE,
        })
    }
}

impl Contract {
    /// The canonical key (see the type's documentation).
    pub fn key(&self) -> &ContractKey {
        &self.key
    }

    pub fn underlying(&self) -> &str {
        &self.underlying
    }

    pub fn asset_class(&self) -> AssetClass {
        self.asset_class
    }

    pub fn expiry(&self) -> Option<NaiveDate> {
        self.expiry
    }

    pub fn strike(&self) -> Option<Decimal> {
        self.strike
    }

    pub fn right(&self) -> Option<OptionRight> {
        self.right
    }

    /// Units of the underlying per contract; always positive.
    pub fn multiplier(&self) -> Decimal {
        self.multiplier
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Which leg of a contract a position is. Venues hold one net position per
/// contract, except Binance in hedge mode, where one symbol has a LONG and a SHORT
/// leg side by side: two positions, never one overwriting the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PositionSide {
    #[default]
    Net,
    Long,
    Short,
}

impl PositionSide {
    pub const fn as_str(self) -> &'static str {
        match self {
            PositionSide::Net => "net",
            PositionSide::Long => "long",
            PositionSide::Short => "short",
        }
    }

    /// Binance's `positionSide` / `ps`: `BOTH` (one-way mode), `LONG`, `SHORT`.
    pub fn from_binance(side: &str) -> Result<Self, ModelError> {
        match side {
            "BOTH" | "" => Ok(PositionSide::Net),
            "LONG" => Ok(PositionSide::Long),
            "SHORT" => Ok(PositionSide::Short),
            other => Err(ModelError::InvalidPositionSide(other.to_owned())),
        }
    }
}

/// Where a row's Greeks came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreeksSource {
    Venue,
    Model,
}

impl GreeksSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            GreeksSource::Venue => "venue",
            GreeksSource::Model => "model",
        }
    }
}

/// A set of Greeks; each is `None` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Greeks {
    pub delta: Option<f64>,
    pub gamma: Option<f64>,
    pub theta: Option<f64>,
    pub vega: Option<f64>,
    pub rho: Option<f64>,
}

/// A finite value, or `None`. Venues send NaN, ±Infinity and `"NaN"` strings.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Greeks {
    /// Builds from raw venue values, mapping non-finite ones to `None`; the second
    /// value counts how many were dropped that way.
    pub fn from_raw(delta: f64, gamma: f64, theta: f64, vega: f64, rho: f64) -> (Self, u32) {
        let raw = [delta, gamma, theta, vega, rho];
        let dropped = raw.iter().filter(|x| !x.is_finite()).count() as u32;
        (
            Self {
                delta: finite(delta),
                gamma: finite(gamma),
                theta: finite(theta),
                vega: finite(vega),
                rho: finite(rho),
            },
            dropped,
        )
    }

    pub fn is_empty(&self) -> bool {
        *self == Greeks::default()
    }

    /// A linear instrument (stock, future, perpetual): delta 1 per unit, nothing else.
    pub const LINEAR: Greeks = Greeks {
        delta: Some(1.0),
        gamma: Some(0.0),
        theta: Some(0.0),
        vega: Some(0.0),
        rho: Some(0.0),
    };

    /// Position-level Greeks: quantity × multiplier × per-unit Greek.
    pub fn scaled(&self, quantity: Decimal, multiplier: Decimal) -> Self {
        // Checked: venue input must never be able to panic us (the normalizer refuses
        // a size that overflows, see `ModelError::SizeOverflow`).
        let factor = quantity.checked_mul(multiplier).and_then(|f| f.to_f64());
        let scale = |g: Option<f64>| Some(g? * factor?).and_then(finite);
        Self {
            delta: scale(self.delta),
            gamma: scale(self.gamma),
            theta: scale(self.theta),
            vega: scale(self.vega),
            rho: scale(self.rho),
        }
    }
}

/// The current holding of one contract in one account at one broker.
#[derive(Debug, Clone, PartialEq)]
pub struct UnifiedPosition {
    pub broker: Broker,
    pub account_id: AccountId,
    pub contract: Arc<Contract>,
    /// The leg (hedge mode); `Net` everywhere else.
    pub side: PositionSide,
    /// Signed: negative is short.
    pub quantity: Decimal,
}

/// One row of `greek_snapshots`: a position with its Greeks at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct GreekSnapshot {
    /// The venue's timestamp of the event.
    pub event_time: DateTime<Utc>,
    /// When the frame reached us.
    pub received_at: DateTime<Utc>,
    pub position: UnifiedPosition,
    pub mark_price: Option<f64>,
    pub underlying_price: Option<f64>,
    pub implied_vol: Option<f64>,
    /// Per unit of the contract.
    pub unit: Greeks,
    /// quantity × multiplier × unit.
    pub total: Greeks,
    pub greeks_source: Option<GreeksSource>,
    /// The venue's (or generator's) sequence number, where it has one.
    pub source_seq: Option<i64>,
}

impl GreekSnapshot {
    /// `quantity` of `contract` held in `account` at `broker`, at `at`, with per-unit
    /// Greeks `unit` as a venue sent them (position Greeks derived, no prices): the
    /// starting point of tests, benchmarks and examples, which set the rest. Test
    /// support only: behind the `testing` feature, never in the service build.
    #[cfg(any(test, feature = "testing"))]
    pub fn with_greeks(
        broker: Broker,
        account: AccountId,
        contract: Arc<Contract>,
        quantity: Decimal,
        unit: Greeks,
        at: DateTime<Utc>,
    ) -> Self {
        let total = unit.scaled(quantity, contract.multiplier);
        Self {
            event_time: at,
            received_at: at,
            position: UnifiedPosition {
                broker,
                account_id: account,
                contract,
                side: PositionSide::Net,
                quantity,
            },
            mark_price: None,
            underlying_price: None,
            implied_vol: None,
            unit,
            total,
            greeks_source: (!unit.is_empty()).then_some(GreeksSource::Venue),
            source_seq: None,
        }
    }

    pub fn broker(&self) -> Broker {
        self.position.broker
    }

    pub fn contract(&self) -> &Contract {
        &self.position.contract
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros_free::dec;

    /// Tiny stand-in for `rust_decimal_macros::dec!` so tests need no extra crate.
    mod rust_decimal_macros_free {
        macro_rules! dec {
            ($s:literal) => {
                <rust_decimal::Decimal as std::str::FromStr>::from_str(stringify!($s)).unwrap()
            };
        }
        pub(crate) use dec;
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn option_key_is_canonical() {
        let c = Contract::option(
            " spy ",
            AssetClass::Option,
            d(2026, 12, 18),
            OptionRight::Call,
            dec!(590.000),
            dec!(100),
        )
        .unwrap();
        assert_eq!(&*c.key, "SPY 20261218 C 590");
        assert_eq!(c.underlying, "SPY");
        let p = Contract::option(
            "SPX",
            AssetClass::Option,
            d(2027, 1, 15),
            OptionRight::Put,
            dec!(5912.50),
            dec!(100),
        )
        .unwrap();
        assert_eq!(&*p.key, "SPX 20270115 P 5912.5");
    }

    #[test]
    fn other_keys() {
        assert_eq!(
            &*Contract::future("es", d(2026, 12, 18), dec!(50))
                .unwrap()
                .key,
            "ES 20261218 FUT"
        );
        assert_eq!(
            &*Contract::perpetual("BTCUSDT", dec!(1)).unwrap().key,
            "BTCUSDT PERP"
        );
        assert_eq!(&*Contract::stock("aapl").unwrap().key, "AAPL");
    }

    #[test]
    fn invalid_contracts_are_errors() {
        let e = d(2026, 12, 18);
        let opt = |u: &str, k: Decimal, m: Decimal| {
            Contract::option(u, AssetClass::Option, e, OptionRight::Call, k, m)
        };
        assert_eq!(
            opt("", dec!(1), dec!(1)).unwrap_err().reason(),
            "invalid_symbol"
        );
        assert_eq!(
            opt("S P Y", dec!(1), dec!(1)).unwrap_err().reason(),
            "invalid_symbol"
        );
        assert_eq!(
            opt("SPY", dec!(0), dec!(1)).unwrap_err().reason(),
            "invalid_strike"
        );
        assert_eq!(
            opt("SPY", dec!(1), dec!(-100)).unwrap_err().reason(),
            "invalid_multiplier"
        );
        assert!(OptionRight::parse("X").is_err());
        assert_eq!(OptionRight::parse("PUT"), Ok(OptionRight::Put));
    }

    #[test]
    fn non_finite_greeks_become_none_and_are_counted() {
        let (g, dropped) = Greeks::from_raw(0.5, f64::NAN, -0.1, f64::INFINITY, 0.01);
        assert_eq!(dropped, 2);
        assert_eq!(g.delta, Some(0.5));
        assert_eq!(g.gamma, None);
        assert_eq!(g.vega, None);
    }

    #[test]
    fn position_greeks_are_qty_times_multiplier_times_unit() {
        let (g, _) = Greeks::from_raw(0.5, 0.02, -0.1, 0.3, 0.05);
        let p = g.scaled(dec!(-3), dec!(100));
        assert_eq!(p.delta, Some(-150.0));
        assert_eq!(p.gamma, Some(-6.0));
        assert!((p.theta.unwrap() - 30.0).abs() < 1e-9);
        assert!((p.vega.unwrap() + 90.0).abs() < 1e-9);
        assert_eq!(
            Greeks::default().scaled(dec!(5), dec!(100)),
            Greeks::default()
        );
    }

    proptest! {
        #[test]
        fn scaled_never_produces_non_finite(
            delta in proptest::num::f64::ANY,
            qty in -1_000_000i64..1_000_000,
            mult in 1i64..10_000,
        ) {
            let (g, _) = Greeks::from_raw(delta, delta, delta, delta, delta);
            let p = g.scaled(Decimal::from(qty), Decimal::from(mult));
            for v in [p.delta, p.gamma, p.theta, p.vega, p.rho].into_iter().flatten() {
                prop_assert!(v.is_finite());
            }
        }

        #[test]
        fn option_key_is_stable_under_strike_scale(strike in 1u32..100_000, extra_zeros in 0u32..4) {
            let k1 = Decimal::from(strike);
            let k2 = Decimal::new(strike as i64 * 10i64.pow(extra_zeros), extra_zeros);
            let e = d(2027, 3, 19);
            let a = Contract::option("QQQ", AssetClass::Option, e, OptionRight::Put, k1, Decimal::ONE_HUNDRED).unwrap();
            let b = Contract::option("QQQ", AssetClass::Option, e, OptionRight::Put, k2, Decimal::ONE_HUNDRED).unwrap();
            prop_assert_eq!(a.key, b.key);
        }
    }
}
