//! Carrying out what `trading::liquidation` decides for an account past its threshold,
//! through the executor like any other order: each forced close is a reduce-only
//! market order written before it is sent, one close of a position at a time whoever
//! asks (a manual close racing a liquidation gives one close), and one liquidation of
//! an account at a time. The risk loop asks ([`Liquidate`]); the account's book is read
//! again here before anything is decided.
//!
//! A full liquidation marks the account `LIQUIDATED` before its first close: a process
//! stopped half-way finds the account marked with positions left and closes the rest
//! ([`trading::liquidation::resume`]), so an account is liquidated once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use database::ledger;
use database::orders::OrderRow;
use rust_decimal::Decimal;
use serde_json::json;
use streaming::binance::prices::PriceEntry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trading::evaluate::Account;
use trading::liquidation::{self, Action, Close, Decision, Lot, Reason};
use trading::order::OrderState;
use trading::risk::AccountStatus;

use super::closing::{CloseAs, CloseError, Closed};
use super::execution::Executor;
use super::request::PlaceError;
use super::risk_loop::{latest, num, Liquidate};

pub const FORCED_CLOSES: &str = "greekstream_forced_closes_total";
pub const LIQUIDATIONS: &str = "greekstream_liquidations_total";

/// Takes the risk loop's requests until `cancel`: one liquidation per account at a
/// time (requests for an account being liquidated fold into one more look once it
/// ends). A request waits for the executor to be up (recovered).
pub async fn run_liquidator(
    ready: Arc<tokio::sync::OnceCell<Executor>>,
    mut asks: mpsc::Receiver<Liquidate>,
    cancel: CancellationToken,
) {
    metrics::counter!(LIQUIDATIONS, "action" => "LIQUIDATE").increment(0);
    metrics::counter!(FORCED_CLOSES, "outcome" => "venue").increment(0);
    metrics::counter!(FORCED_CLOSES, "outcome" => "virtual").increment(0);
    // The accounts being liquidated, each with the latest ask that came meanwhile.
    let busy: Arc<Mutex<HashMap<Arc<str>, Option<Liquidate>>>> = Arc::default();
    loop {
        let ask = tokio::select! {
            ask = asks.recv() => match ask { Some(a) => a, None => return },
            _ = cancel.cancelled() => return,
        };
        // Asks made while the executor recovers (the loop's first valuations, an
        // account found stopped half-way) wait for it rather than being dropped.
        let exec = loop {
            if let Some(exec) = ready.get().cloned() {
                break exec;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                _ = cancel.cancelled() => return,
            }
        };
        {
            let mut b = busy.lock().expect("busy lock");
            if let Some(pending) = b.get_mut(&ask.account) {
                // Being liquidated: looked at once more when that ends, at this ask's
                // marks — a cascade does not wait for the next tick.
                *pending = Some(ask);
                continue;
            }
            b.insert(ask.account.clone(), None);
        }
        let busy = busy.clone();
        tokio::spawn(async move {
            let mut ask = ask;
            loop {
                if let Err(e) = exec.liquidate(&ask).await {
                    tracing::error!(account = %ask.account, error = %e, code = e.code(),
                        "liquidation not carried out; the risk loop asks again");
                }
                let mut b = busy.lock().expect("busy lock");
                match b.get_mut(&ask.account).and_then(Option::take) {
                    Some(next) => ask = next,
                    None => {
                        b.remove(&ask.account);
                        break;
                    }
                }
            }
        });
    }
}

impl Executor {
    /// Reads `ask.account`'s book, decides, and carries the decision out; the decision
    /// taken (`None`: no such account).
    pub async fn liquidate(&self, ask: &Liquidate) -> Result<Option<Decision>, CloseError> {
        let Some(account) = ledger::watched(&self.inner.pool, &ask.account).await? else {
            return Ok(None);
        };
        let marks = |s: &str| self.mark_for(ask, s);
        let lots = |s: &str| self.lot_of(s);
        let d = if account.status == AccountStatus::Liquidated {
            liquidation::resume(&account, marks)
        } else {
            liquidation::decide(&account, marks, lots)
        };
        self.carry_out(&account, &d, ask).await?;
        Ok(Some(d))
    }

