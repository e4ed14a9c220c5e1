//! The simulated venue: instruments (stocks and OCC options on three underlyings), each
//! account's holdings, and the DXLink field values priced off the seeded walk.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Stock,
    Option {
        symbol: OptionSymbol,
        strike: f64,
        vol: f64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Instrument {
    /// OCC for options, the ticker for stocks.
    pub(super) symbol: String,
    /// The DXLink symbol.
    pub(super) streamer: String,
    pub(super) underlying: usize,
    pub(super) kind: Kind,
}

pub(super) const UNDERLYINGS: [(&str, f64); 3] = [("SPY", 590.0), ("QQQ", 510.0), ("AAPL", 230.0)];
pub(super) const RATE: f64 = 0.04;

pub(super) struct Venue {
    pub(super) instruments: Vec<Instrument>,
    pub(super) by_streamer: HashMap<String, usize>,
    pub(super) by_symbol: HashMap<String, usize>,
    /// Signed quantity per (account index, instrument index).
    pub(super) holdings: RwLock<Vec<Vec<i64>>>,
    pub(super) market: RwLock<RandomWalk>,
}

impl Venue {
    pub(super) fn new(cfg: &TastytradeSimConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let mut instruments: Vec<Instrument> = UNDERLYINGS
            .iter()
            .enumerate()
            .map(|(i, (sym, _))| Instrument {
                symbol: (*sym).to_owned(),
                streamer: (*sym).to_owned(),
                underlying: i,
                kind: Kind::Stock,
            })
            .collect();
        for (i, (root, spot)) in UNDERLYINGS.iter().enumerate() {
            for k in 0..cfg.options_per_underlying {
                let days = if k % 2 == 0 { 30 } else { 58 };
                let moneyness = [0.9, 0.95, 1.0, 1.05, 1.1][rng.below(5)];
                let strike =
                    (spot * moneyness / 5.0).round() * 5.0 + if k >= 5 { 2.5 } else { 0.0 };
                let symbol = OptionSymbol {
                    root: (*root).to_owned(),
                    expiry: cfg.today + chrono::Days::new(days),
                    right: if k % 3 == 0 { 'P' } else { 'C' },
                    strike: Decimal::try_from(strike).unwrap_or(Decimal::ONE),
                };
                instruments.push(Instrument {
                    symbol: symbol.to_occ(),
                    streamer: symbol.to_dxfeed(),
                    underlying: i,
                    kind: Kind::Option {
                        symbol,
                        strike,
                        vol: rng.uniform(0.15, 0.35),
                    },
                });
            }
        }
        let holdings = (0..cfg.accounts.len())
            .map(|_| {
                instruments
                    .iter()
                    .map(|inst| match inst.kind {
                        Kind::Stock => 100 * (1 + rng.below(5) as i64),
                        Kind::Option { .. } => {
                            let q = 1 + rng.below(5) as i64;
                            if rng.next_f64() < 0.4 {
                                -q
                            } else {
                                q
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        let by_streamer = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.streamer.clone(), i))
            .collect();
        let by_symbol = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.symbol.clone(), i))
            .collect();
        Self {
            instruments,
            by_streamer,
            by_symbol,
            holdings: RwLock::new(holdings),
            market: RwLock::new(RandomWalk::new(
                rng,
                UNDERLYINGS.iter().map(|u| u.1).collect(),
            )),
        }
    }

    pub(super) fn spot(&self, underlying: usize) -> f64 {
        self.market.read().expect("market lock").spots[underlying]
    }

    pub(super) fn quantity(&self, account: usize, instrument: usize) -> i64 {
        self.holdings.read().expect("holdings lock")[account][instrument]
    }

    /// A position row as `GET /accounts/{n}/positions` returns it.
    pub(super) fn position_row(&self, account: &str, account_idx: usize, idx: usize) -> Value {
        let inst = &self.instruments[idx];
        let qty = self.quantity(account_idx, idx);
        let direction = match qty.signum() {
            1 => "Long",
            -1 => "Short",
            _ => "Zero",
        };
        let (kind, multiplier, expires) = match &inst.kind {
            Kind::Stock => ("Equity", 1, Value::Null),
            Kind::Option { symbol, .. } => (
                "Equity Option",
                100,
                json!(format!("{}T20:15:00.000+00:00", symbol.expiry)),
            ),
        };
        let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string();
        json!({
            "account-number": account, "symbol": inst.symbol, "instrument-type": kind,
            "underlying-symbol": UNDERLYINGS[inst.underlying].0, "streamer-symbol": inst.streamer,
            "quantity": qty.abs().to_string(), "quantity-direction": direction,
            "close-price": "0.0", "average-open-price": "0.0", "multiplier": multiplier,
            "cost-effect": if qty < 0 { "Credit" } else { "Debit" }, "is-suppressed": false,
            "is-frozen": false, "realized-day-gain": "0.0", "realized-day-gain-effect": "None",
            "realized-today": "0.0", "realized-today-effect": "None", "expires-at": expires,
            "created-at": now, "updated-at": now
        })
    }

    /// The value of one dxFeed field of one event; `None` if the symbol is unknown.
    pub(super) fn field(
        &self,
        event_type: &str,
        idx: usize,
        field: &str,
        today: NaiveDate,
        nan: bool,
    ) -> Value {
        let inst = &self.instruments[idx];
        let spot = self.spot(inst.underlying);
        let now = Utc::now().timestamp_millis();
        let num = |x: f64| json!((x * 1e6).round() / 1e6);
        let (price, greeks) = match &inst.kind {
            Kind::Stock => (spot, None),
            Kind::Option {
                symbol,
                strike,
                vol,
            } => {
                let years = ((symbol.expiry - today).num_days().max(0) as f64 + 0.5) / 365.0;
                let g = bsm(spot, *strike, years, RATE, *vol, symbol.right == 'C');
                (g.price, Some((g, *vol)))
            }
        };
        let half_spread = (price * 0.0005).max(0.01);
        match (event_type, field) {
            (_, "eventType") => json!(event_type),
            (_, "eventSymbol") => json!(inst.streamer),
            (_, "eventTime" | "eventFlags" | "sequence" | "timeNanoPart") => json!(0),
            ("Greeks", "index") => json!(now << 22),
            ("Greeks", "time") | ("Quote", "bidTime" | "askTime") => json!(now),
            ("Greeks", "price") => num(price),
            ("Greeks", "volatility") => greeks.map_or(json!("NaN"), |(_, v)| num(v)),
            ("Greeks", "delta" | "vega") if nan => json!("NaN"),
            ("Greeks", f) => match (greeks, f) {
                (Some((g, _)), "delta") => num(g.delta),
                (Some((g, _)), "gamma") => num(g.gamma),
                (Some((g, _)), "theta") => num(g.theta_day),
                (Some((g, _)), "vega") => num(g.vega_point),
                (Some((g, _)), "rho") => num(g.rho_point),
                _ => json!("NaN"),
            },
            ("Quote", "bidExchangeCode" | "askExchangeCode") => json!("Q"),
            ("Quote", "bidPrice") => num((price - half_spread).max(0.01)),
            ("Quote", "askPrice") => num(price + half_spread),
            ("Quote", "bidSize" | "askSize") => json!(10),
            _ => json!("NaN"),
        }
    }
}
