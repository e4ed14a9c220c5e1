//! What the gateway reads from the engine (js-gateway §2.2, §4.2, §4.16): an
//! account valued now at the marks, and an order checked without placing it.

use rust_decimal::Decimal;
use trading::evaluate::Evaluation;
use trading::risk::{explain, Numbers, Refusal, RiskRules, VenueFilters};

use super::execution::{request_of, Executor, PlaceError, PlaceOrder};

impl Executor {
    /// `account` valued at the freshest marks the price chain has (a position
    /// without one is valued at its entry); `None` when there is no such account.
    pub async fn valuation(
        &self,
        account: &str,
    ) -> Result<Option<(Evaluation, RiskRules)>, PlaceError> {
        let Some(book) = self.book_of(account).await? else {
            return Ok(None);
        };
        let (prepared, rules) = (&book.prepared, book.rules.clone());
        let mut marks = Vec::with_capacity(prepared.account().positions.len());
        for p in &prepared.account().positions {
            marks.push(
                self.inner
                    .prices
                    .mark(&p.symbol)
                    .await
                    .ok()
                    .map(|q| q.price),
            );
        }
        Ok(Some((
            prepared.value(|k| marks.get(k).copied().flatten()),
            rules,
        )))
    }

    /// The pre-trade check of `p` without placing it: its numbers, or why it would be
    /// refused. `Err` when it cannot be checked (no account, no price, unknown symbol).
    pub async fn validate(
        &self,
        p: &PlaceOrder,
    ) -> Result<(Option<Numbers>, Result<(), Refusal>), PlaceError> {
        let t = self.ticket(p).await?;
        // Checked as `trade` would send it (a flip closes the whole opposite).
        let mut req = request_of(&t.symbol, p);
        req.quantity = trading::position::trade_quantity(
            t.view.here.as_ref().map(|m| &m.position),
            p.side,
            p.quantity,
            p.reduce_only,
        );
        let (numbers, verdict) = explain(&t.view, &t.rules, &t.filters, t.mark, req);
        Ok((numbers, verdict.map(|_| ())))
    }

    /// The mark `symbol` would be checked at now.
    pub async fn mark(&self, symbol: &str) -> Result<Decimal, PlaceError> {
        Ok(self
            .inner
            .prices
            .mark(symbol)
            .await
            .map_err(PlaceError::Price)?
            .price)
    }

    /// The venue's filters for `symbol`, as read at start-up.
    pub fn filters(&self, symbol: &str) -> Option<VenueFilters> {
        self.inner.filters.get(symbol).cloned()
    }
}
