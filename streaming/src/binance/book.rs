//! A local order book kept in step with the venue, by the futures rule of the
//! protocol document (§3): buffer diffs, load a REST snapshot `L`, drop diffs with
//! `u < L`, bridge with the first diff where `U <= L <= u`, then require every diff's
//! `pu` to equal the previous diff's `u`. A break drops the book and starts over from
//! a new snapshot on the same socket. Pure: the caller fetches snapshots.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::wire::{DepthSnapshot, DepthUpdate, Level};

/// Diffs kept while a snapshot is on its way. Beyond this the oldest go: the
/// snapshot will be newer than them anyway, or the bridge check fails and we refetch.
const MAX_BUFFER: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No usable book: diffs are buffered until a snapshot arrives.
    Buffering { snapshot_requested: bool },
    /// A snapshot with `lastUpdateId` is loaded; waiting for the diff that spans it.
    Bridging { snapshot_id: u64 },
    /// In sync; `last_id` is the `u` of the last applied diff.
    Live { last_id: u64 },
}

/// What happened, and what the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Applied to a live book.
    Applied,
    /// Kept for later, or older than the book and dropped: nothing to do.
    Pending,
    /// Fetch a REST snapshot and hand it to [`LocalBook::on_snapshot`].
    NeedSnapshot,
    /// The `pu` chain broke: the book was dropped; fetch a snapshot.
    Gap,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalBook {
    pub bids: BTreeMap<Decimal, Decimal>,
    pub asks: BTreeMap<Decimal, Decimal>,
    phase: Phase,
    buffer: Vec<DepthUpdate>,
    pub gaps: u64,
}

impl Default for LocalBook {
    fn default() -> Self {
        Self::new()
    }
}

enum Event<'a> {
    Diff(DepthUpdate),
    Snapshot(&'a DepthSnapshot),
}

impl LocalBook {
    pub fn new() -> Self {
        Self {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            phase: Phase::Buffering {
                snapshot_requested: false,
            },
            buffer: Vec::new(),
            gaps: 0,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live { .. })
    }

    /// Best bid and best ask.
    pub fn top(&self) -> (Option<Level>, Option<Level>) {
        (
            self.bids.iter().next_back().map(|(p, q)| (*p, *q)),
            self.asks.iter().next().map(|(p, q)| (*p, *q)),
        )
    }

    pub fn on_diff(&mut self, diff: DepthUpdate) -> Sync {
        self.step(Event::Diff(diff))
    }

    pub fn on_snapshot(&mut self, snapshot: &DepthSnapshot) -> Sync {
        self.step(Event::Snapshot(snapshot))
    }

    /// A snapshot could not be fetched: ask again on the next diff.
    pub fn snapshot_failed(&mut self) {
        if let Phase::Buffering { snapshot_requested } = &mut self.phase {
            *snapshot_requested = false;
        }
    }

    /// The socket is gone: nothing on the next one chains to this book.
    pub fn reset(&mut self) {
        self.clear();
        self.phase = Phase::Buffering {
            snapshot_requested: false,
        };
    }

    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.buffer.clear();
    }

    fn step(&mut self, event: Event<'_>) -> Sync {
        match (&self.phase, event) {
            (Phase::Buffering { snapshot_requested }, Event::Diff(d)) => {
                let requested = *snapshot_requested;
                if self.buffer.len() >= MAX_BUFFER {
                    self.buffer.remove(0);
                }
                self.buffer.push(d);
                if requested {
                    Sync::Pending
                } else {
                    self.phase = Phase::Buffering {
                        snapshot_requested: true,
                    };
                    Sync::NeedSnapshot
                }
            }
            (Phase::Buffering { .. }, Event::Snapshot(s)) => {
                self.load(s);
                self.drain_buffer()
            }
            (Phase::Bridging { snapshot_id }, Event::Diff(d)) => {
                let l = *snapshot_id;
                if d.last_id < l {
                    Sync::Pending
                } else if d.first_id <= l {
                    self.apply(&d);
                    Sync::Applied
                } else {
                    // The snapshot is older than every diff we will see.
                    self.gap(d)
                }
            }
            (Phase::Live { last_id }, Event::Diff(d)) => {
                if d.prev_last_id == *last_id {
                    self.apply(&d);
                    Sync::Applied
                } else {
                    self.gap(d)
                }
            }
            // A snapshot we no longer need (a reply that raced a resync): ignore it.
            (Phase::Bridging { .. } | Phase::Live { .. }, Event::Snapshot(_)) => Sync::Pending,
        }
    }

    fn load(&mut self, s: &DepthSnapshot) {
        self.bids.clear();
        self.asks.clear();
        set_levels(&mut self.bids, &s.bids);
        set_levels(&mut self.asks, &s.asks);
        self.phase = Phase::Bridging {
            snapshot_id: s.last_update_id,
        };
    }

    /// Replays the buffered diffs onto a freshly loaded snapshot.
    fn drain_buffer(&mut self) -> Sync {
        let mut result = Sync::Pending;
        for d in std::mem::take(&mut self.buffer) {
            match self.step(Event::Diff(d)) {
                Sync::Applied => result = Sync::Applied,
                Sync::Pending => {}
                // The gap handler re-buffered what it needed; the caller refetches.
                other @ (Sync::Gap | Sync::NeedSnapshot) => return other,
            }
        }
        result
    }

    fn gap(&mut self, d: DepthUpdate) -> Sync {
        self.gaps += 1;
        self.clear();
        self.buffer.push(d);
        self.phase = Phase::Buffering {
            snapshot_requested: true,
        };
        Sync::Gap
    }

    fn apply(&mut self, d: &DepthUpdate) {
        set_levels(&mut self.bids, &d.bids);
        set_levels(&mut self.asks, &d.asks);
        self.phase = Phase::Live { last_id: d.last_id };
    }
}

