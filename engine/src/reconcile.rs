//! Reconciliation: the engine's book against the venue, at start-up, every minute
//! and after every user-stream reconnect (seed 001, seed 003 §1b).
//!
//! 0. The orders that processes which stopped left only in their journals get their
//!    rows (`super::journal`), so the steps below see them as ours.
//! 1. Every order not final (whatever its age: a GTC order rests) is asked about: its state and trades are
//!    adopted; one the venue never had is REJECTED once it can no longer arrive.
//!    Orders that ended (cancelled, expired, rejected) in the last 24 h are checked
//!    against the venue's trades of their symbol: one whose venue fills are ahead of
//!    the book's is re-read and its missing trades booked.
//! 2. Open orders on the venue that nobody here owns: ours by client-id prefix are
//!    orphans and are cancelled; foreign ones are reported and left alone.
//! 3. Per symbol, the venue's net position (less the operator's house positions)
//!    against Σ of the sub-accounts' positions. Equal: in sync. The exchange flat and
//!    the book not: every virtual position on the symbol is closed virtually at the
//!    last fill price (the seeds' rule). Otherwise: an alarm, and orders that open are
//!    refused on that symbol until it is in line again. A symbol with a fill in the
//!    last few seconds is left for the next run: its fill may still be in flight.
//!
//! Every action is a `reconciliation_log` row and a count.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;

use database::ledger;
use database::orders::{self, Source};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trading::order::{OrderEvent, OrderState, CLIENT_ID_PREFIX};

use super::closing::CloseError;
pub use super::config::ReconcileLock;
use super::execution::Executor;

pub const ACTIONS: &str = "greekstream_reconciliation_actions_total";
pub const DESYNCED: &str = "greekstream_desynced_symbols";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Another engine held the lock (or Redis could not be asked): nothing was done.
    pub skipped: bool,
    /// Orders written back from the journals of processes that stopped.
    pub orders_journaled: usize,
    pub orders_checked: usize,
    pub orders_changed: usize,
    pub orphans_cancelled: usize,
    pub foreign_orders: usize,
    /// (symbol, exchange less house, book).
    pub desynced: Vec<(String, Decimal, Decimal)>,
    pub virtual_closes: usize,
    /// Final orders whose venue fills were ahead of the book, re-read and booked.
    pub fills_recovered: usize,
}

impl Executor {
    async fn action(&self, kind: &'static str, symbol: Option<&str>, detail: Value) {
        metrics::counter!(ACTIONS, "kind" => kind).increment(1);
        if let Err(e) = orders::log_reconciliation(&self.inner.pool, kind, symbol, detail).await {
            tracing::warn!(error = %e, kind, "reconciliation log not written");
        }
    }

    /// One full reconciliation (waits for one already running).
    pub async fn reconcile(&self) -> Result<ReconcileReport, CloseError> {
        let i = &self.inner;
        let _one = i.reconciling.lock().await;
        let token = match &i.config.lock {
            None => None,
            Some(lock) => match lock.take().await {
                Ok(Some(token)) => Some(token),
                Ok(None) => {
                    metrics::counter!(ACTIONS, "kind" => "SKIPPED_LOCKED").increment(1);
                    return Ok(ReconcileReport {
                        skipped: true,
                        ..Default::default()
                    });
                }
                Err(e) => {
                    metrics::counter!(ACTIONS, "kind" => "SKIPPED_NO_LOCK").increment(1);
                    tracing::warn!(error = %e, "reconciliation lock unavailable: this round is skipped");
                    return Ok(ReconcileReport {
                        skipped: true,
                        ..Default::default()
                    });
                }
            },
        };
        let result = self.reconcile_locked().await;
        if let (Some(lock), Some(token)) = (&i.config.lock, token) {
            lock.release(&token).await;
        }
        result
    }

