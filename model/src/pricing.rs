//! The local pricing model: Black-Scholes-Merton (equity and index options, with a
//! continuous dividend yield) and Black-76 (options on futures), their Greeks, and
//! implied volatility from a premium. Pure math on `f64`, no IO.
//!
//! Both models are the generalized Black-Scholes formula with cost of carry `b`:
//! `b = r − q` for BSM on a spot, `b = 0` for Black-76 on a forward. Units are the
//! service's: delta and gamma per 1 unit of the underlying, theta per calendar day
//! (year/365), vega per 1 volatility point (0.01), rho per 1 rate point (0.01).
//! Black-76's rho holds the futures price fixed (only discounting moves): −T·V.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use crate::contract::OptionRight;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Black-Scholes-Merton: `spot` is the underlying's price, `dividend` its yield.
    Bsm,
    /// Black-76: `spot` is the futures (forward) price; `dividend` must be 0.
    Black76,
}

impl Model {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bsm" | "black-scholes" | "blackscholes" => Some(Model::Bsm),
            "black76" | "black-76" | "black" => Some(Model::Black76),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Model::Bsm => "bsm",
            Model::Black76 => "black76",
        }
    }
}

/// What a valuation needs. Rates and yields are continuously compounded fractions
/// (0.05 = 5%); `years` is time to expiry in years (calendar days / 365).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    pub model: Model,
    pub right: OptionRight,
    pub spot: f64,
    pub strike: f64,
    pub years: f64,
    pub rate: f64,
    pub dividend: f64,
    pub vol: f64,
}

/// Price and Greeks per unit of the contract, in the service's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Valuation {
    pub price: f64,
    pub delta: f64,
    pub gamma: f64,
    pub theta: f64,
    pub vega: f64,
    pub rho: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    #[error("invalid {field} {value}: {rule}")]
    Invalid {
        field: &'static str,
        value: f64,
        rule: &'static str,
    },
    #[error("no volatility gives premium {premium}: it must lie in [{lower}, {upper})")]
    NoSolution {
        premium: f64,
        lower: f64,
        upper: f64,
    },
    #[error("implied volatility did not converge for premium {premium}")]
    NotConverged { premium: f64 },
}

fn check(
    field: &'static str,
    value: f64,
    ok: bool,
    rule: &'static str,
) -> Result<(), PricingError> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(PricingError::Invalid { field, value, rule })
    }
}

impl Inputs {
    fn validate(&self) -> Result<(), PricingError> {
        check("spot", self.spot, self.spot > 0.0, "must be > 0")?;
        check("strike", self.strike, self.strike > 0.0, "must be > 0")?;
        check("years", self.years, self.years >= 0.0, "must be >= 0")?;
        check("rate", self.rate, true, "must be finite")?;
        check("vol", self.vol, self.vol >= 0.0, "must be >= 0")?;
        match self.model {
            Model::Bsm => check("dividend", self.dividend, true, "must be finite"),
            Model::Black76 => check(
                "dividend",
                self.dividend,
                self.dividend == 0.0,
                "has no meaning for Black-76 (must be 0)",
            ),
        }
    }

