//! The venue's own liquidation or auto-deleveraging of the shared account
//! (`autoclose-…` / `adl_autoclose` on the user stream): the quantity it closed is
//! shared across the sub-accounts holding that side, by the venue's own ranking
//! (`trading::liquidation::share_venue_close`), booked as `LIQUIDATE` fills at the
//! venue's price; what no sub-account holds was the house's. Each share is booked once
//! per (venue trade, position), so a replayed update changes nothing. The operator is
//! told: an error log, a count and an `exchange_forced_close` event.

use std::sync::atomic::Ordering::Relaxed;

use database::ledger::{self, Booked, FillBooking, LedgerError};
use rust_decimal::Decimal;
use serde_json::json;
use streaming::binance::wire::OrderUpdate;
use trading::evaluate::evaluate;
use trading::liquidation::{share_venue_close, Holder};
use trading::position::{Change, Fill, OrderSide, Side};

use super::execution::Executor;
use super::risk_loop::num;

pub const VENUE_FORCED_CLOSES: &str = "greekstream_venue_forced_closes_total";

/// Whether `u` is one of the venue's own forced closes.
pub fn is_venue_forced(u: &OrderUpdate) -> bool {
    u.client_order_id.starts_with("autoclose-") || u.client_order_id == "adl_autoclose"
}

impl Executor {
    /// A venue forced close's update: its fills (a liquidation's come as CALCULATED,
    /// an ADL's as TRADE) are shared out and booked; the rest changes nothing here.
    pub(super) async fn on_venue_forced(&self, u: &OrderUpdate) {
        if !matches!(u.execution_type.as_str(), "TRADE" | "CALCULATED")
            || u.last_filled_qty <= Decimal::ZERO
        {
            return;
        }
        let kind = if u.client_order_id == "adl_autoclose" {
            "adl"
        } else {
            "liquidation"
        };
        metrics::counter!(VENUE_FORCED_CLOSES, "kind" => kind).increment(1);
        tracing::error!(symbol = %u.symbol, side = %u.side, quantity = %u.last_filled_qty,
            price = %u.last_filled_price, kind, "the venue closed part of the shared account itself");
        self.inner.outbox.event(
            "exchange_forced_close",
            json!({"symbol": u.symbol, "side": u.side, "kind": kind,
                   "quantity": num(u.last_filled_qty), "price": num(u.last_filled_price),
                   "exchangeOrderId": u.order_id.to_string()}),
            chrono::Utc::now().timestamp_millis(),
        );
        if let Err(e) = self.share_venue_close(u).await {
            self.inner.stats.feed_errors.fetch_add(1, Relaxed);
            tracing::error!(symbol = %u.symbol, error = %e,
                "the venue's forced close not booked; reconciliation will see the difference");
        }
    }

    async fn share_venue_close(&self, u: &OrderUpdate) -> Result<(), LedgerError> {
        let i = &self.inner;
        let (order_side, closed) = match u.side.as_str() {
            "SELL" => (OrderSide::Sell, Side::Long),
            _ => (OrderSide::Buy, Side::Short),
        };
        let (symbol, price, total) = (&u.symbol, u.last_filled_price, u.last_filled_qty);
        let trade = if u.trade_id > 0 {
            u.trade_id.to_string()
        } else {
            format!("{}:{}", u.order_id, u.cumulative_qty)
        };
        // Reconciliation does not judge the symbol while its shares are booked.
        let _judging = self.symbol_guard(symbol).await;
        let held: Vec<_> = ledger::open_positions(&i.pool, None)
            .await?
            .into_iter()
            .filter(|p| p.symbol == *symbol && p.position.side == closed)
            .collect();
        let mut holders = Vec::with_capacity(held.len());
        for p in &held {
            let Some(account) = ledger::watched(&i.pool, &p.sub_account_id).await? else {
                continue;
            };
            let stream = i.stream.as_ref();
            let e = evaluate(&account, |s| {
                if s == symbol {
                    Some(price)
                } else {
                    stream.and_then(|x| x.get(s)).and_then(|x| x.mark)
                }
            });
            if let Some(k) = account.positions.iter().position(|q| *q.id == *p.id) {
                holders.push(Holder {
                    position_id: p.id.as_str().into(),
                    quantity: p.position.quantity,
                    pnl_percent: e.positions[k].pnl_percent,
                    margin_ratio: e.metrics.margin_ratio,
                });
            }
        }
        let (shares, rest) = share_venue_close(&holders, total);
        let fee = if u.commission_asset.as_deref().is_none_or(|a| a == "USDT") {
            u.commission
        } else {
            Decimal::ZERO
        };
        for (id, q) in shares {
            let Some(p) = held.iter().find(|p| *p.id == *id) else {
                continue;
            };
            let booked = ledger::book_fill(
                &i.pool,
                &FillBooking {
                    sub_account_id: p.sub_account_id.clone(),
                    symbol: symbol.clone(),
                    fill: Fill {
                        side: order_side,
                        quantity: q,
                        price,
                        leverage: p.position.leverage,
                    },
                    fee: fee * q / total,
                    exchange_order_id: Some(u.order_id.to_string()),
                    client_order_id: Some(u.client_order_id.clone()),
                    exchange_trade_id: Some(trade.clone()),
                    order_type: u.order_type.clone(),
                    origin: "LIQUIDATION".into(),
                    close_action: "LIQUIDATE".into(),
                    babysitter_excluded: p.babysitter_excluded,
                    closes: None,
                    reduce_only: true,
                },
            )
            .await?;
            let Booked::Applied(a) = booked else {
                continue;
            };
            let now = chrono::Utc::now().timestamp_millis();
            let common = json!({"subAccountId": p.sub_account_id, "positionId": p.id,
                                "symbol": symbol, "side": closed.as_str(),
                                "realizedPnl": num(a.outcome.realized),
                                "newBalance": num(a.balance), "reason": "LIQUIDATE"});
            match a.outcome.change {
                Change::Closed | Change::Flipped => {
                    self.cancel_orders_of_closed(&p.id);
                    i.outbox.event("position_closed", common, now);
                }
                Change::Reduced => {
                    let mut v = common;
                    v["closedQty"] = num(a.outcome.closed);
                    v["remainingQty"] = a
                        .outcome
                        .after
                        .as_ref()
                        .map_or(serde_json::Value::Null, |x| num(x.quantity));
                    i.outbox.event("position_reduced", v, now);
                }
                Change::Opened | Change::Added => {}
            }
            self.book_changed_soon(&p.sub_account_id, None);
        }
        // What no sub-account held was the house's: it holds that much less.
        let signed = match order_side {
            OrderSide::Sell => -rest,
            OrderSide::Buy => rest,
        };
        ledger::house_changed(
            &i.pool,
            symbol,
            signed,
            "VENUE_FORCED_CLOSE",
            &u.client_order_id,
            &trade,
        )
        .await?;
        Ok(())
    }
}
