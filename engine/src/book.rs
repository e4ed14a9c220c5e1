//! Each account's book as the order path keeps it: read from the ledger, kept in
//! memory, read again after the engine's own writes (after fills off the fill path,
//! coalesced), and the orders sent since counted from memory until a read shows them.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use database::ledger::{self, LedgerError};
use database::orders::OrderRow;
use rust_decimal::Decimal;
use trading::evaluate::Prepared;
use trading::risk::OrderRequest;

use super::book_cache::{Book, CachedBook, PendingView, Refreshing};
use super::execution::{now_ms, Executor};
use super::risk_loop::RiskInput;

impl Executor {
    /// The account's pending orders: those its book holds, and those counted as sent
    /// (the book holds none of these) — read in place, without a copy of each.
    pub(super) fn pending_of(&self, account: &str, book: &Book, symbol: &str) -> PendingView {
        let mut view = PendingView {
            arriving: Vec::new(),
            resting: Vec::new(),
        };
        let mut add = |o: &trading::risk::PendingOrder| {
            if o.price.is_some() || o.symbol != symbol {
                view.resting.push(o.clone());
                return;
            }
            match view
                .arriving
                .iter_mut()
                .find(|f| f.side == o.side && f.leverage == o.leverage)
            {
                Some(f) => f.quantity += o.remaining,
                None => view.arriving.push(OrderRequest {
                    symbol: symbol.to_owned(),
                    side: o.side,
                    quantity: o.remaining,
                    limit: None,
                    leverage: o.leverage,
                    reduce_only: false,
                }),
            }
        };
        for r in &book.pending {
            add(&r.order);
        }
        if let Some(mine) = self
            .inner
            .unsettled
            .lock()
            .expect("unsettled lock")
            .get(account)
        {
            for (id, o) in mine {
                if let Some(o) = book.unbooked(id, o) {
                    add(&o);
                }
            }
        }
        view
    }

    /// Whether `row` is an order of ours still counted as sent.
    pub(super) fn tracked(&self, row: &OrderRow) -> bool {
        self.inner
            .unsettled
            .lock()
            .expect("unsettled lock")
            .get(&row.sub_account_id)
            .is_some_and(|m| m.contains_key(&row.client_order_id))
    }

    /// A position's cross liquidation price (the account's other positions at their
    /// last marks, this symbol at `price`) and its stored babysitter flag, just after
    /// the fill `a` of `row`: the book as last read, with what the fill did applied
    /// (the book is read again off the fill path).
    pub(super) async fn position_facts(
        &self,
        row: &OrderRow,
        a: &ledger::Applied,
        open: &str,
        after: &trading::position::Position,
        price: Decimal,
    ) -> (Option<Decimal>, bool) {
        let Ok(Some(book)) = self.book_of(&row.sub_account_id).await else {
            return (None, false);
        };
        let mut account = book.prepared.account().as_ref().clone();
        account.balance = a.balance;
        if let Some(closed) = a.closed_position.as_deref().filter(|c| *c != open) {
            account.positions.retain(|q| &*q.id != closed);
        }
        let excluded = match account.positions.iter_mut().find(|q| &*q.id == open) {
            Some(q) => {
                q.position = after.clone();
                q.babysitter_excluded
            }
            None => {
                account.positions.push(trading::evaluate::OpenPosition {
                    id: open.into(),
                    symbol: row.symbol.as_str().into(),
                    position: after.clone(),
                    babysitter_excluded: false,
                    opened_at: now_ms(),
                });
                false
            }
        };
        let prepared = Prepared::new(account);
        let held = &prepared.account().positions;
        let Some(k) = held.iter().position(|q| &*q.id == open) else {
            return (None, excluded);
        };
        let stream = self.inner.stream.as_ref();
        let value = prepared.value(|j| {
            let s = &held[j].symbol;
            if **s == *row.symbol {
                Some(price)
            } else {
                stream.and_then(|p| p.get(s)).and_then(|e| e.mark)
            }
        });
        let liquidation = value
            .positions
            .get(k)
            .map(|v| v.liquidation_price)
            .filter(|l| *l > Decimal::ZERO);
        (liquidation, excluded)
    }

    /// The account's book and rules as the order path reads them: from memory, read
    /// from the ledger when absent or older than `book_ttl`. The engine refreshes an
    /// account after each of its own writes to it ([`Executor::book_changed`]), so
    /// an order is checked without a database read before it.
    pub(super) async fn book_of(&self, account: &str) -> Result<Option<Arc<Book>>, LedgerError> {
        let i = &self.inner;
        if let Some(c) = i.books.lock().expect("books lock").get(account) {
            if c.at.elapsed() < i.config.book_ttl {
                return Ok(Some(c.book.clone()));
            }
        }
        Ok(self.read_book(account).await?.map(|(b, _)| b))
    }

