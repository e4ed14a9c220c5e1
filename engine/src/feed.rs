//! The venue's word on our orders outside their replies: the user stream's updates,
//! the resolver asking about an order whose reply was ambiguous, and the venue's
//! clock.

use std::sync::atomic::Ordering::Relaxed;

use backoff::backoff::Backoff;
use database::ledger::LedgerError;
use database::orders::Source;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;
use streaming::binance::rest::RestError;
use streaming::binance::wire::OrderUpdate;
use streaming::binance::OrderFeed;
use tokio::sync::mpsc;
use trading::order::{self as machine, Execution, OrderEvent};

use super::execution::*;

impl Executor {
    /// Measures the venue's clock now: the offset signs requests, the drift gates
    /// opening orders.
    pub async fn sync_clock(&self) -> Result<i64, RestError> {
        let i = &self.inner;
        let offset = i.rest.sync_time().await?;
        let drift = offset.abs();
        i.stats.drift_ms.store(drift, Relaxed);
        metrics::gauge!(TIME_DRIFT).set(drift as f64 / 1000.0);
        if drift > i.config.drift_block.as_millis() as i64 {
            tracing::error!(
                drift_ms = drift,
                "clock drift over the limit: orders that open are refused"
            );
        } else if drift > i.config.drift_warn.as_millis() as i64 {
            tracing::warn!(drift_ms = drift, "clock drift");
        }
        Ok(offset)
    }

    /// Measures the clock every `clock_every` until cancelled.
    pub async fn run_clock(self) {
        let every = self.inner.config.clock_every;
        loop {
            if let Err(e) = self.sync_clock().await {
                tracing::warn!(error = %e, "venue clock not measured");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.cancel.cancelled() => return,
            }
        }
    }

