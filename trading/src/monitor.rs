//! The risk loop's decisions, pure: which accounts to value when a mark ticks or a
//! book changes, when to write their snapshot, and when to warn. Time is passed in
//! (a monotonic offset from any origin), so every throttle is tested without a clock.
//!
//! - A mark tick values every account holding the symbol, at most once per
//!   `evaluate_every` per account; a tick inside that window is not dropped but valued
//!   when the window ends (trailing), so the last price is always reflected. A tick at
//!   or past a position's liquidation price (as last valued) is valued at once anyway,
//!   without events, so the liquidator hears of a crossing with no throttle's delay.
//! - A book change (fill, close, balance change, rules change) values the account
//!   at once and writes its snapshot at once, also when the last position closed (an
//!   empty snapshot, not the stale one: js-gateway §0 #12).
//! - Snapshots are otherwise written at most once per `snapshot_every`, trailing.
//! - `margin_warning` fires once when the account enters the warning zone
//!   (tier ≥ [`Tier::Warning`]), not on every valuation inside it (§0 #7); leaving the
//!   zone re-arms it, and `warning_gap` bounds how often an account that flaps across
//!   the boundary is warned.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::evaluate::{Account, Evaluation, Prepared, Tier};
use crate::position::Side;
use crate::risk::AccountView;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub evaluate_every: Duration,
    pub snapshot_every: Duration,
    pub warning_gap: Duration,
}

impl Default for Config {
    /// The JS system's throttles (js-gateway §9.4) and the proposed warning gap (§0 #7).
    fn default() -> Self {
        Self {
            evaluate_every: Duration::from_millis(100),
            snapshot_every: Duration::from_secs(1),
            warning_gap: Duration::from_secs(30),
        }
    }
}

/// One valuation of one account and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub evaluation: Arc<Evaluation>,
    /// Publish `margin_update` and a `pnl_update` per position.
    pub events: bool,
    /// Write the `pms:risk:{id}` snapshot.
    pub snapshot: bool,
    /// Publish `margin_warning`.
    pub warning: bool,
}

#[derive(Debug)]
struct Watched {
    prepared: Prepared,
    /// The mark slot of each position.
    slots: Vec<usize>,
    last_evaluated: Option<Duration>,
    evaluation_due: bool,
    last_snapshot: Option<Duration>,
    snapshot_due: bool,
    /// Warned since it entered the warning zone.
    warned: bool,
    last_warning: Option<Duration>,
    /// The latest valuation, the base of the next when only one symbol moved.
    last: Option<Arc<Evaluation>>,
}

/// One symbol's latest mark and the accounts holding it.
#[derive(Debug, Default)]
struct Slot {
    symbol: Arc<str>,
    mark: Option<Decimal>,
    holders: Vec<Arc<str>>,
}

/// The accounts the loop watches, their symbols and the latest marks. Symbols are
/// interned into slots, so valuing a position reads its mark by index, not by hash.
#[derive(Debug, Default)]
pub struct Monitor {
    config: Config,
    accounts: HashMap<Arc<str>, Watched>,
    slot_of: HashMap<Arc<str>, usize>,
    slots: Vec<Slot>,
    /// Accounts with a trailing valuation or snapshot owed.
    owed: HashSet<Arc<str>>,
}

/// Whether `mark` on slot `i` is at or past the liquidation price one of `w`'s
/// positions on it had at its last valuation (a long's at or below, a short's at or
/// above).
fn past_liquidation(w: &Watched, i: usize, mark: Decimal) -> bool {
    let Some(e) = &w.last else {
        return false;
    };
    w.slots
        .iter()
        .zip(&e.positions)
        .zip(&e.account.positions)
        .any(|((&slot, v), p)| {
            slot == i
                && match p.position.side {
                    Side::Long => mark <= v.liquidation_price,
                    Side::Short => mark >= v.liquidation_price,
                }
        })
}

