//! The venue's new-order limits, kept on our side (Binance USDⓈ-M: 300 orders per
//! 10 s and 1 200 per minute per account, fixed windows on the venue's clock): an
//! order the venue would refuse (-1015) is refused before it is written or sent, with
//! how long to wait. The venue's own counts (`X-MBX-ORDER-COUNT-*` headers) raise ours
//! when another client shares the account.

/// One fixed window: its index and the orders counted in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Window {
    index: i64,
    count: u64,
}

impl Window {
    fn at(&mut self, index: i64) -> &mut u64 {
        if self.index != index {
            *self = Window { index, count: 0 };
        }
        &mut self.count
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_10s: u64,
    pub per_minute: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_10s: 300,
            per_minute: 1200,
        }
    }
}

/// Not now: the window is full until `retry_after_ms` from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The venue's new-order limit is reached ({limit} per {per}); retry in {retry_after_ms} ms")]
pub struct OverBudget {
    pub limit: u64,
    pub per: &'static str,
    pub retry_after_ms: i64,
}

/// The part of a window's limit kept for orders that only reduce: a tenth (at least
/// one order when the limit allows two or more).
pub fn reserve(limit: u64) -> u64 {
    if limit < 2 {
        0
    } else {
        (limit / 10).max(1)
    }
}

#[derive(Debug, Clone, Default)]
pub struct OrderBudget {
    limits: Limits,
    ten: Window,
    minute: Window,
}

impl OrderBudget {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Takes `n` orders at `now_ms` (the venue's clock), or says when they would fit.
    /// Orders that open (`opening`) get the limits less a reserve ([`reserve`]) kept
    /// for orders that only reduce: a flood of new orders never leaves an account
    /// unable to close.
    pub fn take(&mut self, now_ms: i64, n: u64, opening: bool) -> Result<(), OverBudget> {
        let (i10, i60) = (now_ms.div_euclid(10_000), now_ms.div_euclid(60_000));
        let (c10, c60) = (*self.ten.at(i10), *self.minute.at(i60));
        let share = |limit: u64| {
            if opening {
                limit - reserve(limit)
            } else {
                limit
            }
        };
        let (l10, l60) = (share(self.limits.per_10s), share(self.limits.per_minute));
        if c10 + n > l10 {
            return Err(OverBudget {
                limit: l10,
                per: "10s",
                retry_after_ms: (i10 + 1) * 10_000 - now_ms,
            });
        }
        if c60 + n > l60 {
            return Err(OverBudget {
                limit: l60,
                per: "minute",
                retry_after_ms: (i60 + 1) * 60_000 - now_ms,
            });
        }
        *self.ten.at(i10) += n;
        *self.minute.at(i60) += n;
        Ok(())
    }

    /// The venue said it has counted `c10` and `c60` in the windows of `now_ms`.
    pub fn observe(&mut self, now_ms: i64, c10: Option<u64>, c60: Option<u64>) {
        let (i10, i60) = (now_ms.div_euclid(10_000), now_ms.div_euclid(60_000));
        if let Some(c) = c10 {
            let w = self.ten.at(i10);
            *w = (*w).max(c);
        }
        if let Some(c) = c60 {
            let w = self.minute.at(i60);
            *w = (*w).max(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_refuses_until_the_next_one() {
        let mut b = OrderBudget::new(Limits {
            per_10s: 3,
            per_minute: 5,
        });
        for _ in 0..3 {
            b.take(1_000, 1, false).unwrap();
        }
        let e = b.take(4_000, 1, false).unwrap_err();
        assert_eq!((e.per, e.retry_after_ms), ("10s", 6_000));
        // The next 10 s window: two more fit, then the minute is full.
        b.take(10_000, 2, false).unwrap();
        let e = b.take(12_000, 1, false).unwrap_err();
        assert_eq!((e.per, e.retry_after_ms), ("minute", 48_000));
        b.take(60_000, 3, false).unwrap();
    }

    #[test]
    fn the_venues_counts_raise_ours_never_lower_them() {
        let mut b = OrderBudget::new(Limits::default());
        b.take(0, 10, false).unwrap();
        b.observe(5, Some(299), Some(299));
        assert!(b.take(6, 1, false).is_ok());
        assert!(b.take(7, 1, false).is_err());
        b.observe(8, Some(1), None);
        assert!(
            b.take(9, 1, false).is_err(),
            "a lower count is an older reply"
        );
    }

    #[test]
    fn orders_that_open_leave_a_tenth_for_orders_that_reduce() {
        let mut b = OrderBudget::new(Limits {
            per_10s: 10,
            per_minute: 1_000,
        });
        for _ in 0..9 {
            b.take(0, 1, true).unwrap();
        }
        // The tenth is the reserve: an opening order waits, a close goes.
        let e = b.take(0, 1, true).unwrap_err();
        assert_eq!((e.limit, e.per), (9, "10s"));
        b.take(0, 1, false).unwrap();
        assert!(b.take(0, 1, false).is_err(), "the venue's own limit holds");
        assert_eq!((reserve(1), reserve(2), reserve(300)), (0, 1, 30));
    }
}
