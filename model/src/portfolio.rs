//! The latest-state book of unified positions and its portfolio Greeks, by account,
//! by underlying, by broker and in total. Pure: the caller applies snapshots in
//! order and reads the book; each applied change gets the next sequence number.
//!
//! Aggregates are kept incrementally (a position's old contribution out, its new
//! one in), so an event costs the same whatever the book's size; they are rebuilt
//! from the positions every `REBUILD_EVERY` changes so floating-point drift from the
//! subtractions cannot build up. A Greek a position does not have is counted as
//! missing in every group it belongs to, never summed as zero; values are finite by
//! construction (the model maps NaN to `None`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::Broker;
use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::contract::{Contract, GreekSnapshot, Greeks, GreeksSource, PositionSide};
use crate::ids::{AccountId, ContractKey};

const REBUILD_EVERY: u64 = 100_000;

/// Delta, gamma, theta, vega, rho and dollar delta.
pub const MEASURES: [&str; 6] = ["delta", "gamma", "theta", "vega", "rho", "dollar_delta"];

/// One position as the book holds it: the latest snapshot's view.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub broker: Broker,
    pub account_id: AccountId,
    pub contract: Arc<Contract>,
    pub side: PositionSide,
    /// Signed; 0 in an update means the position was closed.
    pub quantity: Decimal,
    pub mark_price: Option<f64>,
    pub underlying_price: Option<f64>,
    pub implied_vol: Option<f64>,
    /// Per unit of the contract.
    pub unit: Greeks,
    /// quantity × multiplier × unit.
    pub total: Greeks,
    pub greeks_source: Option<GreeksSource>,
    pub event_time: DateTime<Utc>,
    /// The sequence number of the change that produced this state.
    pub seq: u64,
}

impl Position {
    fn from_snapshot(s: &GreekSnapshot, seq: u64) -> Self {
        Self {
            broker: s.position.broker,
            account_id: s.position.account_id.clone(),
            contract: s.position.contract.clone(),
            side: s.position.side,
            quantity: s.position.quantity,
            mark_price: s.mark_price,
            underlying_price: s.underlying_price,
            implied_vol: s.implied_vol,
            unit: s.unit,
            total: s.total,
            greeks_source: s.greeks_source,
            event_time: s.event_time,
            seq,
        }
    }

    /// Position delta × underlying price: the dollar (quote-currency) delta.
    pub fn dollar_delta(&self) -> Option<f64> {
        Some(self.total.delta? * self.underlying_price?).filter(|x| x.is_finite())
    }

    fn measures(&self) -> [Option<f64>; 6] {
        let t = &self.total;
        [
            t.delta,
            t.gamma,
            t.theta,
            t.vega,
            t.rho,
            self.dollar_delta(),
        ]
    }

    /// A position with no Greeks at all (a missing leg).
    pub fn has_no_greeks(&self) -> bool {
        self.total.is_empty()
    }
}

pub type PositionKey = (Broker, AccountId, ContractKey, PositionSide);

fn key_of(s: &GreekSnapshot) -> PositionKey {
    (
        s.position.broker,
        s.position.account_id.clone(),
        s.position.contract.key().clone(),
        s.position.side,
    )
}

/// How positions are grouped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Total,
    Broker(Broker),
    Account(Broker, AccountId),
    Underlying(Arc<str>),
}

impl Group {
    fn of(p: &Position) -> [Group; 4] {
        [
            Group::Total,
            Group::Broker(p.broker),
            Group::Account(p.broker, p.account_id.clone()),
            Group::Underlying(p.contract.underlying().into()),
        ]
    }
}