fn after(last: Option<Duration>, every: Duration, now: Duration) -> bool {
    last.is_none_or(|t| now >= t + every)
}

impl Monitor {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    fn slot(&mut self, symbol: &str) -> usize {
        if let Some(&i) = self.slot_of.get(symbol) {
            return i;
        }
        let symbol: Arc<str> = symbol.into();
        self.slots.push(Slot {
            symbol: symbol.clone(),
            ..Slot::default()
        });
        self.slot_of.insert(symbol, self.slots.len() - 1);
        self.slots.len() - 1
    }

    pub fn mark(&self, symbol: &str) -> Option<Decimal> {
        self.slot_of.get(symbol).and_then(|&i| self.slots[i].mark)
    }

    pub fn account(&self, id: &str) -> Option<&Arc<Account>> {
        self.accounts.get(id).map(|w| w.prepared.account())
    }

    /// What the pre-trade checks need of account `id` at the latest marks.
    pub fn view(&self, id: &str, symbol: &str, realized_today: Decimal) -> Option<AccountView> {
        let w = self.accounts.get(id)?;
        Some(
            w.prepared
                .view(|i| self.slots[w.slots[i]].mark, symbol, realized_today),
        )
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The symbols some watched account holds.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.slots
            .iter()
            .filter(|s| !s.holders.is_empty())
            .map(|s| &*s.symbol)
    }

    /// A book change: the account as it now is. Values it and snapshots it at once.
    pub fn upsert(&mut self, account: Account, now: Duration) -> Report {
        let id = account.id.clone();
        self.unindex(&id);
        let slots: Vec<usize> = account
            .positions
            .iter()
            .map(|p| self.slot(&p.symbol))
            .collect();
        for &i in &slots {
            let holders = &mut self.slots[i].holders;
            if !holders.contains(&id) {
                holders.push(id.clone());
            }
        }
        let prepared = Prepared::new(account);
        let w = match self.accounts.entry(id) {
            Entry::Occupied(e) => {
                let w = e.into_mut();
                w.prepared = prepared;
                w.slots = slots;
                w
            }
            Entry::Vacant(e) => e.insert(Watched {
                prepared,
                slots,
                last_evaluated: None,
                evaluation_due: false,
                last_snapshot: None,
                snapshot_due: false,
                warned: false,
                last_warning: None,
                last: None,
            }),
        };
        Self::value(&self.config, &self.slots, w, None, now, true, true)
    }

    /// Stops watching an account; true if it was watched.
    pub fn remove(&mut self, id: &str) -> bool {
        self.unindex(id);
        self.owed.remove(id);
        self.accounts.remove(id).is_some()
    }

    fn unindex(&mut self, id: &str) {
        let Some(w) = self.accounts.get(id) else {
            return;
        };
        for &i in &w.slots {
            self.slots[i].holders.retain(|a| &**a != id);
        }
    }

    /// A mark tick: values each account holding `symbol` whose throttle allows it,
    /// and owes the others a valuation at the end of their window.
    pub fn tick(&mut self, symbol: &str, mark: Decimal, now: Duration) -> Vec<Report> {
        let i = self.slot(symbol);
        self.slots[i].mark = Some(mark);
        let mut reports = Vec::new();
        for id in &self.slots[i].holders {
            let Some(w) = self.accounts.get_mut(id) else {
                continue;
            };
            if after(w.last_evaluated, self.config.evaluate_every, now) {
                reports.push(Self::value(
                    &self.config,
                    &self.slots,
                    w,
                    Some(i),
                    now,
                    true,
                    false,
                ));
                if w.snapshot_due {
                    self.owed.insert(id.clone());
                }
            } else {
                w.evaluation_due = true;
                self.owed.insert(id.clone());
                if past_liquidation(w, i, mark) {
                    // The account may have crossed its threshold: valued now for the
                    // liquidator, whatever its throttle; its events wait for the window.
                    reports.push(Self::value(
                        &self.config,
                        &self.slots,
                        w,
                        Some(i),
                        now,
                        false,
                        false,
                    ));
                }
            }
        }
        reports
    }

