//! Identifiers that are checked once, where they enter, and trusted everywhere after.
//!
//! Each is a newtype over a shared `Arc<str>` with a private field: the only way to get
//! one is its checked constructor, so no struct literal or `into()` can carry an
//! unchecked string into a snapshot, a book key or a database row.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::ModelError;

/// The longest identifier we accept from a venue. Real ones are 6–20 characters; the
/// bound keeps a hostile or corrupt frame from growing keys without limit.
pub const MAX_ID_LEN: usize = 64;

/// Non-empty, at most [`MAX_ID_LEN`] bytes, printable, no whitespace.
fn check_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An account at a venue, as the venue names it (`U1234567`, `5WT00001`, `binance`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Arc<str>);

impl AccountId {
    /// Checks `id` (see [`check_id`]); reuses the allocation of an `Arc<str>`.
    pub fn new(id: impl Into<Arc<str>>) -> Result<Self, ModelError> {
        let id = id.into();
        if check_id(&id) {
            Ok(Self(id))
        } else {
            Err(ModelError::InvalidAccount(truncated(&id)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A contract's canonical key (`SPY 20261218 C 590`, `BTCUSDT PERP`). Built only by
/// [`crate::Contract`]'s constructors, which derive it from checked parts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContractKey(Arc<str>);

impl ContractKey {
    pub(crate) fn derived(key: String) -> Self {
        Self(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an error message shows of a refused identifier: enough to find it, never an
/// unbounded copy of venue input.
fn truncated(s: &str) -> String {
    s.chars().take(MAX_ID_LEN).collect()
}

macro_rules! str_newtype_impls {
    ($t:ty) => {
        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

str_newtype_impls!(AccountId);
str_newtype_impls!(ContractKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_checked() {
        for good in ["U1234567", "5WT00001", "binance", "DU-1_2.3"] {
            assert_eq!(AccountId::new(good).unwrap(), good);
        }
        let long = "A".repeat(MAX_ID_LEN + 1);
        for bad in ["", " ", "U1 2", "SIM\u{0}BAD", "a\tb", "x\n", long.as_str()] {
            assert!(
                matches!(AccountId::new(bad), Err(ModelError::InvalidAccount(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_refused_id_is_reported_bounded() {
        let huge = "B".repeat(10_000);
        let ModelError::InvalidAccount(shown) = AccountId::new(huge).unwrap_err() else {
            panic!("wrong error");
        };
        assert_eq!(shown.len(), MAX_ID_LEN);
    }

    #[test]
    fn an_account_id_reuses_the_arc() {
        let arc: Arc<str> = Arc::from("U1");
        let id = AccountId::new(arc.clone()).unwrap();
        assert!(std::ptr::eq(id.as_str().as_ptr(), arc.as_ptr()));
    }
}
