//! The trading tables' repository: sub-accounts, their rules, open virtual positions,
//! and the two writes that change money — a balance delta ([`change_balance`]) and a
//! venue fill booked against an account ([`book_fill`]). Each runs in one transaction
//! with the account row locked, so concurrent writers to one account serialize and
//! every balance change lands together with its `balance_logs` row. The arithmetic is
//! `trading`'s; this module only reads and writes rows.

mod accounts;
mod balances;
mod fills;
mod positions;
mod rows;
mod watched;

pub use accounts::*;
pub use balances::*;
pub use fills::*;
pub use positions::*;
pub use rows::*;
pub use watched::*;