    fn mark_for(&self, ask: &Liquidate, symbol: &str) -> Option<Decimal> {
        let stream = self.inner.stream.as_ref().and_then(|p| p.get(symbol));
        let asked = ask
            .marks
            .iter()
            .find(|(s, _)| **s == *symbol)
            .map(|(_, m)| *m);
        decision_mark(stream.as_ref(), asked)
    }

    fn lot_of(&self, symbol: &str) -> Lot {
        self.inner
            .filters
            .get(symbol)
            .map(|f| Lot {
                step: f.step,
                min_notional: f.min_notional,
            })
            .unwrap_or_default()
    }

    async fn carry_out(
        &self,
        account: &Account,
        d: &Decision,
        ask: &Liquidate,
    ) -> Result<(), CloseError> {
        let id = &*account.id;
        let now = chrono::Utc::now().timestamp_millis();
        match d.action {
            Action::None | Action::Warn => Ok(()),
            Action::Reduce { escalate } => {
                metrics::counter!(LIQUIDATIONS, "action" => "ADL").increment(1);
                let reason = d.reason.unwrap_or(Reason::AdlTier2);
                self.inner.outbox.event(
                    "adl_triggered",
                    json!({"subAccountId": id, "tier": if escalate { 3 } else { 2 },
                           "symbol": d.closes.first().map(|c| &*c.symbol),
                           "fraction": num(liquidation::ADL_FRACTION),
                           "marginRatio": num(d.margin_ratio)}),
                    now,
                );
                tracing::warn!(account = id, ratio = %d.margin_ratio, reason = reason.as_str(), "ADL step");
                let sent = self.forced_closes(id, &d.closes, reason).await?;
                if !escalate {
                    return Ok(());
                }
                self.settled(sent).await;
                self.book_changed(id).await;
                let Some(after) = ledger::watched(&self.inner.pool, id).await? else {
                    return Ok(());
                };
                let marks = |s: &str| self.mark_for(ask, s);
                let next = liquidation::recheck(&after, marks, |s| self.lot_of(s));
                match next.action {
                    Action::Liquidate | Action::TakeOver => {
                        Box::pin(self.carry_out(&after, &next, ask)).await
                    }
                    Action::None | Action::Warn | Action::Reduce { .. } => Ok(()),
                }
            }
            Action::Liquidate => {
                let reason = self
                    .begin_full(id, d, Reason::InsolvencyGuard, "LIQUIDATE", now)
                    .await?;
                let sent = self.forced_closes(id, &d.closes, reason).await?;
                self.settled(sent).await;
                self.book_changed(id).await;
                self.zeroed_margin(id).await;
                Ok(())
            }
            Action::TakeOver => {
                self.begin_full(id, d, Reason::InsolvencyTakeover, "TAKEOVER", now)
                    .await?;
                for c in &d.closes {
                    self.take_over(id, &c.position_id, c.mark, "RISK_ENGINE")
                        .await?;
                }
                self.book_changed(id).await;
                self.zeroed_margin(id).await;
                Ok(())
            }
        }
    }

    /// The start of a full liquidation or takeover: the account is marked LIQUIDATED
    /// first (stopped half-way, the rest goes on the next look), then told. Its reason.
    async fn begin_full(
        &self,
        id: &str,
        d: &Decision,
        default: Reason,
        action: &'static str,
        now: i64,
    ) -> Result<Reason, CloseError> {
        metrics::counter!(LIQUIDATIONS, "action" => action).increment(1);
        let reason = d.reason.unwrap_or(default);
        ledger::set_status(&self.inner.pool, id, AccountStatus::Liquidated).await?;
        self.inner.outbox.event(
            "full_liquidation",
            json!({"subAccountId": id, "marginRatio": num(d.margin_ratio),
                   "mode": reason.as_str()}),
            now,
        );
        tracing::warn!(account = id, ratio = %d.margin_ratio, mode = reason.as_str(), action, "full liquidation");
        Ok(reason)
    }

