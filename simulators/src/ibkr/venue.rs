//! The simulated venue: instruments (stocks and options by conid), holdings per
//! account, and the prices and Greeks that the seeded walk moves.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Stock,
    Option {
        underlying: usize,
        expiry: NaiveDate,
        right: char,
        strike: f64,
        vol: f64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Instrument {
    pub(super) conid: i64,
    pub(super) symbol: &'static str,
    pub(super) underlying: usize,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone)]
pub(super) struct Holding {
    pub(super) account: usize,
    pub(super) instrument: usize,
    pub(super) quantity: i64,
}

pub(super) const UNDERLYINGS: [(&str, i64, f64); 3] = [
    ("SPY", 756733, 590.0),
    ("QQQ", 320227571, 510.0),
    ("AAPL", 265598, 230.0),
];
pub(super) const RATE: f64 = 0.04;

/// The portfolio and its deterministic price process.
pub(super) struct Venue {
    pub(super) instruments: Vec<Instrument>,
    pub(super) by_conid: HashMap<i64, usize>,
    pub(super) holdings: RwLock<Vec<Holding>>,
    pub(super) market: RwLock<RandomWalk>,
    /// Per underlying: whether its options carry Greeks and IV.
    pub(super) analytics: Vec<bool>,
}

impl Venue {
    pub(super) fn new(cfg: &IbkrSimConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let mut instruments = Vec::new();
        for (i, (symbol, conid, _)) in UNDERLYINGS.iter().enumerate() {
            instruments.push(Instrument {
                conid: *conid,
                symbol,
                underlying: i,
                kind: Kind::Stock,
            });
        }
        let mut next_conid = 700_000_001;
        for (i, (symbol, _, spot)) in UNDERLYINGS.iter().enumerate() {
            for k in 0..cfg.options_per_underlying {
                let days = if k % 2 == 0 { 30 } else { 58 };
                let moneyness = [0.9, 0.95, 1.0, 1.05, 1.1][rng.below(5)];
                let strike = (spot * moneyness / 5.0).round() * 5.0;
                instruments.push(Instrument {
                    conid: next_conid,
                    symbol,
                    underlying: i,
                    kind: Kind::Option {
                        underlying: i,
                        expiry: cfg.today + chrono::Days::new(days),
                        right: if k % 3 == 0 { 'P' } else { 'C' },
                        strike,
                        vol: rng.uniform(0.15, 0.35),
                    },
                });
                next_conid += 1;
            }
        }
        let mut holdings = Vec::new();
        for account in 0..cfg.accounts.len() {
            for (idx, inst) in instruments.iter().enumerate() {
                let quantity = match inst.kind {
                    Kind::Stock => 100 * (1 + rng.below(5) as i64),
                    Kind::Option { .. } => {
                        let q = 1 + rng.below(5) as i64;
                        if rng.next_f64() < 0.4 {
                            -q
                        } else {
                            q
                        }
                    }
                };
                holdings.push(Holding {
                    account,
                    instrument: idx,
                    quantity,
                });
            }
        }
        let by_conid = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.conid, i))
            .collect();
        Self {
            instruments,
            by_conid,
            holdings: RwLock::new(holdings),
            analytics: UNDERLYINGS
                .iter()
                .map(|(u, _, _)| !cfg.no_option_analytics.iter().any(|x| x == u))
                .collect(),
            market: RwLock::new(RandomWalk::new(
                rng,
                UNDERLYINGS.iter().map(|u| u.2).collect(),
            )),
        }
    }

    pub(super) fn holdings(&self) -> std::sync::RwLockReadGuard<'_, Vec<Holding>> {
        self.holdings.read().expect("holdings lock")
    }

    pub(super) fn step(&self) -> u64 {
        self.market.write().expect("market lock").advance()
    }

    /// The current field values of one instrument, as the gateway formats them.
    pub(super) fn fields(&self, idx: usize, today: NaiveDate) -> [Option<String>; 9] {
        let inst = &self.instruments[idx];
        let spot = self.market.read().expect("market lock").spots[inst.underlying];
        let mut out: [Option<String>; 9] = Default::default();
        let mut set = |f: MdField, v: String| out[f as usize] = Some(v);
        match &inst.kind {
            Kind::Stock => {
                set(MdField::Last, format!("{spot:.2}"));
                set(MdField::Bid, format!("{:.2}", spot - 0.01));
                set(MdField::Ask, format!("{:.2}", spot + 0.01));
                set(MdField::Mark, format!("{spot:.2}"));
            }
            Kind::Option {
                underlying,
                expiry,
                right,
                strike,
                vol,
            } => {
                let years = ((*expiry - today).num_days().max(0) as f64 + 0.5) / 365.0;
                let g = bsm(spot, *strike, years, RATE, *vol, *right == 'C');
                let half_spread = (g.price * 0.01).max(0.01);
                set(MdField::Last, format!("{:.2}", g.price));
                set(
                    MdField::Bid,
                    format!("{:.2}", (g.price - half_spread).max(0.0)),
                );
                set(MdField::Ask, format!("{:.2}", g.price + half_spread));
                set(MdField::Mark, format!("{:.2}", g.price));
                if !self.analytics[*underlying] {
                    return out;
                }
                set(MdField::Delta, format!("{:.4}", g.delta));
                set(MdField::Gamma, format!("{:.4}", g.gamma));
                set(MdField::Theta, format!("{:.4}", g.theta_day));
                set(MdField::Vega, format!("{:.4}", g.vega_point));
                set(MdField::ImpliedVol, format!("{:.1}%", vol * 100.0));
            }
        }
        out
    }

    pub(super) fn position_row(&self, h: &Holding, account: &str) -> Value {
        let inst = &self.instruments[h.instrument];
        let spot = self.market.read().expect("market lock").spots[inst.underlying];
        match &inst.kind {
            Kind::Stock => json!({
                "acctId": account, "conid": inst.conid, "contractDesc": inst.symbol,
                "assetClass": "STK", "position": h.quantity as f64, "mktPrice": spot,
                "mktValue": spot * h.quantity as f64, "currency": "USD", "avgCost": spot,
                "avgPrice": spot, "realizedPnl": 0.0, "unrealizedPnl": 0.0, "expiry": null,
                "putOrCall": null, "strike": "0", "multiplier": null, "undConid": 0,
                "ticker": inst.symbol, "undSym": null, "fullName": inst.symbol,
                "pageSize": 30, "model": ""
            }),
            Kind::Option {
                expiry,
                right,
                strike,
                ..
            } => json!({
                "acctId": account, "conid": inst.conid,
                "contractDesc": format!("{} {} {} {}", inst.symbol,
                    expiry.format("%b%Y").to_string().to_uppercase(), strike, right),
                "assetClass": "OPT", "position": h.quantity as f64, "mktPrice": 0.0,
                "mktValue": 0.0, "currency": "USD", "avgCost": 0.0, "avgPrice": 0.0,
                "realizedPnl": 0.0, "unrealizedPnl": 0.0,
                "expiry": expiry.format("%Y%m%d").to_string(), "putOrCall": right.to_string(),
                "strike": strike, "multiplier": 100.0, "exerciseStyle": "AMERICAN",
                "undConid": UNDERLYINGS[inst.underlying].1, "ticker": inst.symbol,
                "undSym": inst.symbol, "pageSize": 30, "model": ""
            }),
        }
    }
}
