//! The latest prices per symbol (mark, bid, ask and their venue times), recorded by the
//! market handler and read by whoever publishes them: the price cache in Redis
//! (`greekstream::bus::price_cache`) and, later, the trading engine. In memory only;
//! writing them anywhere is not this crate's business.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rust_decimal::Decimal;

/// The latest prices of one symbol (venue times in epoch ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceEntry {
    pub mark: Option<Decimal>,
    pub mark_time: i64,
    pub bid: Option<Decimal>,
    pub ask: Option<Decimal>,
    pub book_time: i64,
}

impl PriceEntry {
    pub fn mid(&self) -> Option<Decimal> {
        match (self.bid, self.ask) {
            (Some(b), Some(a)) if b > Decimal::ZERO && a >= b => Some((a + b) / Decimal::TWO),
            _ => None,
        }
    }

    /// The hash fields written to the cache (only the values known).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::with_capacity(7);
        let mut put = |k, v: Option<Decimal>| {
            if let Some(v) = v {
                f.push((k, v.normalize().to_string()));
            }
        };
        put("mark", self.mark);
        put("bid", self.bid);
        put("ask", self.ask);
        put("mid", self.mid());
        if self.mark_time > 0 {
            f.push(("mark_time", self.mark_time.to_string()));
        }
        if self.book_time > 0 {
            f.push(("book_time", self.book_time.to_string()));
        }
        f.push((
            "updated_at",
            chrono::Utc::now().timestamp_millis().to_string(),
        ));
        f
    }
}

/// What the market handler writes into and the flush task reads from.
#[derive(Debug, Default)]
pub struct Prices {
    inner: Mutex<(HashMap<String, PriceEntry>, HashSet<String>)>,
    /// Woken on every update, for one waiter (the risk loop): a change while it is
    /// busy is kept as a permit, so none is missed.
    changed: tokio::sync::Notify,
}

impl Prices {
    pub fn update(&self, symbol: &str, f: impl FnOnce(&mut PriceEntry)) {
        let mut g = self.inner.lock().expect("prices lock");
        let (entries, dirty) = &mut *g;
        match entries.get_mut(symbol) {
            Some(e) => f(e),
            None => {
                let mut e = PriceEntry::default();
                f(&mut e);
                entries.insert(symbol.to_owned(), e);
            }
        }
        if !dirty.contains(symbol) {
            dirty.insert(symbol.to_owned());
        }
        drop(g);
        self.changed.notify_one();
    }

    /// Resolves after an update since the last time it resolved (one waiter).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn get(&self, symbol: &str) -> Option<PriceEntry> {
        self.inner
            .lock()
            .expect("prices lock")
            .0
            .get(symbol)
            .cloned()
    }

    /// The symbols changed since the last call, with their latest values.
    pub fn take_dirty(&self) -> Vec<(String, PriceEntry)> {
        let mut g = self.inner.lock().expect("prices lock");
        let (entries, dirty) = &mut *g;
        dirty
            .drain()
            .filter_map(|s| entries.get(&s).map(|e| (s, e.clone())))
            .collect()
    }

    /// Everything counts as changed again (after a reconnect of the cache).
    pub fn mark_all_dirty(&self) {
        let mut g = self.inner.lock().expect("prices lock");
        let (entries, dirty) = &mut *g;
        dirty.extend(entries.keys().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_needs_a_sane_book() {
        let mut e = PriceEntry {
            bid: Some(Decimal::from(100)),
            ask: Some(Decimal::from(101)),
            ..PriceEntry::default()
        };
        assert_eq!(e.mid(), Some(Decimal::new(1005, 1)));
        e.ask = Some(Decimal::from(99));
        assert_eq!(e.mid(), None);
        let keys: Vec<_> = e.fields().into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"bid") && !keys.contains(&"mid") && !keys.contains(&"mark"));
    }

    #[test]
    fn dirty_symbols_are_taken_once() {
        let p = Prices::default();
        p.update("BTCUSDT", |e| e.mark = Some(Decimal::ONE));
        p.update("BTCUSDT", |e| e.bid = Some(Decimal::ONE));
        let batch = p.take_dirty();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1.bid, Some(Decimal::ONE));
        assert!(p.take_dirty().is_empty());
        p.mark_all_dirty();
        assert_eq!(p.take_dirty().len(), 1);
    }
}