/// A grouping dimension, for reading aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Total,
    Broker,
    Account,
    Underlying,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "total" => Some(GroupBy::Total),
            "broker" => Some(GroupBy::Broker),
            "account" => Some(GroupBy::Account),
            "underlying" => Some(GroupBy::Underlying),
            _ => None,
        }
    }

    pub fn matches(self, g: &Group) -> bool {
        matches!(
            (self, g),
            (GroupBy::Total, Group::Total)
                | (GroupBy::Broker, Group::Broker(_))
                | (GroupBy::Account, Group::Account(..))
                | (GroupBy::Underlying, Group::Underlying(_))
        )
    }
}

/// Aggregates of any subset of positions (a filtered view), computed on the spot.
pub fn aggregate<'a>(
    positions: impl Iterator<Item = &'a Position>,
    by: GroupBy,
) -> Vec<(Group, Totals)> {
    let mut groups: HashMap<Group, Totals> = HashMap::new();
    for p in positions {
        for g in Group::of(p).into_iter().filter(|g| by.matches(g)) {
            groups.entry(g).or_default().add(p, 1.0);
        }
    }
    let mut v: Vec<(Group, Totals)> = groups.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Sums of one group, with what they are missing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// In `MEASURES` order.
    pub sums: [f64; 6],
    /// Positions that lack each measure, in `MEASURES` order.
    pub missing: [u32; 6],
    pub positions: u32,
    /// Positions with no Greeks at all.
    pub without_greeks: u32,
}

impl Totals {
    fn add(&mut self, p: &Position, sign: f64) {
        let step = if sign > 0.0 { 1 } else { u32::MAX }; // wrapping −1
        for (i, m) in p.measures().into_iter().enumerate() {
            match m {
                Some(x) => self.sums[i] += sign * x,
                None => self.missing[i] = self.missing[i].wrapping_add(step),
            }
        }
        self.positions = self.positions.wrapping_add(step);
        if p.has_no_greeks() {
            self.without_greeks = self.without_greeks.wrapping_add(step);
        }
    }

    pub fn get(&self, measure: &str) -> Option<f64> {
        MEASURES
            .iter()
            .position(|m| *m == measure)
            .map(|i| self.sums[i])
    }
}

/// What one applied snapshot changed.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionUpdate {
    pub seq: u64,
    pub position: Position,
}

