//! The types of the book cache ([`super::book`]): an account's book as read, and the
//! state of its reads.

use std::sync::Arc;

use database::ledger;
use rust_decimal::Decimal;
use trading::evaluate::Prepared;
use trading::risk::OrderRequest;

/// An account's book as the order path keeps it: read from the ledger, prepared for
/// checks at any marks.
pub(crate) struct Book {
    pub(crate) prepared: Prepared,
    pub(crate) rules: trading::risk::RiskRules,
    pub(crate) realized_today: Decimal,
    /// Its orders not final as read, less those counted as sent
    /// ([`Inner::unsettled`]) when read.
    pub(crate) pending: Vec<ledger::PendingRow>,
}

impl Book {
    pub(super) fn of(w: ledger::Watched) -> Self {
        Self {
            prepared: Prepared::new(w.account),
            rules: w.rules,
            realized_today: w.realized_today,
            pending: w.pending,
        }
    }
}

/// An account's pending orders as an order in `symbol` is checked against them.
pub(super) struct PendingView {
    /// Its market orders in the symbol on their way, as fills: one per side and
    /// leverage (fills of one side and leverage at one price add up to one fill of
    /// their sum — same entry, same realized — so a flood of them costs no more).
    pub(super) arriving: Vec<OrderRequest>,
    /// The rest, counted by what they could add.
    pub(super) resting: Vec<trading::risk::PendingOrder>,
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