    /// Cost of carry.
    fn carry(&self) -> f64 {
        match self.model {
            Model::Bsm => self.rate - self.dividend,
            Model::Black76 => 0.0,
        }
    }
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// Standard normal CDF through `erfc`, accurate in both tails.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// Price and Greeks. At expiry (`years` = 0) or with zero volatility the option is
/// worth its discounted intrinsic value on the forward, and the Greeks are that
/// function's derivatives (no gamma or vega; at the money delta is ½).
pub fn value(i: &Inputs) -> Result<Valuation, PricingError> {
    i.validate()?;
    let (s, k, t, r, v) = (i.spot, i.strike, i.years, i.rate, i.vol);
    let b = i.carry();
    let call = i.right == OptionRight::Call;
    let carry_df = ((b - r) * t).exp();
    let df = (-r * t).exp();
    // ∂b/∂r: BSM's carry moves with the rate, Black-76's forward does not.
    let db_dr = match i.model {
        Model::Bsm => 1.0,
        Model::Black76 => 0.0,
    };
    let sd = v * t.sqrt();
    if sd == 0.0 {
        let forward = s * (b * t).exp();
        let sign = if call { 1.0 } else { -1.0 };
        let itm = sign * (forward - k);
        let w = if itm > 0.0 {
            1.0
        } else if itm == 0.0 && t == 0.0 {
            0.5
        } else {
            0.0
        };
        let price = (sign * (s * carry_df - k * df)).max(0.0);
        let delta = w * sign * carry_df;
        let theta_year = w * sign * (-(b - r) * s * carry_df - r * k * df);
        let rho_unit = w * sign * t * (s * carry_df * (db_dr - 1.0) + k * df);
        return Ok(Valuation {
            price,
            delta,
            gamma: 0.0,
            theta: theta_year / 365.0,
            vega: 0.0,
            rho: rho_unit / 100.0,
        });
    }
    let d1 = ((s / k).ln() + (b + 0.5 * v * v) * t) / sd;
    let d2 = d1 - sd;
    let pdf = norm_pdf(d1);
    let decay = -s * carry_df * pdf * v / (2.0 * t.sqrt());
    let (price, delta, theta_year, rho_unit) = if call {
        let (n1, n2) = (norm_cdf(d1), norm_cdf(d2));
        let price = s * carry_df * n1 - k * df * n2;
        (
            price,
            carry_df * n1,
            decay - (b - r) * s * carry_df * n1 - r * k * df * n2,
            t * (s * carry_df * n1 * (db_dr - 1.0) + k * df * n2),
        )
    } else {
        let (n1, n2) = (norm_cdf(-d1), norm_cdf(-d2));
        let price = k * df * n2 - s * carry_df * n1;
        (
            price,
            -carry_df * n1,
            decay + (b - r) * s * carry_df * n1 + r * k * df * n2,
            -t * (s * carry_df * n1 * (db_dr - 1.0) + k * df * n2),
        )
    };
    Ok(Valuation {
        price,
        delta,
        gamma: carry_df * pdf / (s * sd),
        theta: theta_year / 365.0,
        vega: s * carry_df * pdf * t.sqrt() / 100.0,
        rho: rho_unit / 100.0,
    })
}

/// The volatility at which the model price equals `premium` (`i.vol` is ignored).
/// Newton steps on vega, kept inside a shrinking bracket by bisection, so it cannot
/// diverge; a premium outside the no-arbitrage bounds is an error, not a guess.
pub fn implied_vol(i: &Inputs, premium: f64) -> Result<f64, PricingError> {
    check("premium", premium, premium >= 0.0, "must be >= 0")?;
    let probe = Inputs { vol: 0.0, ..*i };
    let lower = value(&probe)?.price;
    let carry_df = ((i.carry() - i.rate) * i.years).exp();
    let upper = match i.right {
        OptionRight::Call => i.spot * carry_df,
        OptionRight::Put => i.strike * (-i.rate * i.years).exp(),
    };
    let no_solution = || PricingError::NoSolution {
        premium,
        lower,
        upper,
    };
    if i.years == 0.0 || premium < lower || premium >= upper {
        return Err(no_solution());
    }
    let tol = 1e-12 * upper.max(1.0);
    if premium - lower <= tol {
        return Err(no_solution());
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    let price_at = |v: f64| value(&Inputs { vol: v, ..*i });
    while price_at(hi)?.price < premium {
        hi *= 2.0;
        if hi > 1e3 {
            return Err(no_solution());
        }
    }
    // Brenner–Subrahmanyam's at-the-money guess, inside the bracket.
    let mut v = (premium / upper * (2.0 * PI / i.years).sqrt()).clamp(0.01, hi);
    for _ in 0..200 {
        let val = price_at(v)?;
        let diff = val.price - premium;
        if diff.abs() <= tol {
            return Ok(v);
        }
        if diff > 0.0 {
            hi = v;
        } else {
            lo = v;
        }
        let vega = val.vega * 100.0;
        let newton = v - diff / vega;
        v = if vega > 1e-300 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if hi - lo <= 1e-15 * hi {
            return Ok(v);
        }
    }
    Err(PricingError::NotConverged { premium })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn inputs(
        model: Model,
        right: OptionRight,
        s: f64,
        k: f64,
        t: f64,
        r: f64,
        q: f64,
        v: f64,
    ) -> Inputs {
        Inputs {
            model,
            right,
            spot: s,
            strike: k,
            years: t,
            rate: r,
            dividend: q,
            vol: v,
        }
    }

    /// Every row of a QuantLib-generated table (see `testdata/README.md`): price and
    /// all five Greeks agree to 1e-6 (relative above 1).
    #[test]
    fn agrees_with_quantlib_on_the_reference_grid() {
        let table = include_str!("../testdata/pricing_reference.csv");
        let mut rows = 0;
        for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(',').collect();
            let n = |i: usize| f[i].parse::<f64>().unwrap();
            let model = Model::parse(f[0]).unwrap();
            let right = OptionRight::parse(f[1]).unwrap();
            let i = inputs(model, right, n(2), n(3), n(4), n(5), n(6), n(7));
            let got = value(&i).unwrap();
            let want = [n(8), n(9), n(10), n(11), n(12), n(13)];
            let ours = [
                got.price, got.delta, got.gamma, got.theta, got.vega, got.rho,
            ];
            for (name, (a, b)) in ["price", "delta", "gamma", "theta", "vega", "rho"]
                .iter()
                .zip(ours.iter().zip(want))
            {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{name}: ours {a} vs QuantLib {b} on {line}"
                );
            }
            rows += 1;
        }
        assert!(rows > 1000, "only {rows} reference rows");
    }

