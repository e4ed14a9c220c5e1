//! The unified position stream: the processor applies every snapshot to the book
//! and publishes the change on a bounded broadcast; risk, execution, algos and the
//! API subscribe.
//!
//! A subscriber starts with a snapshot of the book taken under the same lock as the
//! subscription, so nothing falls between the two. One that falls more than the
//! channel's capacity behind does not die and does not silently skip: its next item
//! is a fresh snapshot, after which it sees every update with a higher `seq`
//! (older ones still buffered are dropped, the snapshot already holds them).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast::{self, error::RecvError};

use model::portfolio::{Book, Position, PositionUpdate};
use model::GreekSnapshot;

pub const RESYNCS: &str = "greekstream_position_stream_resyncs_total";
pub const UPDATES: &str = "greekstream_position_updates_total";

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// The whole book as of `seq`: at the start, and after falling behind.
    Snapshot {
        seq: u64,
        positions: Vec<Position>,
    },
    Update(Arc<PositionUpdate>),
}

struct Inner {
    book: Mutex<Book>,
    tx: broadcast::Sender<Arc<PositionUpdate>>,
}

impl std::fmt::Debug for PositionHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PositionHub").finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct PositionHub {
    inner: Arc<Inner>,
}

impl PositionHub {
    /// `capacity`: updates a subscriber may fall behind before it is resynchronized.
    pub fn new(capacity: usize) -> Self {
        metrics::counter!(RESYNCS).increment(0);
        metrics::counter!(UPDATES).increment(0);
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                book: Mutex::new(Book::new()),
                tx,
            }),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.inner.book.lock().expect("book lock")
    }

    /// Applies a snapshot and publishes the change; returns its `seq`. Sending under
    /// the book lock keeps the channel in `seq` order.
    pub fn apply(&self, s: &GreekSnapshot) -> Option<u64> {
        let mut book = self.book();
        let update = book.apply(s)?;
        let seq = update.seq;
        metrics::counter!(UPDATES).increment(1);
        // No subscriber is not an error: the book is still current.
        let _ = self.inner.tx.send(Arc::new(update));
        Some(seq)
    }

    /// Reads the book (aggregates, positions) under its lock.
    pub fn read<R>(&self, f: impl FnOnce(&Book) -> R) -> R {
        f(&self.book())
    }

    pub fn subscribe(&self) -> Subscription {
        let book = self.book();
        let rx = self.inner.tx.subscribe();
        let (seq, positions) = book.snapshot();
        Subscription {
            hub: self.clone(),
            rx,
            last_seq: seq,
            pending: Some(StreamItem::Snapshot { seq, positions }),
            resyncs: 0,
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("last_seq", &self.last_seq)
            .field("resyncs", &self.resyncs)
            .finish_non_exhaustive()
    }
}

pub struct Subscription {
    hub: PositionHub,
    rx: broadcast::Receiver<Arc<PositionUpdate>>,
    last_seq: u64,
    pending: Option<StreamItem>,
    /// How many times this subscriber fell behind and was resynchronized.
    pub resyncs: u64,
}

impl Subscription {
    /// The next item; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<StreamItem> {
        if let Some(item) = self.pending.take() {
            return Some(item);
        }
        loop {
            match self.rx.recv().await {
                Ok(u) if u.seq <= self.last_seq => continue,
                Ok(u) => {
                    self.last_seq = u.seq;
                    return Some(StreamItem::Update(u));
                }
                Err(RecvError::Lagged(_)) => {
                    self.resyncs += 1;
                    metrics::counter!(RESYNCS).increment(1);
                    let (seq, positions) = self.hub.book().snapshot();
                    self.last_seq = seq;
                    return Some(StreamItem::Snapshot { seq, positions });
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use rust_decimal::Decimal;
    use streaming::Broker;

    use super::*;
    use model::{Contract, Greeks};

    fn snap(symbol: &str, qty: i64) -> GreekSnapshot {
        let contract = Arc::new(Contract::perpetual(symbol, Decimal::ONE).unwrap());
        let q = Decimal::from(qty);
        GreekSnapshot {
            greeks_source: None,
            ..GreekSnapshot::with_greeks(
                Broker::Binance,
                model::AccountId::new("a").unwrap(),
                contract,
                q,
                Greeks::LINEAR,
                Utc::now(),
            )
        }
    }

    /// What a subscriber believes the book holds after applying what it received.
    fn apply(view: &mut BTreeMap<String, Decimal>, item: &StreamItem) -> u64 {
        match item {
            StreamItem::Snapshot { seq, positions } => {
                view.clear();
                for p in positions {
                    view.insert(p.contract.key().to_string(), p.quantity);
                }
                *seq
            }
            StreamItem::Update(u) => {
                let k = u.position.contract.key().to_string();
                if u.position.quantity.is_zero() {
                    view.remove(&k);
                } else {
                    view.insert(k, u.position.quantity);
                }
                u.seq
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_starts_from_a_snapshot_and_sees_every_later_seq() {
        let hub = PositionHub::new(64);
        hub.apply(&snap("AAA", 1));
        let mut sub = hub.subscribe();
        hub.apply(&snap("BBB", 2));
        hub.apply(&snap("AAA", 0));
        let mut view = BTreeMap::new();
        let mut seqs = Vec::new();
        for _ in 0..3 {
            seqs.push(apply(&mut view, &sub.recv().await.unwrap()));
        }
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(view.len(), 1);
        assert_eq!(view["BBB PERP"], Decimal::from(2));
        assert_eq!(sub.resyncs, 0);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_resyncs_from_a_snapshot_and_converges() {
        let hub = PositionHub::new(8);
        let mut slow = hub.subscribe();
        let mut view = BTreeMap::new();
        let mut last = apply(&mut view, &slow.recv().await.unwrap());
        // 500 changes while the subscriber is not reading: far past the capacity.
        for i in 0..500 {
            hub.apply(&snap(&format!("S{}", i % 37), (i % 5) as i64));
        }
        let mut saw_snapshot = false;
        while last < hub.read(Book::seq) {
            let item = slow.recv().await.unwrap();
            saw_snapshot |= matches!(item, StreamItem::Snapshot { .. });
            let seq = apply(&mut view, &item);
            assert!(seq > last, "seq went from {last} to {seq}");
            last = seq;
        }
        assert!(saw_snapshot && slow.resyncs >= 1);
        let truth: BTreeMap<String, Decimal> = hub.read(|b| {
            b.positions()
                .map(|p| (p.contract.key().to_string(), p.quantity))
                .collect()
        });
        assert_eq!(view, truth);
    }
}
