//! The synthetic source: a seeded, deterministic option portfolio (accounts ×
//! contracts) that feeds the pipeline the way a broker does. It is the load
//! generator for benchmarks and the data a new user sees with no broker configured.
//!
//! Paced at a fixed rate, event `i` is due at `start + i / rate` and is stamped
//! `received_at` with that due instant, not with the instant it was actually sent:
//! a pipeline that falls behind or pushes back then shows it as latency instead of
//! hiding it (the peer design's mistake).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::{Broker, BrokerEvent, BrokerPayload};
use crate::rng::SplitMix64;

pub use crate::event::{SyntheticTick, TickGreeks};

#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    pub seed: u64,
    pub accounts: usize,
    /// (symbol, starting spot)
    pub underlyings: Vec<(String, f64)>,
    /// Expiries are this many days after `base_date`.
    pub expiry_days: Vec<u64>,
    /// Strikes as fractions of the starting spot.
    pub moneyness: Vec<f64>,
    pub base_date: NaiveDate,
    /// Events per second; `None` sends as fast as the pipeline takes them.
    pub rate: Option<f64>,
    /// Stop after this many events.
    pub limit: Option<u64>,
    /// Stop once this much schedule time has gone by.
    pub duration: Option<Duration>,
    /// Fraction of events that are deliberately bad (NaN Greeks, missing symbol).
    pub bad_ratio: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            accounts: 4,
            underlyings: [
                ("SPY", 590.0),
                ("QQQ", 510.0),
                ("AAPL", 230.0),
                ("TSLA", 340.0),
                ("NVDA", 140.0),
            ]
            .into_iter()
            .map(|(s, p)| (s.to_owned(), p))
            .collect(),
            expiry_days: vec![30, 90, 180],
            moneyness: vec![0.9, 0.95, 1.0, 1.05, 1.1],
            base_date: Utc::now().date_naive(),
            rate: Some(100.0),
            limit: None,
            duration: None,
            bad_ratio: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Contract {
    underlying: usize,
    expiry: NaiveDate,
    years: f64,
    right: char,
    strike: Decimal,
    strike_f: f64,
}

/// The deterministic part: the same seed and config give the same ticks, whatever
/// the timing.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: SplitMix64,
    accounts: Vec<Arc<str>>,
    symbols: Vec<Arc<str>>,
    spots: Vec<f64>,
    contracts: Vec<Contract>,
    /// Signed quantity per (account, contract), index `a * contracts + c`.
    positions: Vec<i64>,
    bad_ratio: f64,
    seq: u64,
}

const MULTIPLIER: Decimal = Decimal::from_parts(100, 0, 0, false, 0);