    #[test]
    fn hulls_worked_examples() {
        // Hull, Options, Futures and Other Derivatives (10th ed.), example 15.6:
        // S=42, K=40, T=0.5, r=10%, σ=20% → call 4.76, put 0.81.
        let hull = |right| value(&inputs(Model::Bsm, right, 42.0, 40.0, 0.5, 0.1, 0.0, 0.2));
        let (c, p) = (
            hull(OptionRight::Call).unwrap(),
            hull(OptionRight::Put).unwrap(),
        );
        assert!((c.price - 4.76).abs() < 0.005 && (p.price - 0.81).abs() < 0.005);
        // Example 18.8 (Black-76): F=20, K=20, r=9%, T=4/12, σ=25% → put 1.12.
        let f = value(&inputs(
            Model::Black76,
            OptionRight::Put,
            20.0,
            20.0,
            4.0 / 12.0,
            0.09,
            0.0,
            0.25,
        ))
        .unwrap();
        assert!((f.price - 1.12).abs() < 0.005, "{}", f.price);
    }

    #[test]
    fn black76_rho_is_minus_t_times_value_and_matches_a_bump() {
        let i = inputs(
            Model::Black76,
            OptionRight::Call,
            100.0,
            95.0,
            0.75,
            0.04,
            0.0,
            0.3,
        );
        let v = value(&i).unwrap();
        assert!((v.rho - (-0.75 * v.price / 100.0)).abs() < 1e-12);
        let h = 1e-6;
        let up = value(&Inputs {
            rate: 0.04 + h,
            ..i
        })
        .unwrap()
        .price;
        let dn = value(&Inputs {
            rate: 0.04 - h,
            ..i
        })
        .unwrap()
        .price;
        assert!(((up - dn) / (2.0 * h) / 100.0 - v.rho).abs() < 1e-6);
    }