    /// The owed valuations and snapshots whose window has ended by `now`.
    pub fn due(&mut self, now: Duration) -> Vec<Report> {
        let mut reports = Vec::new();
        let config = self.config;
        self.owed.retain(|id| {
            let Some(w) = self.accounts.get_mut(id) else {
                return false;
            };
            let evaluate = w.evaluation_due && after(w.last_evaluated, config.evaluate_every, now);
            let snapshot = w.snapshot_due && after(w.last_snapshot, config.snapshot_every, now);
            if evaluate || snapshot {
                reports.push(Self::value(
                    &config,
                    &self.slots,
                    w,
                    None,
                    now,
                    evaluate,
                    snapshot,
                ));
            }
            w.evaluation_due || w.snapshot_due
        });
        reports
    }

    /// When the next owed valuation or snapshot falls due; `None` when none is owed.
    pub fn next_due(&self) -> Option<Duration> {
        self.owed
            .iter()
            .filter_map(|id| self.accounts.get(id))
            .flat_map(|w| {
                let e = w.evaluation_due.then(|| {
                    w.last_evaluated
                        .map_or(Duration::ZERO, |t| t + self.config.evaluate_every)
                });
                let s = w.snapshot_due.then(|| {
                    w.last_snapshot
                        .map_or(Duration::ZERO, |t| t + self.config.snapshot_every)
                });
                e.into_iter().chain(s)
            })
            .min()
    }

    /// Values `w`: from its last valuation when only slot `moved` can have changed
    /// since (no tick was left owed in between), else in full.
    #[allow(clippy::too_many_arguments)]
    fn value(
        config: &Config,
        slots: &[Slot],
        w: &mut Watched,
        moved: Option<usize>,
        now: Duration,
        events: bool,
        force_snapshot: bool,
    ) -> Report {
        let marks = |i: usize| slots[w.slots[i]].mark;
        // The last valuation is reused in place when no report still holds it.
        let prev = w
            .last
            .take()
            .map(|e| Arc::try_unwrap(e).unwrap_or_else(|e| (*e).clone()));
        let evaluation = Arc::new(match (prev, moved) {
            (Some(prev), Some(k)) if !w.evaluation_due => {
                w.prepared.revalue(prev, |i| w.slots[i] == k, marks)
            }
            _ => w.prepared.value(marks),
        });
        w.last = Some(evaluation.clone());
        if events {
            w.last_evaluated = Some(now);
            w.evaluation_due = false;
        }
        let snapshot = force_snapshot || after(w.last_snapshot, config.snapshot_every, now);
        if snapshot {
            w.last_snapshot = Some(now);
            w.snapshot_due = false;
        } else {
            w.snapshot_due = true;
        }
        let in_zone = evaluation.tier >= Tier::Warning;
        if !in_zone {
            w.warned = false;
        }
        let warning = in_zone && !w.warned && after(w.last_warning, config.warning_gap, now);
        if warning {
            w.warned = true;
            w.last_warning = Some(now);
        }
        Report {
            evaluation,
            events,
            snapshot,
            warning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{LiquidationMode, OpenPosition};
    use crate::position::{Position, Side};
    use crate::risk::AccountStatus;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn account(id: &str, balance: &str, symbols: &[&str]) -> Account {
        Account {
            id: id.into(),
            status: AccountStatus::Active,
            liquidation_mode: LiquidationMode::Adl30,
            balance: d(balance),
            maintenance_rate: d("0.005"),
            threshold: d("0.9"),
            positions: symbols
                .iter()
                .map(|s| OpenPosition {
                    id: format!("{id}-{s}").into(),
                    symbol: (*s).into(),
                    position: Position {
                        side: Side::Long,
                        quantity: d("10"),
                        entry_price: d("100"),
                        leverage: d("10"),
                    },
                    babysitter_excluded: false,
                    opened_at: 0,
                })
                .collect(),
        }
    }

    fn flags(r: &Report) -> (&str, bool, bool, bool) {
        (&r.evaluation.account.id, r.events, r.snapshot, r.warning)
    }

    #[test]
    fn a_tick_values_only_the_accounts_holding_the_symbol() {
        let mut m = Monitor::new(Config::default());
        m.upsert(account("a", "1000", &["BTCUSDT"]), ms(0));
        m.upsert(account("b", "1000", &["ETHUSDT"]), ms(0));
        let r = m.tick("BTCUSDT", d("101"), ms(500));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].evaluation.account.id.as_ref(), "a");
        assert_eq!(r[0].evaluation.metrics.unrealized, d("10"));
        assert!(m.tick("SOLUSDT", d("1"), ms(600)).is_empty());
    }

