//! Several orders of one sub-account in one symbol (a scale: limits at several
//! prices), checked together and sent in the venue's batches of five.
//!
//! Each leg is checked against the account with the legs before it assumed filled
//! (`trading::risk::assume_filled`), so legs within the limits one by one cannot add
//! up past them; the first refused leg refuses the whole batch, before anything is
//! written or sent. Every leg is journaled first (one append). The venue answers each
//! element on its own: an order, or its error (kept, or "unknown" for the ambiguous
//! codes). A batch request that fails as a whole (timeout, 5xx) leaves every one of
//! its elements UNKNOWN, resolved one by one — never resent.

use std::sync::atomic::Ordering::Relaxed;

use database::orders::{self, NewOrder, OrderRow, Source};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trading::order::{classify, Reply, Wire};
use trading::risk::{assume_filled, check_view, Pending, PendingOrder, Refusal};

use super::execution::{request_of, Executor, PlaceError, PlaceOrder};

/// The venue's largest batch.
pub const VENUE_BATCH: usize = 5;
/// The most legs one request may carry.
pub const MAX_LEGS: usize = 50;

impl Executor {
    /// Checks a basket's legs together, across their symbols, before any is sent:
    /// each leg against the account with the legs before it counted as pending (at
    /// their marks), so legs within the limits one by one cannot add up past them.
    /// The first refused leg is returned with its symbol.
    pub async fn check_basket(&self, legs: &[PlaceOrder]) -> Result<(), (String, PlaceError)> {
        let mut before: Vec<PendingOrder> = Vec::with_capacity(legs.len());
        for leg in legs {
            let symbol = leg.symbol.to_ascii_uppercase();
            let mut t = self.ticket(leg).await.map_err(|e| (symbol.clone(), e))?;
            // The legs before this one as if nothing held could absorb them.
            let extra = Pending::of(&before, &t.symbol, |_| Decimal::ZERO, |_| None);
            t.view.pending.notional += extra.notional;
            t.view.pending.margin += extra.margin;
            t.view.pending.here += extra.here;
            let a = check_view(
                &t.view,
                &t.rules,
                &t.filters,
                t.mark,
                request_of(&t.symbol, leg),
            )
            .map_err(|r| (symbol.clone(), PlaceError::Refused(r)))?;
            if !a.request().reduce_only {
                before.push(PendingOrder {
                    symbol: t.symbol.clone(),
                    side: a.request().side,
                    remaining: a.request().quantity,
                    price: Some(a.request().limit.unwrap_or(t.mark)),
                    leverage: a.request().leverage,
                });
            }
        }
        Ok(())
    }

    pub async fn place_batch(&self, legs: Vec<PlaceOrder>) -> Result<Vec<OrderRow>, PlaceError> {
        let i = &self.inner;
        let Some(first) = legs.first() else {
            return Err(PlaceError::Refused(Refusal::Invalid(
                "a batch needs at least one order",
            )));
        };
        if legs.len() > MAX_LEGS {
            return Err(PlaceError::Refused(Refusal::Invalid(
                "a batch has at most 50 orders",
            )));
        }
        if legs.iter().any(|l| {
            l.sub_account_id != first.sub_account_id
                || !l.symbol.eq_ignore_ascii_case(&first.symbol)
        }) {
            return Err(PlaceError::Refused(Refusal::Invalid(
                "the orders of a batch share one sub-account and one symbol",
            )));
        }
        let _shared = self.gate(&first.symbol).read_owned().await;
        let mut t = self.ticket(first).await?;
        let mut approved = Vec::with_capacity(legs.len());
        for leg in &legs {
            let a = check_view(
                &t.view,
                &t.rules,
                &t.filters,
                t.mark,
                request_of(&t.symbol, leg),
            )
            .map_err(PlaceError::Refused)?;
            let price = a.request().limit.unwrap_or(t.mark);
            assume_filled(&mut t.view, a.request(), price, t.mark);
            approved.push((leg, a));
        }
        let sent_at =
            chrono::Utc::now().timestamp_millis() + i.rest.stats.time_offset_ms.load(Relaxed);
        // All of the batch or none of it: a half-placed scale is worse than a retry.
        let opening = approved.iter().any(|(_, a)| !a.request().reduce_only);
        self.take_budget(sent_at, approved.len() as u64, opening)?;
        let new = approved
            .iter()
            .map(|(leg, a)| {
                let req = a.request();
                NewOrder {
                    sub_account_id: leg.sub_account_id.clone(),
                    symbol: t.symbol.clone(),
                    side: req.side,
                    kind: leg.kind,
                    quantity: req.quantity,
                    price: req.limit,
                    leverage: req.leverage,
                    reduce_only: req.reduce_only,
                    origin: leg.origin.clone(),
                    request_id: leg.request_id.clone(),
                    position_id: leg.position_id.clone(),
                    close_reason: leg.close_reason.clone(),
                }
            })
            .collect();
        let rows = self.write_ahead(new, sent_at)?;
        let _moving: Vec<_> = rows.iter().map(|r| self.in_flight(&r.symbol, 1)).collect();
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(VENUE_BATCH) {
            let elements: Vec<Value> = chunk
                .iter()
                .map(|r| {
                    let mut e = json!({
                        "symbol": r.symbol, "side": orders::side_str(r.side), "type": r.kind,
                        "quantity": r.order.quantity.normalize().to_string(),
                        "newClientOrderId": r.client_order_id,
                    });
                    if let Some(px) = r.price {
                        e["price"] = json!(px.normalize().to_string());
                        e["timeInForce"] = json!("GTC");
                    }
                    e
                })
                .collect();
            let params = [("batchOrders", Value::Array(elements).to_string())];
            let replies: Vec<Wire> = match i
                .rest
                .signed(Method::POST, "/fapi/v1/batchOrders", &params)
                .await
            {
                Ok(body) => {
                    let v: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(k, _)| match v.get(k) {
                            Some(e) if e["orderId"].is_u64() => Wire::Ok {
                                venue_id: e["orderId"].as_u64().unwrap_or_default().to_string(),
                            },
                            Some(e) if e["code"].is_i64() => Wire::Api {
                                status: 400,
                                code: e["code"].as_i64().unwrap_or_default(),
                                message: e["msg"].as_str().unwrap_or_default().to_owned(),
                            },
                            // An element the reply does not account for: unknown.
                            _ => Wire::Broken {
                                detail: "no reply for this element".into(),
                            },
                        })
                        .collect()
                }
                Err(e) => {
                    let w = super::execution::wire_of(&e);
                    chunk.iter().map(|_| w.clone()).collect()
                }
            };
            for (row, wire) in chunk.iter().zip(replies) {
                let reply = classify(wire);
                let ambiguous = matches!(reply, Reply::Unknown { .. });
                let event = super::execution::event_of(reply);
                let after = self
                    .apply_event(&row.client_order_id, event, Source::Rest)
                    .await?;
                if ambiguous {
                    self.resolve_later(&row.client_order_id, &row.symbol, sent_at);
                }
                out.push(after.unwrap_or_else(|| row.clone()));
            }
        }
        Ok(out)
    }
}