impl Generator {
    pub fn new(cfg: &SyntheticConfig) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let accounts: Vec<Arc<str>> = (0..cfg.accounts.max(1))
            .map(|n| Arc::from(format!("SIM{:05}", n + 1)))
            .collect();
        let symbols = cfg
            .underlyings
            .iter()
            .map(|(s, _)| Arc::from(s.as_str()))
            .collect();
        let spots: Vec<f64> = cfg.underlyings.iter().map(|(_, p)| *p).collect();
        let mut contracts = Vec::new();
        for (u, spot) in spots.iter().enumerate() {
            for &days in &cfg.expiry_days {
                let expiry = cfg.base_date + Days::new(days);
                for right in ['C', 'P'] {
                    for m in &cfg.moneyness {
                        let strike_f = (spot * m).round();
                        contracts.push(Contract {
                            underlying: u,
                            expiry,
                            years: days as f64 / 365.0,
                            right,
                            strike: Decimal::from(strike_f as i64),
                            strike_f,
                        });
                    }
                }
            }
        }
        let positions = (0..accounts.len() * contracts.len())
            .map(|_| {
                let q = rng.below(100) as i64 - 50;
                if q == 0 {
                    1
                } else {
                    q
                }
            })
            .collect();
        Self {
            rng,
            accounts,
            symbols,
            spots,
            contracts,
            positions,
            bad_ratio: cfg.bad_ratio,
            seq: 0,
        }
    }

    pub fn accounts(&self) -> &[Arc<str>] {
        &self.accounts
    }

    /// Number of distinct (account, contract) positions the generator cycles through.
    pub fn position_count(&self) -> usize {
        self.positions.len()
    }

    pub fn next_tick(&mut self, event_time: DateTime<Utc>) -> (Arc<str>, SyntheticTick) {
        let rng = &mut self.rng;
        let a = rng.below(self.accounts.len());
        let c = rng.below(self.contracts.len());
        let contract = &self.contracts[c];
        let spot = &mut self.spots[contract.underlying];
        *spot *= (0.0005 * rng.normal()).exp();
        let slot = a * self.contracts.len() + c;
        // An occasional trade changes the position.
        if rng.next_f64() < 0.01 {
            let q = self.positions[slot] + rng.below(11) as i64 - 5;
            self.positions[slot] = if q == 0 { 1 } else { q };
        }
        let vol = 0.2 + 0.3 * rng.next_f64();
        let mut greeks = approx_greeks(*spot, contract, vol);
        let mut symbol = Some(self.symbols[contract.underlying].clone());
        if self.bad_ratio > 0.0 && rng.next_f64() < self.bad_ratio {
            if rng.next_f64() < 0.5 {
                greeks.delta = f64::NAN;
                greeks.vega = f64::INFINITY;
            } else {
                symbol = None;
            }
        }
        let tick = SyntheticTick {
            seq: self.seq,
            event_time,
            symbol,
            expiry: contract.expiry,
            right: contract.right,
            strike: contract.strike,
            multiplier: MULTIPLIER,
            position: Decimal::from(self.positions[slot]),
            // About 5% of messages arrive before the venue has Greeks (no quote yet).
            greeks: (rng.next_f64() >= 0.05).then_some(greeks),
        };
        self.seq += 1;
        (self.accounts[a].clone(), tick)
    }
}

/// Cheap Black-Scholes-shaped values (logistic approximation of N(x)): plausible
/// numbers for a load generator, not a pricing model.
fn approx_greeks(spot: f64, c: &Contract, vol: f64) -> TickGreeks {
    let t = c.years.max(1.0 / 365.0);
    let sqrt_t = t.sqrt();
    let d1 = ((spot / c.strike_f).ln() + 0.5 * vol * vol * t) / (vol * sqrt_t);
    let n_d1 = 1.0 / (1.0 + (-1.702 * d1).exp());
    let pdf = (-0.5 * d1 * d1).exp() / (std::f64::consts::TAU).sqrt();
    let call_delta = n_d1;
    let (delta, intrinsic) = if c.right == 'C' {
        (call_delta, (spot - c.strike_f).max(0.0))
    } else {
        (call_delta - 1.0, (c.strike_f - spot).max(0.0))
    };
    let time_value = 0.4 * spot * vol * sqrt_t * pdf * 2.5;
    TickGreeks {
        price: intrinsic + time_value,
        underlying_price: spot,
        implied_vol: vol,
        delta,
        gamma: pdf / (spot * vol * sqrt_t),
        theta: -spot * pdf * vol / (2.0 * sqrt_t) / 365.0,
        vega: spot * pdf * sqrt_t / 100.0,
        rho: delta * c.strike_f * t / 100.0 * 0.5,
    }
}

/// How a run of the source ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceReport {
    pub events_sent: u64,
}