    #[test]
    fn ticks_inside_the_window_are_valued_once_at_its_end_with_the_last_price() {
        let mut m = Monitor::new(Config::default());
        m.upsert(account("a", "1000", &["BTCUSDT"]), ms(0));
        assert_eq!(m.tick("BTCUSDT", d("101"), ms(100)).len(), 1);
        for (i, px) in ["102", "103", "104"].iter().enumerate() {
            assert!(m.tick("BTCUSDT", d(px), ms(110 + i as u64 * 10)).is_empty());
        }
        assert_eq!(m.next_due(), Some(ms(200)));
        assert!(m.due(ms(199)).is_empty());
        let r = m.due(ms(200));
        assert_eq!(r.len(), 1);
        assert!(r[0].events);
        assert_eq!(r[0].evaluation.positions[0].mark, d("104"));
        // The snapshot written at 0 (the upsert) is owed again at 1000.
        assert_eq!(m.next_due(), Some(ms(1000)));
        let r = m.due(ms(1000));
        assert_eq!(flags(&r[0]), ("a", false, true, false));
        assert_eq!(m.next_due(), None);
        assert!(m.due(ms(5000)).is_empty(), "nothing owed, nothing done");
    }

    #[test]
    fn a_tick_past_a_liquidation_price_is_valued_at_once_inside_the_window_without_events() {
        // 10 BTC long at 100 on a balance of 7: maintenance 5, liquidated (MR ≥ 0.9)
        // at 99.855…
        let mut m = Monitor::new(Config::default());
        let r = m.upsert(account("a", "7", &["BTCUSDT"]), ms(0));
        let liq = r.evaluation.positions[0].liquidation_price;
        assert!(liq > d("99.8") && liq < d("99.9"), "{liq}");
        assert_eq!(m.tick("BTCUSDT", d("100"), ms(100)).len(), 1);
        // Inside the window, short of the liquidation price: owed, not valued.
        assert!(m.tick("BTCUSDT", liq + d("0.01"), ms(110)).is_empty());
        // Past it: valued now, for the liquidator only.
        let past = liq - d("0.001");
        let r = m.tick("BTCUSDT", past, ms(120));
        assert_eq!(r.len(), 1);
        assert!(
            r[0].evaluation.tier >= Tier::Adl2,
            "{:?}",
            r[0].evaluation.tier
        );
        assert!(!r[0].events);
        // The window's events still come at its end, at the last price.
        let r = m.due(ms(200));
        assert_eq!(r.len(), 1);
        assert!(r[0].events);
        assert_eq!(r[0].evaluation.positions[0].mark, past);
    }

    #[test]
    fn a_book_change_snapshots_at_once_even_when_the_last_position_closed() {
        let mut m = Monitor::new(Config::default());
        m.upsert(account("a", "1000", &["BTCUSDT"]), ms(0));
        let r = m.upsert(account("a", "1010", &[]), ms(10));
        assert_eq!(flags(&r), ("a", true, true, false));
        assert!(r.evaluation.positions.is_empty());
        assert_eq!(r.evaluation.metrics.equity, d("1010"));
        assert!(
            m.tick("BTCUSDT", d("90"), ms(500)).is_empty(),
            "no longer indexed"
        );
        assert_eq!(m.symbols().count(), 0);
    }