fn set_levels(side: &mut BTreeMap<Decimal, Decimal>, levels: &[Level]) {
    for &(price, qty) in levels {
        if qty.is_zero() {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(p: i64, q: i64) -> Level {
        (Decimal::from(p), Decimal::from(q))
    }

    fn diff(first: u64, last: u64, prev: u64, bids: Vec<Level>) -> DepthUpdate {
        DepthUpdate {
            symbol: "BTCUSDT".into(),
            event_time: 0,
            first_id: first,
            last_id: last,
            prev_last_id: prev,
            bids,
            asks: vec![],
        }
    }

    fn snap(id: u64, bids: Vec<Level>) -> DepthSnapshot {
        DepthSnapshot {
            last_update_id: id,
            bids,
            asks: vec![lv(200, 1)],
        }
    }

    #[test]
    fn buffers_bridges_and_chains() {
        let mut b = LocalBook::new();
        assert_eq!(
            b.on_diff(diff(90, 95, 80, vec![lv(99, 9)])),
            Sync::NeedSnapshot
        );
        assert_eq!(
            b.on_diff(diff(96, 101, 95, vec![lv(100, 1)])),
            Sync::Pending
        );
        assert_eq!(
            b.on_diff(diff(105, 110, 101, vec![lv(101, 2)])),
            Sync::Pending
        );
        // Snapshot at 100: the first diff is older (dropped), the second spans it.
        assert_eq!(
            b.on_snapshot(&snap(100, vec![lv(100, 5), lv(98, 3)])),
            Sync::Applied
        );
        assert!(b.is_live());
        assert_eq!(b.bids.get(&Decimal::from(100)), Some(&Decimal::ONE));
        assert_eq!(
            b.bids.get(&Decimal::from(99)),
            None,
            "pre-snapshot diff applied"
        );
        assert_eq!(
            b.on_diff(diff(111, 111, 110, vec![lv(98, 0)])),
            Sync::Applied
        );
        assert_eq!(b.top().0, Some(lv(101, 2)));
        assert_eq!(b.bids.len(), 2);
    }

    #[test]
    fn a_broken_chain_drops_the_book_and_resyncs() {
        let mut b = LocalBook::new();
        b.on_diff(diff(10, 12, 9, vec![lv(1, 1)]));
        b.on_snapshot(&snap(11, vec![]));
        assert!(b.is_live());
        assert_eq!(b.on_diff(diff(20, 25, 13, vec![lv(2, 2)])), Sync::Gap);
        assert!(b.bids.is_empty() && b.asks.is_empty());
        assert_eq!(b.gaps, 1);
        // Further diffs wait for the snapshot that was asked for.
        assert_eq!(b.on_diff(diff(26, 30, 25, vec![lv(3, 3)])), Sync::Pending);
        assert_eq!(b.on_snapshot(&snap(27, vec![lv(1, 7)])), Sync::Applied);
        assert_eq!(b.phase(), &Phase::Live { last_id: 30 });
        assert_eq!(b.bids.get(&Decimal::from(3)), Some(&Decimal::from(3)));
        assert_eq!(b.bids.get(&Decimal::from(2)), None);
    }

    #[test]
    fn a_snapshot_older_than_every_diff_is_refetched() {
        let mut b = LocalBook::new();
        b.on_diff(diff(50, 55, 49, vec![]));
        assert_eq!(b.on_snapshot(&snap(40, vec![])), Sync::Gap);
        assert_eq!(b.on_snapshot(&snap(52, vec![])), Sync::Applied);
        assert!(b.is_live());
    }

    #[test]
    fn a_failed_fetch_is_asked_for_again_and_reset_starts_over() {
        let mut b = LocalBook::new();
        assert_eq!(b.on_diff(diff(1, 2, 0, vec![])), Sync::NeedSnapshot);
        b.snapshot_failed();
        assert_eq!(b.on_diff(diff(3, 4, 2, vec![])), Sync::NeedSnapshot);
        b.on_snapshot(&snap(3, vec![lv(5, 5)]));
        assert!(b.is_live());
        b.reset();
        assert!(b.bids.is_empty());
        assert_eq!(b.on_diff(diff(9, 9, 4, vec![])), Sync::NeedSnapshot);
        // A stale snapshot after the book is live again is ignored.
        b.on_snapshot(&snap(9, vec![]));
        assert_eq!(b.on_snapshot(&snap(1, vec![lv(7, 7)])), Sync::Pending);
        assert!(b.bids.is_empty());
    }
}
