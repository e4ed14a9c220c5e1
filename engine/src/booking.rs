//! An order's event applied — what the stream, a REST reply or a query said — in one
//! transaction with the fill it brings booked, and what changed published.

use std::sync::atomic::Ordering::Relaxed;

use database::ledger::{self, Booked, FillBooking, LedgerError};
use database::orders::{self, OrderRow, Source};
use serde_json::{json, Value};
use trading::order::{self as machine, Effect, Execution, OrderEvent};
use trading::position::{Change, Fill, OrderSide};

use super::execution::*;
use super::risk_loop::num;

impl Executor {
    /// Applies a venue's word on the order with `client_id` (what the stream, the
    /// REST reply or a query said) in one transaction, booking a new fill with it;
    /// publishes what changed. `Ok(None)`: no such order of ours.
    pub async fn apply_event(
        &self,
        client_id: &str,
        event: OrderEvent,
        source: Source,
    ) -> Result<Option<OrderRow>, LedgerError> {
        self.transition(client_id, event, source).await
    }

    pub(super) async fn adopt_reply(
        &self,
        client_id: &str,
        symbol: &str,
        v: &Value,
    ) -> Result<(), LedgerError> {
        self.adopt(client_id, symbol, v, Source::Reconcile).await
    }

    pub(super) async fn transition(
        &self,
        client_id: &str,
        event: OrderEvent,
        source: Source,
    ) -> Result<Option<OrderRow>, LedgerError> {
        self.transition_with(client_id, None, event, source).await
    }