    /// Sends each forced close; the orders sent (their fills may be on their way).
    async fn forced_closes(
        &self,
        account: &str,
        closes: &[Close],
        reason: Reason,
    ) -> Result<Vec<OrderRow>, CloseError> {
        let mut sent = Vec::new();
        for c in closes {
            if let Some(row) = self.forced_close(account, c, reason).await? {
                sent.push(row);
            }
        }
        Ok(sent)
    }

    async fn forced_close(
        &self,
        account: &str,
        c: &Close,
        reason: Reason,
    ) -> Result<Option<OrderRow>, CloseError> {
        let how = CloseAs {
            quantity: (!c.whole).then_some(c.quantity),
            origin: liquidation::origin(reason),
            virtual_reason: "LIQUIDATE",
            reason: None,
            fallback_price: None,
        };
        let refused = match self.close_sent_as(account, &c.position_id, &how).await {
            Ok(Closed::Order(row)) if row.order.state == OrderState::Rejected => {
                format!(
                    "the venue rejected it: {} {}",
                    row.order.reject_code.as_deref().unwrap_or("-"),
                    row.order.reject_message.as_deref().unwrap_or("")
                )
            }
            Ok(Closed::Order(row)) => {
                metrics::counter!(FORCED_CLOSES, "outcome" => "venue").increment(1);
                return Ok(Some(*row));
            }
            Ok(Closed::Virtual { .. }) => {
                metrics::counter!(FORCED_CLOSES, "outcome" => "virtual").increment(1);
                return Ok(None);
            }
            Err(CloseError::PositionNotFound) => return Ok(None),
            // Not sent, by our own gates or the venue's refusal before it.
            Err(CloseError::Place(e)) if e.is_refusal() => e.to_string(),
            // The venue could not be asked what it holds (unreachable, rate limited,
            // in maintenance): nothing of this close was sent.
            Err(CloseError::Venue(e)) => format!("the venue could not be asked: {e}"),
            Err(e) => return Err(e),
        };
        // Refused: closed in the book at the mark, so an account past its threshold
        // never keeps what it cannot pay for; the leg the venue still holds becomes the
        // house's, so venue = book + house still holds (an operator flattens it). A
        // part (an ADL step) is not: the next look decides again.
        if !c.whole {
            metrics::counter!(FORCED_CLOSES, "outcome" => "refused").increment(1);
            tracing::warn!(account, position = %c.position_id, why = %refused, "ADL step refused; decided again on the next look");
            return Ok(None);
        }
        let Some(p) = ledger::open_position_of(&self.inner.pool, account, &c.position_id).await?
        else {
            return Ok(None);
        };
        metrics::counter!(FORCED_CLOSES, "outcome" => "virtual").increment(1);
        tracing::error!(account, position = %c.position_id, symbol = %p.symbol, why = %refused,
            mark = %c.mark, quantity = %p.position.quantity,
            "forced close refused: closed in the book at the mark, the venue's leg is the house's");
        self.close_virtually(&p, c.mark, "LIQUIDATE").await?;
        // Keyed by the position: a second look (a restart) does not add it twice.
        ledger::house_changed(
            &self.inner.pool,
            &p.symbol,
            p.position.signed(),
            "FORCED_CLOSE_REFUSED",
            &p.id,
            "forced-close",
        )
        .await?;
        Ok(None)
    }

    /// Moves one position into the house at `mark` (no venue order: the exchange
    /// holds it already, now as the house's); `by`: who (`RISK_ENGINE` or an admin).
    /// Whether it was open.
    pub async fn take_over(
        &self,
        account: &str,
        position_id: &str,
        mark: Decimal,
        by: &str,
    ) -> Result<Option<ledger::TakenOver>, CloseError> {
        let _one = self.position_guard(position_id).await;
        let Some(t) = ledger::take_over(&self.inner.pool, account, position_id, mark, by).await?
        else {
            return Ok(None);
        };
        metrics::counter!(FORCED_CLOSES, "outcome" => "takeover").increment(1);
        self.cancel_orders_of_closed(position_id);
        let now = chrono::Utc::now().timestamp_millis();
        self.inner.outbox.event(
            "position_takeover",
            json!({"subAccountId": account, "positionId": position_id, "symbol": t.symbol,
                   "side": t.side.as_str(), "adminUserId": by}),
            now,
        );
        // The JS system sent no `position_closed` here, and its UI kept the row
        // (js-gateway §0 #2): the position is gone from the account, so say so.
        self.inner.outbox.event(
            "position_closed",
            json!({"subAccountId": account, "positionId": position_id, "symbol": t.symbol,
                   "side": t.side.as_str(), "realizedPnl": num(t.realized),
                   "newBalance": num(t.balance), "reason": "TAKEOVER"}),
            now,
        );
        Ok(Some(t))
    }