/// Feeds `tx` until the limit or duration is reached, `cancel` fires, or the
/// receiver is gone. A full channel blocks us (backpressure); nothing is dropped.
pub async fn run_synthetic(
    cfg: SyntheticConfig,
    tx: mpsc::Sender<BrokerEvent>,
    cancel: CancellationToken,
) -> SourceReport {
    let mut generator = Generator::new(&cfg);
    let start = Instant::now();
    let wall_start = Utc::now();
    let limit = cfg.limit.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    while sent < limit && !cancel.is_cancelled() {
        let received_at = match cfg.rate {
            Some(rate) => {
                let offset = Duration::from_secs_f64(sent as f64 / rate);
                if cfg.duration.is_some_and(|d| offset >= d) {
                    break;
                }
                let due = start + offset;
                if due > Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = cancel.cancelled() => break,
                    }
                }
                wall_start + offset
            }
            None => {
                if cfg.duration.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                Utc::now()
            }
        };
        let (account, tick) = generator.next_tick(received_at);
        let event = BrokerEvent {
            broker: Broker::Synthetic,
            account,
            received_at,
            payload: BrokerPayload::Synthetic(tick),
        };
        tokio::select! {
            res = tx.send(event) => if res.is_err() { break },
            _ = cancel.cancelled() => break,
        }
        sent += 1;
    }
    SourceReport { events_sent: sent }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SyntheticConfig {
        SyntheticConfig {
            base_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn same_seed_same_ticks() {
        let t = Utc::now();
        let mut a = Generator::new(&cfg());
        let mut b = Generator::new(&cfg());
        for _ in 0..500 {
            assert_eq!(a.next_tick(t), b.next_tick(t));
        }
        let mut c = Generator::new(&SyntheticConfig { seed: 2, ..cfg() });
        let differs = (0..50).any(|_| a.next_tick(t) != c.next_tick(t));
        assert!(differs, "a different seed must give a different stream");
    }

    #[test]
    fn portfolio_shape_and_plausible_greeks() {
        let mut g = Generator::new(&cfg());
        assert_eq!(g.position_count(), 4 * 5 * 3 * 2 * 5);
        for _ in 0..2000 {
            let (_, tick) = g.next_tick(Utc::now());
            assert!(tick.symbol.is_some());
            assert_ne!(tick.position, Decimal::ZERO);
            if let Some(gr) = tick.greeks {
                match tick.right {
                    'C' => assert!((0.0..=1.0).contains(&gr.delta)),
                    'P' => assert!((-1.0..=0.0).contains(&gr.delta)),
                    other => panic!("bad right {other}"),
                }
                assert!(gr.gamma >= 0.0 && gr.vega >= 0.0 && gr.theta <= 0.0);
                assert!(gr.price >= 0.0);
            }
        }
    }

    #[test]
    fn bad_ratio_produces_bad_ticks() {
        let mut g = Generator::new(&SyntheticConfig {
            bad_ratio: 0.5,
            ..cfg()
        });
        let ticks: Vec<_> = (0..1000).map(|_| g.next_tick(Utc::now()).1).collect();
        assert!(ticks.iter().any(|t| t.symbol.is_none()));
        assert!(ticks
            .iter()
            .any(|t| t.greeks.is_some_and(|g| g.delta.is_nan())));
    }

    #[tokio::test(start_paused = true)]
    async fn paced_source_stamps_the_schedule_and_stops_at_the_limit() {
        let (tx, mut rx) = mpsc::channel(1024);
        let run = tokio::spawn(run_synthetic(
            SyntheticConfig {
                rate: Some(10.0),
                limit: Some(25),
                ..cfg()
            },
            tx,
            CancellationToken::new(),
        ));
        let mut stamps = Vec::new();
        while let Some(ev) = rx.recv().await {
            stamps.push(ev.received_at);
        }
        assert_eq!(run.await.unwrap().events_sent, 25);
        assert_eq!(stamps.len(), 25);
        for w in stamps.windows(2) {
            let gap = (w[1] - w[0]).num_microseconds().unwrap();
            assert_eq!(gap, 100_000, "events are stamped 1/rate apart");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duration_bounds_a_paced_run() {
        let (tx, mut rx) = mpsc::channel(1024);
        let run = tokio::spawn(run_synthetic(
            SyntheticConfig {
                rate: Some(50.0),
                duration: Some(Duration::from_secs(2)),
                ..cfg()
            },
            tx,
            CancellationToken::new(),
        ));
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(run.await.unwrap().events_sent, 100);
        assert_eq!(n, 100);
    }
}