    /// [`Executor::transition`], first taking the venue's order id when the order
    /// has none yet — in the same transaction, so a stream update costs one.
    pub(super) async fn transition_with(
        &self,
        client_id: &str,
        venue_id: Option<String>,
        event: OrderEvent,
        source: Source,
    ) -> Result<Option<OrderRow>, LedgerError> {
        let i = &self.inner;
        // The venue can answer (and fill) before the row of an order it got is written.
        self.row_written(client_id).await;
        let began = std::time::Instant::now();
        let mut tx = i.pool.begin().await?;
        let Some(mut row) = orders::lock_by_client_id(&mut tx, client_id).await? else {
            return Ok(None);
        };
        let adopted = match venue_id {
            Some(v) if row.order.venue_id.is_none() => {
                let accepted = OrderEvent::Accepted { venue_id: v };
                let detail = detail_of(&accepted);
                let changed = matches!(
                    machine::apply(&mut row.order, accepted),
                    Ok(Effect::Changed)
                );
                changed.then_some(detail)
            }
            _ => None,
        };
        let name = event.name();
        let mut detail = detail_of(&event);
        if let Some(accepted) = adopted {
            orders::record(&mut tx, &row.id, &row.order, "Accepted", source, accepted).await?;
        }
        let rejected_with = (row.order.state == machine::OrderState::Rejected).then(|| {
            (
                row.order.reject_code.clone(),
                row.order.reject_message.clone(),
            )
        });
        let applied = machine::apply(&mut row.order, event);
        let effect = match applied {
            Ok(e) => e,
            Err(invalid) => {
                i.stats.feed_errors.fetch_add(1, Relaxed);
                metrics::counter!(FEED_ERRORS, "kind" => "invalid_transition").increment(1);
                tracing::warn!(order = client_id, error = %invalid, "order event ignored");
                tx.commit().await?;
                return Ok(Some(row));
            }
        };
        if let (Some((code, message)), true) = (
            &rejected_with,
            row.order.state != machine::OrderState::Rejected,
        ) {
            // Our REJECTED was wrong: the venue has the order. Said in its event row.
            metrics::counter!(RESURRECTED).increment(1);
            tracing::warn!(order = client_id, rejected_with = ?code, event = name, source = source.as_str(),
                "an order taken for rejected exists on the venue: resurrected");
            detail["resurrected"] = json!({"from": "REJECTED", "rejectCode": code,
                                           "rejectMessage": message, "by": name});
        }
        // A fill is booked under its symbol's lock: reconciliation never judges the
        // symbol between the venue's fill and its booking.
        let symbol_lock = match &effect {
            Effect::Book(_) => Some(self.symbol_guard(&row.symbol).await),
            Effect::Changed | Effect::Nothing => None,
        };
        let booked = match &effect {
            Effect::Nothing => {
                i.stats.duplicates.fetch_add(1, Relaxed);
                tx.commit().await?;
                return Ok(Some(row));
            }
            Effect::Changed => None,
            Effect::Book(x) => Some(
                ledger::book_fill_in(
                    &mut tx,
                    &FillBooking {
                        sub_account_id: row.sub_account_id.clone(),
                        symbol: row.symbol.clone(),
                        fill: Fill {
                            side: row.side,
                            quantity: x.quantity,
                            price: x.price,
                            leverage: row.leverage,
                        },
                        fee: x.fee,
                        exchange_order_id: row.order.venue_id.clone(),
                        client_order_id: Some(row.client_order_id.clone()),
                        exchange_trade_id: Some(x.trade_id.clone()),
                        order_type: row.kind.clone(),
                        origin: row.origin.clone(),
                        close_action: row.close_action().into(),
                        babysitter_excluded: false,
                        closes: None,
                        reduce_only: row.reduce_only,
                    },
                )
                .await?,
            ),
        };
        if matches!(booked, Some(Booked::Duplicate)) {
            // The ledger already holds this trade: nothing to record (rolled back,
            // with the venue id, which the next update brings again).
            i.stats.duplicates.fetch_add(1, Relaxed);
            return Ok(Some(row));
        }
        orders::record(&mut tx, &row.id, &row.order, name, source, detail).await?;
        tx.commit().await?;
        // The ledger holds the fill: what follows reads it, and need not keep
        // reconciliation off the symbol.
        drop(symbol_lock);
        if let Some(n) = i.watched.lock().expect("watched lock").get(client_id) {
            n.notify_waiters();
        }
        // Final now, and counted as sent until a read of its book shows what it did.
        let mut ended =
            (row.order.state.is_final() && self.tracked(&row)).then(|| row.client_order_id.clone());
        if let (Effect::Book(x), Some(booked)) = (&effect, booked) {
            let applied = matches!(booked, Booked::Applied(_));
            let committed = std::time::Instant::now();
            i.stats.record(|l| &mut l.booking_tx_us, committed - began);
            self.after_fill(&row, x, booked).await;
            if applied {
                self.book_changed_soon(&row.sub_account_id, ended.take());
            }
            i.stats
                .record(|l| &mut l.booking_after_us, committed.elapsed());
        }
        if matches!(
            row.order.state,
            machine::OrderState::Canceled
                | machine::OrderState::Expired
                | machine::OrderState::Rejected
        ) && matches!(effect, Effect::Changed)
        {
            i.outbox.event(
                "order_cancelled",
                json!({"subAccountId": row.sub_account_id, "orderId": row.id, "symbol": row.symbol,
                       "side": position_side(row.side), "price": row.price.map_or(Value::Null, num),
                       "reason": row.order.state.as_str()}),
                now_ms(),
            );
            // Read at once: the account's next order is checked without it.
            if !row.reduce_only && self.book_changed(&row.sub_account_id).await {
                if let Some(id) = ended.take() {
                    self.untrack(&row.sub_account_id, &[id]);
                }
            }
        }
        if let Some(id) = ended {
            self.book_changed_soon(&row.sub_account_id, Some(id));
        }
        Ok(Some(row))
    }
    pub(super) async fn after_fill(&self, row: &OrderRow, x: &Execution, booked: Booked) {
        let i = &self.inner;
        let a = match booked {
            Booked::Applied(a) => a,
            Booked::Duplicate => {
                i.stats.duplicates.fetch_add(1, Relaxed);
                return;
            }
            Booked::NothingLeft => {
                metrics::counter!(REDUCE_ONLY_EXCESS).increment(1);
                tracing::warn!(order = %row.client_order_id, symbol = %row.symbol, quantity = %x.quantity,
                    "a reduce-only fill with no position left to reduce: not booked");
                return;
            }
        };
        i.stats.fills_booked.fetch_add(1, Relaxed);
        metrics::counter!(FILLS).increment(1);
        i.last_fill
            .lock()
            .expect("fills lock")
            .insert(row.symbol.clone(), tokio::time::Instant::now());
        let now = now_ms();
        i.outbox.event(
            "order_filled",
            json!({"subAccountId": row.sub_account_id, "orderId": row.id, "symbol": row.symbol,
                   "side": position_side(row.side), "price": num(x.price), "quantity": num(x.quantity),
                   "exchangeOrderId": row.order.venue_id, "orderType": row.kind, "origin": row.origin,
                   "suppressToast": row.origin == "MANUAL"}),
            now,
        );
        let balance = num(a.balance);
        if let (Some(closed), Change::Closed | Change::Flipped) =
            (&a.closed_position, &a.outcome.change)
        {
            self.cancel_orders_of_closed(closed);
        }
        if let Some(closed) = &a.closed_position {
            // Only the closing part's share of the fee: a flip's opening part pays
            // the rest.
            let net = a.outcome.realized - x.fee * a.outcome.closed / x.quantity;
            match a.outcome.change {
                Change::Reduced => i.outbox.event(
                    "position_reduced",
                    json!({"subAccountId": row.sub_account_id, "positionId": closed, "symbol": row.symbol,
                           // The position's side (the order's is the other).
                           "side": match row.side { OrderSide::Buy => "SHORT", OrderSide::Sell => "LONG" },
                           "remainingQty":
                               a.outcome.after.as_ref().map_or(Value::Null, |p| num(p.quantity)),
                           "closedQty": num(a.outcome.closed), "realizedPnl": num(net),
                           "newBalance": balance,
                           "reason": row.close_action()}),
                    now,
                ),
                Change::Closed | Change::Flipped => i.outbox.event(
                    "position_closed",
                    json!({"subAccountId": row.sub_account_id, "positionId": closed, "symbol": row.symbol,
                           "side": match row.side { OrderSide::Buy => "SHORT", OrderSide::Sell => "LONG" },
                           "realizedPnl": num(net), "newBalance": balance,
                           "reason": if a.outcome.change == Change::Flipped { "FLIP" }
                                     else { row.close_action() }}),
                    now,
                ),
                Change::Opened | Change::Added => {}
            }
        }
        if let (Some(open), Some(p)) = (&a.open_position, &a.outcome.after) {
            if a.outcome.change != Change::Reduced {
                let (liquidation, excluded) = self.position_facts(row, &a, open, p, x.price).await;
                i.outbox.event(
                    "position_updated",
                    json!({"subAccountId": row.sub_account_id, "positionId": open, "symbol": row.symbol,
                           "side": p.side.as_str(), "entryPrice": num(p.entry_price),
                           "quantity": num(p.quantity), "notional": num(p.notional()),
                           "leverage": num(p.leverage), "margin": num(p.margin()),
                           "liquidationPrice": liquidation.map_or(Value::Null, num),
                           "babysitterExcluded": excluded}),
                    now,
                );
            }
        }
    }
}