    /// `admin_takeover`: one of `account`'s positions into the house at a fresh mark
    /// (a stale price refuses it, as it refuses an order); `None` when it is not open.
    pub async fn take_over_now(
        &self,
        account: &str,
        position_id: &str,
        by: &str,
    ) -> Result<Option<(ledger::TakenOver, Decimal)>, CloseError> {
        let Some(p) = ledger::open_position_of(&self.inner.pool, account, position_id).await?
        else {
            return Ok(None);
        };
        let mark = self
            .inner
            .prices
            .mark(&p.symbol)
            .await
            .map_err(|e| CloseError::Place(PlaceError::Price(e)))?
            .price;
        let t = self.take_over(account, position_id, mark, by).await?;
        self.book_changed(account).await;
        Ok(t.map(|t| (t, mark)))
    }

    /// Waits (up to the close wait each) for the forced closes' fills.
    async fn settled(&self, sent: Vec<OrderRow>) {
        for row in sent {
            let _ = self.close_settled(Closed::Order(Box::new(row))).await;
        }
    }

    /// After a full liquidation: the account's `margin_update` with nothing held.
    async fn zeroed_margin(&self, account: &str) {
        let Ok(Some(a)) = ledger::account(&self.inner.pool, account).await else {
            return;
        };
        let b = num(a.current_balance);
        self.inner.outbox.event(
            "margin_update",
            json!({"subAccountId": account, "equity": b, "balance": b, "unrealizedPnl": 0,
                   "marginUsed": 0, "availableMargin": b, "totalExposure": 0,
                   "maintenanceMargin": 0, "marginRatio": 0, "accountLiqPrice": null,
                   "positionCount": 0}),
            chrono::Utc::now().timestamp_millis(),
        );
    }
}

/// The price a liquidation is decided at: by the risk loop's own rule (the newer of
/// the mark price and the book's mid, [`latest`]) on the freshest the executor's stream
/// has, else the one the loop valued at.
fn decision_mark(stream: Option<&PriceEntry>, asked: Option<Decimal>) -> Option<Decimal> {
    stream.and_then(latest).map(|(price, _)| price).or(asked)
}

impl PlaceError {
    /// Refused by our own gates before it was sent (not a storage failure, and not an
    /// order whose outcome is unknown).
    pub fn is_refusal(&self) -> bool {
        match self {
            PlaceError::AccountNotFound
            | PlaceError::Refused(_)
            | PlaceError::Price(_)
            | PlaceError::UnknownSymbol(_)
            | PlaceError::SymbolDesync(_)
            | PlaceError::ClockDrift { .. }
            | PlaceError::RateLimited(_) => true,
            PlaceError::Storage(_) | PlaceError::Journal(_) | PlaceError::StateUnknown { .. } => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// The risk loop values at the newer of the mark price (published each second) and
    /// the book's mid: a crossing it saw on the book must be decided on the book too,
    /// not declined on the older mark price until the next one comes.
    #[test]
    fn a_liquidation_is_decided_at_the_price_the_loop_valued_at() {
        let entry = PriceEntry {
            mark: Some(d("60000")),
            mark_time: 1_000,
            bid: Some(d("56000")),
            ask: Some(d("56000.2")),
            book_time: 1_400,
        };
        assert_eq!(
            decision_mark(Some(&entry), Some(d("1"))),
            Some(d("56000.1"))
        );
        let newer_mark = PriceEntry {
            mark_time: 1_500,
            ..entry.clone()
        };
        assert_eq!(decision_mark(Some(&newer_mark), None), Some(d("60000")));
        assert_eq!(decision_mark(None, Some(d("59000"))), Some(d("59000")));
    }
}