    #[test]
    fn the_warning_fires_once_per_entry_into_the_zone() {
        // 10 BTC long at 100 on a balance of 7: maintenance 5, MR = 5/(7 + 10·(mark−100)).
        let mut m = Monitor::new(Config::default());
        let r = m.upsert(account("a", "7", &["BTCUSDT"]), ms(0));
        assert_eq!(
            r.evaluation.tier,
            Tier::Normal,
            "MR {}",
            r.evaluation.metrics.margin_ratio
        );
        let warnings = |m: &mut Monitor, px: &str, t: u64| -> Vec<bool> {
            m.tick("BTCUSDT", d(px), ms(t))
                .iter()
                .map(|r| r.warning)
                .collect()
        };
        // 99.9 → equity 6, MR 0.833: inside the zone (≥ 0.8).
        assert_eq!(warnings(&mut m, "99.9", 1_000), [true]);
        for t in 1..50u64 {
            assert_eq!(
                warnings(&mut m, "99.9", 1_000 + t * 200),
                [false],
                "tick {t}"
            );
        }
        // Out of the zone (MR 0.5), then back in, 40 s after the first warning.
        assert_eq!(warnings(&mut m, "100.4", 40_000), [false]);
        assert_eq!(warnings(&mut m, "99.9", 41_000), [true]);
        // Flapping inside the gap: out and in again at once warns no more.
        assert_eq!(warnings(&mut m, "100.4", 42_000), [false]);
        assert_eq!(warnings(&mut m, "99.9", 43_000), [false]);
        // Still in the zone when the gap has passed: it was not warned for this entry.
        assert_eq!(warnings(&mut m, "99.9", 71_000), [true]);
    }

    #[test]
    fn removing_an_account_forgets_what_it_was_owed() {
        let mut m = Monitor::new(Config::default());
        m.upsert(account("a", "1000", &["BTCUSDT", "ETHUSDT"]), ms(0));
        m.tick("BTCUSDT", d("1"), ms(10));
        assert!(m.next_due().is_some());
        assert!(m.remove("a"));
        assert_eq!((m.next_due(), m.symbols().count(), m.len()), (None, 0, 0));
        assert!(!m.remove("a"));
    }

    proptest::proptest! {
        /// Valuing from the last valuation when one symbol ticks gives exactly what a
        /// full valuation at the same marks gives, whatever the ticks and throttling.
        #[test]
        fn an_incremental_valuation_equals_a_full_one(
            ticks in proptest::collection::vec((0usize..3, 1i64..20_000, 0u64..150), 1..60),
        ) {
            const SYMBOLS: [&str; 3] = ["A", "B", "C"];
            let mut m = Monitor::new(Config::default());
            let mut a = account("x", "50", &SYMBOLS);
            a.positions[1].position.side = Side::Short;
            a.positions[2].position.quantity = d("0.37");
            m.upsert(a.clone(), ms(0));
            let mut now = 0;
            let check = |r: &Report, m: &Monitor| {
                let full = Prepared::new(a.clone()).value(|i| m.mark(SYMBOLS[i]));
                assert_eq!(*r.evaluation, full);
            };
            for (s, px, dt) in ticks {
                now += dt;
                for r in m.tick(SYMBOLS[s], Decimal::new(px, 2), ms(now)) {
                    check(&r, &m);
                }
                for r in m.due(ms(now)) {
                    check(&r, &m);
                }
            }
        }
    }

    #[test]
    fn the_marks_it_has_seen_value_a_new_account() {
        let mut m = Monitor::new(Config::default());
        m.tick("BTCUSDT", d("110"), ms(0));
        let r = m.upsert(account("a", "1000", &["BTCUSDT"]), ms(1));
        assert_eq!(r.evaluation.metrics.unrealized, d("100"));
        assert_eq!(m.mark("BTCUSDT"), Some(d("110")));
    }
}