    #[test]
    fn expiry_zero_vol_and_the_wings_behave() {
        let at =
            |s, t, v, right| value(&inputs(Model::Bsm, right, s, 100.0, t, 0.05, 0.0, v)).unwrap();
        let c = at(110.0, 0.0, 0.3, OptionRight::Call);
        assert_eq!((c.price, c.delta, c.gamma, c.vega), (10.0, 1.0, 0.0, 0.0));
        let p = at(110.0, 0.0, 0.3, OptionRight::Put);
        assert_eq!((p.price, p.delta), (0.0, 0.0));
        assert_eq!(at(100.0, 0.0, 0.3, OptionRight::Call).delta, 0.5);
        // Zero vol: the discounted forward intrinsic.
        let z = at(100.0, 1.0, 0.0, OptionRight::Call);
        assert!((z.price - (100.0 - 100.0 * (-0.05f64).exp())).abs() < 1e-12);
        assert_eq!((z.delta, z.gamma, z.vega), (1.0, 0.0, 0.0));
        // Deep in and out of the money: finite, bounded, no NaN.
        for s in [1e-6, 1.0, 1e6] {
            for right in [OptionRight::Call, OptionRight::Put] {
                let v = at(s, 2.0, 0.4, right);
                for g in [v.price, v.delta, v.gamma, v.theta, v.vega, v.rho] {
                    assert!(g.is_finite(), "{s} {right:?} {v:?}");
                }
                assert!(v.delta.abs() <= 1.0 && v.price >= 0.0);
            }
        }
        // Put-call parity.
        let (c, p) = (
            at(97.0, 0.5, 0.25, OptionRight::Call),
            at(97.0, 0.5, 0.25, OptionRight::Put),
        );
        assert!((c.price - p.price - (97.0 - 100.0 * (-0.025f64).exp())).abs() < 1e-10);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let ok = inputs(
            Model::Bsm,
            OptionRight::Call,
            100.0,
            100.0,
            1.0,
            0.0,
            0.0,
            0.2,
        );
        for (bad, field) in [
            (Inputs { spot: 0.0, ..ok }, "spot"),
            (Inputs { strike: -1.0, ..ok }, "strike"),
            (Inputs { years: -0.1, ..ok }, "years"),
            (
                Inputs {
                    vol: f64::NAN,
                    ..ok
                },
                "vol",
            ),
            (
                Inputs {
                    rate: f64::INFINITY,
                    ..ok
                },
                "rate",
            ),
            (
                Inputs {
                    model: Model::Black76,
                    dividend: 0.01,
                    ..ok
                },
                "dividend",
            ),
        ] {
            match value(&bad) {
                Err(PricingError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn implied_vol_round_trips_across_the_grid() {
        let mut worst: f64 = 0.0;
        for model in [Model::Bsm, Model::Black76] {
            for right in [OptionRight::Call, OptionRight::Put] {
                for k in [50.0, 80.0, 95.0, 100.0, 105.0, 125.0, 200.0] {
                    for t in [7.0 / 365.0, 0.25, 1.0, 3.0] {
                        for v in [0.05, 0.2, 0.6, 1.5] {
                            let q = if model == Model::Bsm { 0.01 } else { 0.0 };
                            let i = inputs(model, right, 100.0, k, t, 0.03, q, v);
                            let p = value(&i).unwrap();
                            // Far wings carry no volatility information at f64 precision.
                            if p.vega * 100.0 < 1e-6 {
                                continue;
                            }
                            let got = implied_vol(&i, p.price).unwrap();
                            worst = worst.max((got - v).abs());
                        }
                    }
                }
            }
        }
        assert!(worst < 1e-7, "worst IV error {worst}");
    }

    #[test]
    fn impossible_premiums_have_no_solution() {
        let i = inputs(
            Model::Bsm,
            OptionRight::Call,
            100.0,
            90.0,
            1.0,
            0.0,
            0.0,
            0.0,
        );
        // Below intrinsic, above the spot, and at expiry.
        assert!(matches!(
            implied_vol(&i, 5.0),
            Err(PricingError::NoSolution { .. })
        ));
        assert!(matches!(
            implied_vol(&i, 100.0),
            Err(PricingError::NoSolution { .. })
        ));
        let expired = Inputs { years: 0.0, ..i };
        assert!(matches!(
            implied_vol(&expired, 12.0),
            Err(PricingError::NoSolution { .. })
        ));
        assert!(matches!(
            implied_vol(&i, -1.0),
            Err(PricingError::Invalid { .. })
        ));
    }
}
