//! An order made durable before it is sent: its journal entry appended, then its row
//! written beside the venue call, and whoever reads the order waiting for that row.

use std::time::Duration;

use backoff::backoff::Backoff;
use database::ledger::LedgerError;
use database::orders::{self, NewOrder, OrderRow};
use trading::risk::Refusal;

use super::execution::{Executor, PlaceError};

impl Executor {
    /// Makes `orders` durable in the journal, then starts writing their rows; returns
    /// them as they stand (SUBMITTED, sent at `sent_at`). Refused before anything is
    /// written: an order its row's checks would refuse (once sent, its row must not
    /// fail). Every order gets fresh random ids.
    pub(super) fn write_ahead(
        &self,
        orders: Vec<NewOrder>,
        sent_at: i64,
    ) -> Result<Vec<OrderRow>, PlaceError> {
        use ring::rand::SecureRandom;
        let i = &self.inner;
        let random = ring::rand::SystemRandom::new();
        let mut ids = Vec::with_capacity(orders.len());
        for o in &orders {
            o.check()
                .map_err(|why| PlaceError::Refused(Refusal::Invalid(why)))?;
            let mut b = [0u8; 16];
            random
                .fill(&mut b)
                .map_err(|_| PlaceError::Refused(Refusal::Invalid("no random source")))?;
            ids.push(orders::OrderIds::from_random(b));
        }
        let entries: Vec<_> = ids
            .iter()
            .zip(&orders)
            .map(|(ids, o)| super::journal::Entry::new(ids, o, sent_at))
            .collect();
        // The durable write blocks this thread: on a multi-thread runtime the
        // worker's other tasks move to another thread meanwhile (the write itself
        // stays here: a hand-off to a writer thread costs more than the write).
        let append = || i.journal.append(&entries);
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let appended = match i.config.journal_sync {
            super::journal::JournalSync::Always if multi => tokio::task::block_in_place(append),
            _ => append(),
        };
        appended.map_err(PlaceError::Journal)?;
        {
            let mut sent = i.unsettled.lock().expect("unsettled lock");
            for (ids, o) in ids.iter().zip(&orders).filter(|(_, o)| !o.reduce_only) {
                sent.entry(o.sub_account_id.clone()).or_default().insert(
                    ids.client_order_id.clone(),
                    trading::risk::PendingOrder {
                        symbol: o.symbol.clone(),
                        side: o.side,
                        remaining: o.quantity,
                        price: o.price,
                        leverage: o.leverage,
                    },
                );
            }
        }
        Ok(ids
            .into_iter()
            .zip(orders)
            .map(|(ids, o)| {
                let row = OrderRow::submitted(&ids, &o, sent_at);
                self.write_row(ids, o, sent_at);
                row
            })
            .collect())
    }

    /// Writes a journaled order's row, retrying while the database is away (the order
    /// is on its way to the venue: its row must follow). Readers of the order wait
    /// for it ([`Executor::row_written`]).
    fn write_row(&self, ids: orders::OrderIds, o: NewOrder, sent_at: i64) {
        let (written, rx) = tokio::sync::watch::channel(false);
        let client_id = ids.client_order_id.clone();
        self.inner
            .rows
            .lock()
            .expect("rows lock")
            .insert(client_id.clone(), rx);
        let me = self.clone();
        tokio::spawn(async move {
            let i = &me.inner;
            let started = std::time::Instant::now();
            let mut retry =
                streaming::retry::exponential(Duration::from_millis(20), Duration::from_secs(2));
            loop {
                match orders::insert_submitted(&i.pool, &ids, &o, sent_at, Some(&i.instance)).await
                {
                    Ok(_) => {
                        i.journal.settled(1);
                        i.stats.record(|l| &mut l.row_us, started.elapsed());
                        let _ = written.send(true);
                        break;
                    }
                    Err(e @ LedgerError::AccountNotFound(_)) => {
                        // Checked just before: only an account removed in between.
                        tracing::error!(client_order_id = %client_id, error = %e, "a sent order's row was refused; it stays in the journal");
                        break;
                    }
                    Err(e) => {
                        let wait = retry.next_backoff().unwrap_or(Duration::from_secs(2));
                        tracing::warn!(client_order_id = %client_id, error = %e, retry_in_ms = wait.as_millis() as u64, "a sent order's row is not written yet");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            // The journal keeps it: the next reconciliation writes it.
                            _ = i.cancel.cancelled() => break,
                        }
                    }
                }
            }
            i.rows.lock().expect("rows lock").remove(&client_id);
        });
    }

    /// Returns once the row of the order with `client_id` is written, if it is one
    /// this executor sent and is still writing.
    pub(super) async fn row_written(&self, client_id: &str) {
        let pending = self
            .inner
            .rows
            .lock()
            .expect("rows lock")
            .get(client_id)
            .cloned();
        if let Some(mut rx) = pending {
            let _ = rx.wait_for(|w| *w).await;
        }
    }

    /// Returns once every row being written when it was called is written.
    pub(super) async fn rows_written(&self) {
        let pending: Vec<_> = self
            .inner
            .rows
            .lock()
            .expect("rows lock")
            .values()
            .cloned()
            .collect();
        for mut rx in pending {
            let _ = rx.wait_for(|w| *w).await;
        }
    }
}