#[derive(Debug, Default)]
pub struct Book {
    positions: HashMap<PositionKey, Position>,
    groups: HashMap<Group, Totals>,
    seq: u64,
    since_rebuild: u64,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence number of the last change (0 before any).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Applies one snapshot. Every snapshot is a change (a new mark or new Greeks
    /// move the aggregates even when the quantity does not); a zero quantity closes
    /// the position, and closing one the book does not hold changes nothing.
    pub fn apply(&mut self, s: &GreekSnapshot) -> Option<PositionUpdate> {
        let key = key_of(s);
        let old = self.positions.remove(&key);
        if old.is_none() && s.position.quantity.is_zero() {
            return None;
        }
        self.seq += 1;
        let new = Position::from_snapshot(s, self.seq);
        if let Some(old) = &old {
            self.account(old, -1.0);
        }
        if !new.quantity.is_zero() {
            self.account(&new, 1.0);
            self.positions.insert(key, new.clone());
        }
        self.since_rebuild += 1;
        if self.since_rebuild >= REBUILD_EVERY {
            self.rebuild();
        }
        Some(PositionUpdate {
            seq: self.seq,
            position: new,
        })
    }

    fn account(&mut self, p: &Position, sign: f64) {
        for g in Group::of(p) {
            let t = self.groups.entry(g.clone()).or_default();
            t.add(p, sign);
            if t.positions == 0 {
                self.groups.remove(&g);
            }
        }
    }

    /// Recomputes every aggregate from the positions.
    pub fn rebuild(&mut self) {
        self.groups.clear();
        let positions: Vec<Position> = self.positions.values().cloned().collect();
        for p in &positions {
            for g in Group::of(p) {
                self.groups.entry(g).or_default().add(p, 1.0);
            }
        }
        self.since_rebuild = 0;
    }

    pub fn totals(&self, group: &Group) -> Totals {
        self.groups.get(group).copied().unwrap_or_default()
    }

    /// Every group of one kind (`Total`, brokers, accounts or underlyings), sorted.
    pub fn groups(&self) -> Vec<(Group, Totals)> {
        let mut v: Vec<(Group, Totals)> =
            self.groups.iter().map(|(g, t)| (g.clone(), *t)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values()
    }

    /// A copy of every position and the sequence number it is consistent with.
    pub fn snapshot(&self) -> (u64, Vec<Position>) {
        let mut v: Vec<Position> = self.positions.values().cloned().collect();
        v.sort_by(|a, b| {
            (a.broker, &a.account_id, &a.contract.key()).cmp(&(
                b.broker,
                &b.account_id,
                &b.contract.key(),
            ))
        });
        (self.seq, v)
    }
}

/// Quantity as f64 for JSON and sums that need it.
pub fn quantity_f64(q: Decimal) -> f64 {
    q.to_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;
    use crate::contract::{AssetClass, OptionRight};

    fn acct(id: &str) -> AccountId {
        AccountId::new(id).unwrap()
    }

    fn snap(
        broker: Broker,
        account: &str,
        contract: Contract,
        qty: i64,
        unit: Greeks,
        underlying: Option<f64>,
    ) -> GreekSnapshot {
        let at = Utc::now();
        let c = Arc::new(contract);
        GreekSnapshot {
            underlying_price: underlying,
            ..GreekSnapshot::with_greeks(broker, acct(account), c, Decimal::from(qty), unit, at)
        }
    }

    fn option(underlying: &str, right: OptionRight, multiplier: i64) -> Contract {
        Contract::option(
            underlying,
            AssetClass::Option,
            NaiveDate::from_ymd_opt(2026, 12, 18).unwrap(),
            right,
            Decimal::from(100),
            Decimal::from(multiplier),
        )
        .unwrap()
    }

    fn greeks(d: f64, g: f64, t: f64, v: f64, r: Option<f64>) -> Greeks {
        Greeks {
            delta: Some(d),
            gamma: Some(g),
            theta: Some(t),
            vega: Some(v),
            rho: r,
        }
    }

    #[test]
    fn three_brokers_mixed_signs_and_multipliers() {
        let mut b = Book::new();
        // IBKR: long 2 SPY calls ×100, delta 0.5 → +100.
        b.apply(&snap(
            Broker::Ibkr,
            "U1",
            option("SPY", OptionRight::Call, 100),
            2,
            greeks(0.5, 0.02, -0.1, 0.3, Some(0.05)),
            Some(600.0),
        ));
        // Tastytrade: short 3 SPY puts ×100, delta −0.4 → +120.
        b.apply(&snap(
            Broker::Tastytrade,
            "5WT1",
            option("SPY", OptionRight::Put, 100),
            -3,
            greeks(-0.4, 0.03, -0.2, 0.25, Some(-0.04)),
            Some(600.0),
        ));
        // Binance: short 4 ETH perps ×1 → −4; an ETH option with no rho; one without Greeks.
        b.apply(&snap(
            Broker::Binance,
            "binance",
            Contract::perpetual("ETHUSDT", Decimal::ONE).unwrap(),
            -4,
            Greeks::LINEAR,
            Some(3000.0),
        ));
        b.apply(&snap(
            Broker::Binance,
            "binance",
            option("ETHUSDT", OptionRight::Call, 1),
            10,
            greeks(0.3, 0.001, -5.0, 2.0, None),
            None,
        ));
        b.apply(&snap(
            Broker::Binance,
            "binance",
            option("ETHUSDT", OptionRight::Put, 1),
            1,
            Greeks::default(),
            Some(3000.0),
        ));

        let spy = b.totals(&Group::Underlying("SPY".into()));
        assert!((spy.get("delta").unwrap() - 220.0).abs() < 1e-9);
        assert!((spy.get("gamma").unwrap() - (4.0 - 9.0)).abs() < 1e-9);
        assert!((spy.get("dollar_delta").unwrap() - 220.0 * 600.0).abs() < 1e-6);
        assert_eq!(spy.positions, 2);
        let eth = b.totals(&Group::Underlying("ETHUSDT".into()));
        assert!((eth.get("delta").unwrap() - (-4.0 + 3.0)).abs() < 1e-9);
        assert_eq!(eth.positions, 3);
        assert_eq!(eth.without_greeks, 1);
        // rho: the option without rho and the one without Greeks are missing it.
        assert_eq!(eth.missing[4], 2);
        // dollar delta: the option with no underlying price, and the one with no delta.
        assert_eq!(eth.missing[5], 2);
        let total = b.totals(&Group::Total);
        assert_eq!(total.positions, 5);
        assert!((total.get("delta").unwrap() - 219.0).abs() < 1e-9);
        assert_eq!(b.totals(&Group::Broker(Broker::Binance)).positions, 3);
        assert_eq!(
            b.totals(&Group::Account(Broker::Tastytrade, acct("5WT1")))
                .positions,
            1
        );
        // Closing a position takes it out of every group; closing it again is no change.
        let seq = b.seq();
        let closed = b
            .apply(&snap(
                Broker::Tastytrade,
                "5WT1",
                option("SPY", OptionRight::Put, 100),
                0,
                Greeks::default(),
                None,
            ))
            .unwrap();
        assert_eq!(
            (closed.seq, closed.position.quantity),
            (seq + 1, Decimal::ZERO)
        );
        assert!(b
            .apply(&snap(
                Broker::Tastytrade,
                "5WT1",
                option("SPY", OptionRight::Put, 100),
                0,
                Greeks::default(),
                None
            ))
            .is_none());
        assert!(
            (b.totals(&Group::Underlying("SPY".into()))
                .get("delta")
                .unwrap()
                - 100.0)
                .abs()
                < 1e-9
        );
        assert_eq!(
            b.totals(&Group::Account(Broker::Tastytrade, acct("5WT1"))),
            Totals::default()
        );
        assert_eq!(b.len(), 4);
    }

    proptest! {
        /// After any sequence of updates and closes, the incremental aggregates equal
        /// a rebuild from scratch, and no sum is NaN.
        #[test]
        fn incremental_equals_rebuild(ops in prop::collection::vec((0usize..6, -5i64..6, prop::option::of(-1.0f64..1.0), 0u8..3), 1..200)) {
            let mut b = Book::new();
            let contracts: Vec<Contract> = ["AAA", "BBB", "CCC"].iter().flat_map(|u| {
                [option(u, OptionRight::Call, 100), option(u, OptionRight::Put, 10)]
            }).collect();
            for (c, qty, delta, broker) in ops {
                let broker = [Broker::Ibkr, Broker::Tastytrade, Broker::Binance][broker as usize];
                let unit = match delta {
                    Some(d) => greeks(d, 0.01, -0.1, 0.2, None),
                    None => Greeks::default(),
                };
                b.apply(&snap(broker, "A", contracts[c].clone(), qty, unit, Some(50.0)));
            }
            let incremental = b.groups();
            b.rebuild();
            let rebuilt = b.groups();
            prop_assert_eq!(incremental.len(), rebuilt.len());
            for ((g1, t1), (g2, t2)) in incremental.iter().zip(&rebuilt) {
                prop_assert_eq!(g1, g2);
                prop_assert_eq!(t1.missing, t2.missing);
                prop_assert_eq!(t1.positions, t2.positions);
                for (a, b) in t1.sums.iter().zip(&t2.sums) {
                    prop_assert!(a.is_finite());
                    prop_assert!((a - b).abs() < 1e-6, "{} vs {}", a, b);
                }
            }
        }
    }
}
