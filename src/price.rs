//! `greekstream price`: the local pricing model as a command for analysts. One JSON
//! object out, with price, Greeks (in the service's units) and the volatility used
//! or solved.

use clap::{Args, ValueEnum};
use model::pricing::{self, Inputs, Model, PricingError};
use model::OptionRight;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModelArg {
    Bsm,
    Black76,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RightArg {
    Call,
    Put,
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("volatility").required(true).args(["vol", "premium"]))]
pub struct PriceArgs {
    /// bsm: an equity or index option on `--spot`; black76: an option on a future
    /// whose price is `--spot`.
    #[arg(long, value_enum)]
    pub model: ModelArg,
    /// The underlying's price (the futures price for black76).
    #[arg(long, allow_negative_numbers = true)]
    pub spot: f64,
    #[arg(long, allow_negative_numbers = true)]
    pub strike: f64,
    /// Time to expiry in years (calendar days / 365).
    #[arg(long, allow_negative_numbers = true)]
    pub years: f64,
    /// Continuously compounded risk-free rate as a fraction (0.05 = 5%).
    #[arg(long, allow_negative_numbers = true)]
    pub rate: f64,
    /// Continuous dividend yield as a fraction (bsm only).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub dividend: f64,
    /// Volatility as a fraction (0.2 = 20%).
    #[arg(long, allow_negative_numbers = true)]
    pub vol: Option<f64>,
    /// Solve the implied volatility from this option price instead of giving `--vol`.
    #[arg(long, allow_negative_numbers = true)]
    pub premium: Option<f64>,
    #[arg(long, value_enum)]
    pub right: RightArg,
}

pub fn run(a: &PriceArgs) -> Result<Value, PricingError> {
    let mut inputs = Inputs {
        model: match a.model {
            ModelArg::Bsm => Model::Bsm,
            ModelArg::Black76 => Model::Black76,
        },
        right: match a.right {
            RightArg::Call => OptionRight::Call,
            RightArg::Put => OptionRight::Put,
        },
        spot: a.spot,
        strike: a.strike,
        years: a.years,
        rate: a.rate,
        dividend: a.dividend,
        vol: a.vol.unwrap_or(0.0),
    };
    if let Some(premium) = a.premium {
        inputs.vol = pricing::implied_vol(&inputs, premium)?;
    }
    let v = pricing::value(&inputs)?;
    Ok(json!({
        "model": inputs.model.as_str(),
        "right": if inputs.right == OptionRight::Call { "call" } else { "put" },
        "spot": inputs.spot, "strike": inputs.strike, "years": inputs.years,
        "rate": inputs.rate, "dividend": inputs.dividend,
        "vol": inputs.vol,
        "vol_source": if a.premium.is_some() { "implied" } else { "given" },
        "premium": a.premium,
        "price": v.price, "delta": v.delta, "gamma": v.gamma, "theta": v.theta,
        "vega": v.vega, "rho": v.rho,
        "units": {
            "delta": "per 1 unit of the underlying", "gamma": "per 1 unit of the underlying",
            "theta": "per calendar day", "vega": "per 1 volatility point (0.01)",
            "rho": "per 1 rate point (0.01)", "vol": "fraction (0.2 = 20%)"
        }
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        price: PriceArgs,
    }

    fn parse(args: &str) -> Result<PriceArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("price").chain(args.split_whitespace()))
            .map(|c| c.price)
    }

    #[test]
    fn prices_and_solves_back_its_own_vol() {
        let a = parse(
            "--model bsm --spot 42 --strike 40 --years 0.5 --rate 0.1 --vol 0.2 --right call",
        )
        .unwrap();
        let out = run(&a).unwrap();
        let price = out["price"].as_f64().unwrap();
        assert!((price - 4.76).abs() < 0.005, "{out}");
        assert_eq!(out["vol_source"], "given");
        let a = parse(&format!(
            "--model bsm --spot 42 --strike 40 --years 0.5 --rate 0.1 --premium {price} --right call"
        ))
        .unwrap();
        let out = run(&a).unwrap();
        assert!((out["vol"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{out}");
        assert_eq!(out["vol_source"], "implied");
    }

    #[test]
    fn bad_arguments_are_refused() {
        // Neither --vol nor --premium, and both.
        assert!(parse("--model bsm --spot 1 --strike 1 --years 1 --rate 0 --right call").is_err());
        assert!(parse("--model bsm --spot 1 --strike 1 --years 1 --rate 0 --vol 0.2 --premium 0.1 --right call").is_err());
        assert!(parse(
            "--model heston --spot 1 --strike 1 --years 1 --rate 0 --vol 0.2 --right call"
        )
        .is_err());
        let a =
            parse("--model black76 --spot -5 --strike 1 --years 1 --rate 0 --vol 0.2 --right put")
                .unwrap();
        let err = run(&a).unwrap_err();
        assert!(err.to_string().contains("spot"), "{err}");
        let a = parse(
            "--model bsm --spot 100 --strike 90 --years 1 --rate 0 --premium 200 --right call",
        )
        .unwrap();
        assert!(matches!(run(&a), Err(PricingError::NoSolution { .. })));
    }
}