    async fn reconcile_locked(&self) -> Result<ReconcileReport, CloseError> {
        let i = &self.inner;
        let mut report = ReconcileReport::default();

        // 0. Every order sent has its row: the rows this process is writing, and
        //    those a stopped process left in its journal only.
        self.rows_written().await;
        let replayed = super::journal::replay(&i.config.journal_dir, &i.scope, &i.pool).await?;
        report.orders_journaled = replayed.orders;
        if replayed.orders > 0 {
            self.action(
                "JOURNAL_REPLAYED",
                None,
                json!({"files": replayed.files, "orders": replayed.orders}),
            )
            .await;
        }

        // 1. Orders not final.
        for o in orders::open_orders(&i.pool).await? {
            report.orders_checked += 1;
            if o.order.state == OrderState::New {
                // Written, never sent (the process stopped in between).
                self.apply_event(&o.client_order_id, OrderEvent::NotSent, Source::Reconcile)
                    .await?;
                report.orders_changed += 1;
                continue;
            }
            let q = [
                ("symbol", o.symbol.clone()),
                ("origClientOrderId", o.client_order_id.clone()),
            ];
            match i.rest.signed(Method::GET, "/fapi/v1/order", &q).await {
                Ok(body) => {
                    let Ok(v) = serde_json::from_str::<Value>(&body) else {
                        continue;
                    };
                    self.adopt(&o.client_order_id, &o.symbol, &v, Source::Reconcile)
                        .await?;
                }
                Err(e) if e.code() == Some(-2013) => {
                    let venue_now = chrono::Utc::now().timestamp_millis()
                        + i.rest.stats.time_offset_ms.load(Relaxed);
                    let sent = o.sent_at_ms.unwrap_or(0);
                    if venue_now >= sent + i.config.acceptance_window.as_millis() as i64 {
                        self.apply_event(
                            &o.client_order_id,
                            OrderEvent::NotFound,
                            Source::Reconcile,
                        )
                        .await?;
                        self.action(
                            "ORDER_NOT_FOUND",
                            Some(&o.symbol),
                            json!({"clientOrderId": o.client_order_id}),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    tracing::debug!(order = %o.client_order_id, error = %e, "order query failed");
                    continue;
                }
            }
            let now = orders::by_client_id(&i.pool, &o.client_order_id).await?;
            if now.as_ref().is_some_and(|n| n.order != o.order) {
                report.orders_changed += 1;
                self.action(
                    "ORDER_UPDATED",
                    Some(&o.symbol),
                    json!({"clientOrderId": o.client_order_id, "from": o.order.state.as_str(),
                           "to": now.map(|n| n.order.state.as_str())}),
                )
                .await;
            }
        }

        // 1b. Orders final in the last 24 h that the venue filled more of than the book
        //     holds (a fill whose event was lost around a cancel or an expiry): one
        //     userTrades read per symbol, the order re-read where it is ahead.
        report.fills_recovered = self.recover_late_fills().await?;

        // 2. Open orders on the venue.
        let body = i
            .rest
            .signed(Method::GET, "/fapi/v1/openOrders", &[])
            .await?;
        let open: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        for v in open {
            let cid = v["clientOrderId"].as_str().unwrap_or_default().to_owned();
            let symbol = v["symbol"].as_str().unwrap_or_default().to_owned();
            if !cid.starts_with(CLIENT_ID_PREFIX) {
                report.foreign_orders += 1;
                self.action(
                    "FOREIGN_ORDER",
                    Some(&symbol),
                    json!({"clientOrderId": cid, "orderId": v["orderId"]}),
                )
                .await;
                continue;
            }
            // One this process is still writing is ours, not an orphan.
            self.row_written(&cid).await;
            let ours = orders::by_client_id(&i.pool, &cid).await?;
            if ours.as_ref().is_some_and(|o| !o.order.state.is_final()) {
                continue;
            }
            let q = [
                ("symbol", symbol.clone()),
                ("origClientOrderId", cid.clone()),
            ];
            if i.rest
                .signed(Method::DELETE, "/fapi/v1/order", &q)
                .await
                .is_ok()
            {
                report.orphans_cancelled += 1;
                self.action(
                    "ORPHAN_CANCELLED",
                    Some(&symbol),
                    json!({"clientOrderId": cid,
                    "known": ours.is_some()}),
                )
                .await;
            }
        }

        // 3. Positions. Each symbol is judged under its lock (no fill is booked on it
        //    meanwhile) on the venue's position read again under that lock, and only
        //    when nothing of ours is moving on it: no fill booked in the last seconds,
        //    no order on its way, no market order not yet final.
        let (rows, _) = i.rest.position_risk().await?;
        let symbols: BTreeSet<String> = rows
            .into_iter()
            .map(|r| r.symbol)
            .chain(ledger::open_symbols(&i.pool).await?)
            .collect();
        let recent = |s: &str| {
            i.last_fill
                .lock()
                .expect("fills lock")
                .get(s)
                .is_some_and(|t| t.elapsed() < i.config.fill_debounce)
        };
        let working = orders::working_symbols(&i.pool).await?;
        for s in symbols {
            if recent(&s) || self.moving(&s) || working.markets.contains(&s) {
                continue;
            }
            let _judging = self.symbol_guard(&s).await;
            if recent(&s) || self.moving(&s) {
                continue;
            }
            let (rows, _) = i.rest.position_risk_of(&s).await?;
            let venue = rows.iter().map(|r| r.amount).sum::<Decimal>() - self.house_of(&s).await?;
            let book = ledger::book_net(&i.pool, &s).await?;
            if venue == book {
                if i.blocked.lock().expect("blocked lock").remove(&s) {
                    self.action(
                        "POSITION_IN_SYNC",
                        Some(&s),
                        json!({"net": venue.to_string()}),
                    )
                    .await;
                }
                continue;
            }
            if venue.is_zero() && working.resting.contains(&s) {
                // A resting order of ours may be filling right now: closing the book
                // virtually could leave that fill with no position. The next round.
                self.action(
                    "VIRTUAL_CLOSE_DEFERRED",
                    Some(&s),
                    json!({"book": book.to_string(), "why": "orders of ours rest on the symbol"}),
                )
                .await;
                continue;
            }
            if venue.is_zero() {
                let price = match ledger::last_fill_price(&i.pool, &s).await? {
                    Some(p) => p,
                    None => match i.prices.mark(&s).await {
                        Ok(q) => q.price,
                        Err(_) => continue,
                    },
                };
                for p in ledger::open_positions(&i.pool, None)
                    .await?
                    .into_iter()
                    .filter(|p| p.symbol == s)
                {
                    self.close_virtually(&p, price, "RECONCILE").await?;
                    report.virtual_closes += 1;
                    self.action(
                        "VIRTUAL_CLOSE",
                        Some(&s),
                        json!({"positionId": p.id,
                        "subAccountId": p.sub_account_id, "price": price.to_string()}),
                    )
                    .await;
                }
                continue;
            }
            tracing::error!(symbol = %s, %venue, %book, "exchange position disagrees with the sub-accounts: orders that open are refused on it");
            let newly = i.blocked.lock().expect("blocked lock").insert(s.clone());
            if newly {
                self.action(
                    "POSITION_DESYNC",
                    Some(&s),
                    json!({"exchange": venue.to_string(), "book": book.to_string()}),
                )
                .await;
            }
            report.desynced.push((s, venue, book));
        }
        metrics::gauge!(DESYNCED).set(i.blocked.lock().expect("blocked lock").len() as f64);
        Ok(report)
    }

    /// Step 1b: final orders of the last 24 h whose venue trades add up to more than
    /// they filled in the book get their missing trades booked.
    async fn recover_late_fills(&self) -> Result<usize, CloseError> {
        let i = &self.inner;
        let finals = orders::final_orders_since(&i.pool, 24).await?;
        let mut recovered = 0;
        for group in finals.chunk_by(|a, b| a.symbol == b.symbol) {
            let symbol = &group[0].symbol;
            let since = chrono::Utc::now().timestamp_millis() - 24 * 3_600_000;
            let mut venue_filled: std::collections::HashMap<String, Decimal> = Default::default();
            let mut from: Option<u64> = None;
            // Pages of 1 000 trades, at most 10 (10 000 trades per symbol per day).
            for _ in 0..10 {
                let mut q = vec![("symbol", symbol.clone()), ("limit", "1000".to_owned())];
                match from {
                    Some(id) => q.push(("fromId", id.to_string())),
                    None => q.push(("startTime", since.to_string())),
                }
                let body = i
                    .rest
                    .signed(Method::GET, "/fapi/v1/userTrades", &q)
                    .await?;
                let trades: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
                for t in &trades {
                    let (Some(order), Some(qty)) = (
                        t["orderId"].as_u64(),
                        t["qty"].as_str().and_then(|q| q.parse::<Decimal>().ok()),
                    ) else {
                        continue;
                    };
                    *venue_filled.entry(order.to_string()).or_default() += qty;
                }
                match trades.last().and_then(|t| t["id"].as_u64()) {
                    Some(last) if trades.len() == 1000 => from = Some(last + 1),
                    _ => break,
                }
            }
            for o in group {
                let ahead = o
                    .order
                    .venue_id
                    .as_ref()
                    .and_then(|v| venue_filled.get(v))
                    .is_some_and(|venue| *venue > o.order.filled);
                if !ahead {
                    continue;
                }
                let q = [
                    ("symbol", o.symbol.clone()),
                    ("origClientOrderId", o.client_order_id.clone()),
                ];
                let body = i.rest.signed(Method::GET, "/fapi/v1/order", &q).await?;
                let Ok(v) = serde_json::from_str::<Value>(&body) else {
                    continue;
                };
                self.adopt(&o.client_order_id, &o.symbol, &v, Source::Reconcile)
                    .await?;
                recovered += 1;
                self.action(
                    "FILL_RECOVERED",
                    Some(&o.symbol),
                    json!({"clientOrderId": o.client_order_id, "state": o.order.state.as_str(),
                           "bookFilled": o.order.filled.to_string()}),
                )
                .await;
            }
        }
        Ok(recovered)
    }

    /// Reconciles every `reconcile_every` until cancelled (the first round one period
    /// after start: start-up recovery has just reconciled).
    pub async fn run_reconciler(self) {
        let every = self.inner.config.reconcile_every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.cancel.cancelled() => return,
            }
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconciliation failed; retried next round");
            }
        }
    }
}
