//! The types of the book cache ([`super::book`]): an account's book as read, and the
//! state of its reads.

use std::collections::HashMap;
use std::sync::Arc;

use database::ledger;
use rust_decimal::Decimal;
use trading::evaluate::Prepared;
use trading::risk::{OrderRequest, PendingOrder};

/// An account's book as the order path keeps it: read from the ledger, prepared for
/// checks at any marks.
pub(crate) struct Book {
    pub(crate) prepared: Prepared,
    pub(crate) rules: trading::risk::RiskRules,
    pub(crate) realized_today: Decimal,
    /// Its orders not final as read, less those counted as sent
    /// ([`Inner::unsettled`]) when read.
    pub(crate) pending: Vec<ledger::PendingRow>,
    /// Of the orders counted as sent when read, what this book has already booked:
    /// only the rest of each is still on its way.
    pub(crate) booked: HashMap<String, Decimal>,
}

impl Book {
    pub(super) fn of(w: ledger::Watched) -> Self {
        Self {
            prepared: Prepared::new(w.account),
            rules: w.rules,
            realized_today: w.realized_today,
            pending: w.pending,
            booked: w.booked.into_iter().collect(),
        }
    }

    /// What of an order counted as sent (`id`, `o`) this book does not hold yet: an
    /// order stops counting as sent only after a read that holds its fills, and in
    /// between its fills must not count twice (a flip sized on them would be too big).
    pub(super) fn unbooked(&self, id: &str, o: &PendingOrder) -> Option<PendingOrder> {
        let left = o.remaining - self.booked.get(id).copied().unwrap_or_default();
        (left > Decimal::ZERO).then(|| PendingOrder {
            remaining: left,
            ..o.clone()
        })
    }
}

/// An account's pending orders as an order in `symbol` is checked against them.
pub(super) struct PendingView {
    /// Its market orders in the symbol on their way, as fills: one per side and
    /// leverage (fills of one side and leverage at one price add up to one fill of
    /// their sum — same entry, same realized — so a flood of them costs no more).
    pub(super) arriving: Vec<OrderRequest>,
    /// The rest, counted by what they could add.
    pub(super) resting: Vec<PendingOrder>,
}

/// An account's book as the order path keeps it.
pub(super) struct CachedBook {
    pub(super) book: Arc<Book>,
    pub(super) at: std::time::Instant,
    /// Which read it came from ([`Inner::book_reads`]).
    pub(super) read: u64,
}

/// A book read again after fills: whether another read is due when it ends, and the
/// orders that stop counting as sent once a read begun after they ended is installed.
#[derive(Default)]
pub(super) struct Refreshing {
    pub(super) again: bool,
    pub(super) ended: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use trading::evaluate::{Account, LiquidationMode};
    use trading::position::OrderSide;
    use trading::risk::{AccountStatus, RiskRules};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// Between the read that holds an order's fill and the order leaving the sent
    /// count, the fill is in the book and must not also be on its way.
    #[test]
    fn an_order_counted_as_sent_adds_only_what_the_book_has_not_booked() {
        let book = Book {
            prepared: Prepared::new(Account {
                id: "a".into(),
                status: AccountStatus::Active,
                liquidation_mode: LiquidationMode::Adl30,
                balance: d("1000"),
                maintenance_rate: d("0.005"),
                threshold: d("0.9"),
                positions: Vec::new(),
            }),
            rules: RiskRules::default(),
            realized_today: Decimal::ZERO,
            pending: Vec::new(),
            booked: [
                ("filled".to_owned(), d("0.002")),
                ("half".to_owned(), d("0.001")),
            ]
            .into_iter()
            .collect(),
        };
        let order = PendingOrder {
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            remaining: d("0.002"),
            price: None,
            leverage: d("10"),
        };
        assert_eq!(book.unbooked("filled", &order), None);
        assert_eq!(
            book.unbooked("half", &order).map(|o| o.remaining),
            Some(d("0.001"))
        );
        assert_eq!(book.unbooked("unseen", &order), Some(order.clone()));
    }
}