    /// Reads `account`'s book and keeps it unless a read begun later was kept first
    /// (reads can overlap; the newest wins). The book as read, and whether it is kept.
    pub(super) async fn read_book(
        &self,
        account: &str,
    ) -> Result<Option<(Arc<Book>, bool)>, LedgerError> {
        let i = &self.inner;
        let read = i.book_reads.fetch_add(1, Relaxed) + 1;
        // The orders counted as sent: the read says what it holds of each.
        let ours: Vec<String> = i
            .unsettled
            .lock()
            .expect("unsettled lock")
            .get(account)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let Some(mut w) =
            ledger::watched_with_rules(&i.pool, account, Some(&i.instance), &ours).await?
        else {
            return Ok(None);
        };
        // What is counted as sent is counted from memory: the book keeps the rest
        // (orders of an earlier run or of another process; the read leaves out the
        // ones this engine sent), so a check adds the two without comparing ids. An
        // order leaves `unsettled` only after a read begun after it ended. The ids
        // are still compared for the orders a journal replay wrote without a sender.
        if let Some(sent) = i.unsettled.lock().expect("unsettled lock").get(account) {
            w.pending.retain(|r| !sent.contains_key(&r.client_order_id));
        }
        let book = Arc::new(Book::of(w));
        let mut books = i.books.lock().expect("books lock");
        let kept = books.get(account).is_none_or(|c| c.read < read);
        if kept {
            books.insert(
                account.to_owned(),
                CachedBook {
                    book: book.clone(),
                    at: std::time::Instant::now(),
                    read,
                },
            );
        }
        Ok(Some((book, kept)))
    }

    /// Drops every cached book (the global rules changed): each is read again.
    pub fn forget_books(&self) {
        self.inner.books.lock().expect("books lock").clear();
    }

    /// After a write to `account` (a close, a cancel, a rule): its book is read
    /// again, kept for the order path, and handed to the risk loop. Meanwhile orders
    /// use the book one write old rather than each going to the database. Whether
    /// the read succeeded.
    pub async fn book_changed(&self, account: &str) -> bool {
        match self.read_book(account).await {
            Ok(Some((b, kept))) => {
                if let (Some(risk), true) = (&self.inner.risk, kept) {
                    let _ = risk
                        .send(RiskInput::Book(b.prepared.account().as_ref().clone()))
                        .await;
                }
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, "book not re-read after a write");
                false
            }
        }
    }

    /// After a fill: `account`'s book is read again off the fill path, so the next
    /// fill is booked meanwhile; fills that come while a read runs are covered by one
    /// more read after it. `ended`: an order of ours now final, which stops counting
    /// as sent once a read begun after it ended is kept (until then it counts twice at
    /// worst, never not at all).
    pub(super) fn book_changed_soon(&self, account: &str, ended: Option<String>) {
        {
            let mut r = self.inner.refreshing.lock().expect("refreshing lock");
            if let Some(run) = r.get_mut(account) {
                run.again = true;
                run.ended.extend(ended);
                return;
            }
            r.insert(
                account.to_owned(),
                Refreshing {
                    again: false,
                    ended: ended.into_iter().collect(),
                },
            );
        }
        let me = self.clone();
        let account = account.to_owned();
        tokio::spawn(async move {
            let mut retry =
                streaming::retry::exponential(Duration::from_millis(20), Duration::from_secs(2));
            loop {
                let ended = {
                    let mut r = me.inner.refreshing.lock().expect("refreshing lock");
                    let run = r.entry(account.clone()).or_default();
                    run.again = false;
                    std::mem::take(&mut run.ended)
                };
                if me.book_changed(&account).await {
                    me.untrack(&account, &ended);
                    let mut r = me.inner.refreshing.lock().expect("refreshing lock");
                    if !r.get(&account).is_some_and(|run| run.again) {
                        r.remove(&account);
                        return;
                    }
                    continue;
                }
                // The database is away: they still count as sent until a read succeeds.
                me.inner
                    .refreshing
                    .lock()
                    .expect("refreshing lock")
                    .entry(account.clone())
                    .or_default()
                    .ended
                    .extend(ended);
                let wait = retry.next_backoff().unwrap_or(Duration::from_secs(2));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = me.inner.cancel.cancelled() => return,
                }
            }
        });
    }

    /// `ended` orders of `account` stop counting as sent.
    pub(super) fn untrack(&self, account: &str, ended: &[String]) {
        if ended.is_empty() {
            return;
        }
        let mut sent = self.inner.unsettled.lock().expect("unsettled lock");
        if let Some(m) = sent.get_mut(account) {
            for id in ended {
                m.remove(id);
            }
            if m.is_empty() {
                sent.remove(account);
            }
        }
    }
}