    /// One user-stream message.
    pub async fn on_feed(&self, feed: OrderFeed) {
        match feed {
            // Events may have been missed while the stream was down: read them back.
            OrderFeed::Opened => {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.reconcile().await {
                        tracing::warn!(error = %e, "reconciliation after a reconnect failed");
                    }
                });
            }
            OrderFeed::Update { order, .. } => self.on_update(*order).await,
        }
    }

    pub(super) async fn on_update(&self, u: OrderUpdate) {
        let i = &self.inner;
        let received = std::time::Instant::now();
        let trade = u.execution_type == "TRADE";
        if super::venue_closes::is_venue_forced(&u) {
            self.on_venue_forced(&u).await;
            return;
        }
        if !u.client_order_id.starts_with(machine::CLIENT_ID_PREFIX) {
            i.stats.foreign.fetch_add(1, Relaxed);
            return;
        }
        let venue_id = u.order_id.to_string();
        let event = match u.execution_type.as_str() {
            "TRADE" => OrderEvent::Fill(Execution {
                trade_id: u.trade_id.to_string(),
                quantity: u.last_filled_qty,
                price: u.last_filled_price,
                fee: if u.commission_asset.as_deref().is_none_or(|a| a == "USDT") {
                    u.commission
                } else {
                    Decimal::ZERO
                },
            }),
            "CANCELED" => OrderEvent::Canceled,
            "EXPIRED" => OrderEvent::Expired,
            "REJECTED" => OrderEvent::Rejected {
                code: "REJECTED".into(),
                message: "rejected by the venue".into(),
            },
            // NEW, and what changes nothing here (AMENDMENT, CALCULATED): the venue id.
            _ => OrderEvent::Accepted {
                venue_id: venue_id.clone(),
            },
        };
        let stored = self
            .transition_with(&u.client_order_id, Some(venue_id), event, Source::Stream)
            .await;
        if let Err(err) = stored {
            i.stats.feed_errors.fetch_add(1, Relaxed);
            metrics::counter!(FEED_ERRORS, "kind" => "storage").increment(1);
            tracing::error!(order = %u.client_order_id, error = %err, "order update not stored");
        }
        if trade {
            let took = received.elapsed();
            metrics::histogram!(FILL_BOOKING).record(took.as_secs_f64());
            i.stats.record(|l| &mut l.fill_booking_us, took);
        }
    }

    /// Feeds the user stream's order updates until `cancel`.
    pub async fn run_feed(self, mut feed: mpsc::Receiver<OrderFeed>) {
        let cancel = self.inner.cancel.clone();
        loop {
            tokio::select! {
                f = feed.recv() => match f {
                    Some(f) => self.on_feed(f).await,
                    None => return,
                },
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Counts an ambiguous reply and starts resolving it.
    pub(super) fn resolve_later(&self, client_id: &str, symbol: &str, sent_at: i64) {
        let i = &self.inner;
        i.stats.ambiguous.fetch_add(1, Relaxed);
        metrics::counter!(AMBIGUOUS).increment(1);
        let me = self.clone();
        let (cid, sym) = (client_id.to_owned(), symbol.to_owned());
        tokio::spawn(async move { me.resolve(&cid, &sym, sent_at).await });
    }

    /// Asks the venue about an UNKNOWN order until it answers for it.
    pub(super) async fn resolve(&self, client_id: &str, symbol: &str, sent_at: i64) {
        let i = &self.inner;
        let mut backoff =
            streaming::retry::exponential(i.config.resolve_first, i.config.resolve_max);
        loop {
            let wait = backoff.next_backoff().unwrap_or(i.config.resolve_max);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = i.cancel.cancelled() => return,
            }
            let q = [
                ("symbol", symbol.to_owned()),
                ("origClientOrderId", client_id.to_owned()),
            ];
            match i.rest.signed(Method::GET, "/fapi/v1/order", &q).await {
                Ok(body) => {
                    let Ok(v) = serde_json::from_str::<Value>(&body) else {
                        continue;
                    };
                    if self
                        .adopt(client_id, symbol, &v, Source::Reconcile)
                        .await
                        .is_ok()
                    {
                        i.stats.resolved.fetch_add(1, Relaxed);
                        metrics::counter!(AMBIGUOUS, "resolved" => "exists").increment(1);
                        return;
                    }
                }
                Err(e) if e.code() == Some(-2013) => {
                    let venue_now = now_ms() + i.rest.stats.time_offset_ms.load(Relaxed);
                    let past = venue_now >= sent_at + i.config.acceptance_window.as_millis() as i64;
                    if past
                        && self
                            .transition(client_id, OrderEvent::NotFound, Source::Reconcile)
                            .await
                            .is_ok()
                    {
                        i.stats.resolved.fetch_add(1, Relaxed);
                        metrics::counter!(AMBIGUOUS, "resolved" => "never_existed").increment(1);
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(order = client_id, error = %e, "order query failed; retrying")
                }
            }
        }
    }

    /// Applies what a venue order query says: accepted, its trades, its final state.
    pub(super) async fn adopt(
        &self,
        client_id: &str,
        symbol: &str,
        v: &Value,
        source: Source,
    ) -> Result<(), LedgerError> {
        let i = &self.inner;
        let Some(venue_id) = v["orderId"].as_u64() else {
            return Ok(());
        };
        let known = self
            .transition(
                client_id,
                OrderEvent::Accepted {
                    venue_id: venue_id.to_string(),
                },
                source,
            )
            .await?
            .map_or(Decimal::ZERO, |r| r.order.filled);
        let status = v["status"].as_str().unwrap_or("");
        let executed: Decimal = v["executedQty"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        // The venue's fills ahead of the book's: read its trades (each booked once).
        if executed > known {
            let q = [
                ("symbol", symbol.to_owned()),
                ("orderId", venue_id.to_string()),
            ];
            let body = i
                .rest
                .signed(Method::GET, "/fapi/v1/userTrades", &q)
                .await
                .map_err(|e| LedgerError::Corrupt {
                    what: "userTrades",
                    value: e.to_string(),
                })?;
            let trades: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
            for t in trades {
                let dec = |k: &str| {
                    t[k].as_str()
                        .and_then(|s| s.parse::<Decimal>().ok())
                        .unwrap_or_default()
                };
                let fee = if t["commissionAsset"].as_str().is_none_or(|a| a == "USDT") {
                    dec("commission")
                } else {
                    Decimal::ZERO
                };
                let Some(id) = t["id"].as_u64() else { continue };
                self.transition(
                    client_id,
                    OrderEvent::Fill(Execution {
                        trade_id: id.to_string(),
                        quantity: dec("qty"),
                        price: dec("price"),
                        fee,
                    }),
                    source,
                )
                .await?;
            }
        }
        let last = match status {
            "CANCELED" => Some(OrderEvent::Canceled),
            "EXPIRED" => Some(OrderEvent::Expired),
            "REJECTED" => Some(OrderEvent::Rejected {
                code: "REJECTED".into(),
                message: "rejected by the venue".into(),
            }),
            _ => None,
        };
        if let Some(e) = last {
            self.transition(client_id, e, source).await?;
        }
        Ok(())
    }
}
