//! When a batch goes out. Pure, so every trigger is tested without a database.
//!
//! The seeds ask for two things at once: flush at 50 records or when the oldest has
//! waited 1 s, and keep p95 received→persisted under 500 ms at every rate. At 10
//! events/s those conflict (50 records take 5 s to gather, so the 1 s timer fires
//! every time and p95 is ~1 s: the peer design measured 960 ms). So the 50/1 s rule
//! is kept as the upper bound it was meant to be, and a third trigger does the rest:
//! whenever no batch is in flight, whatever is buffered goes out now (group commit).
//! At low rates each event is written alone within milliseconds; at high rates
//! events pile up while a flush runs and the next batch is naturally larger, so the
//! cost per row falls exactly when throughput matters.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// A batch goes out once this many records are buffered.
    pub batch_size: usize,
    /// ... or once the oldest buffered record has waited this long.
    pub max_wait: Duration,
    /// ... or at once when no batch is in flight (see the module docs).
    pub eager: bool,
    /// Largest batch, to bound one transaction.
    pub max_batch_rows: usize,
    /// Batches in flight at once (one database connection each).
    pub max_in_flight: usize,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            batch_size: 50,
            max_wait: Duration::from_secs(1),
            eager: true,
            max_batch_rows: 20_000,
            max_in_flight: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a batch of this many records now.
    Flush(usize),
    /// Nothing to do before this instant (unless more records arrive).
    WaitUntil(Instant),
    /// Nothing to do until records arrive or a batch completes.
    Idle,
}

impl FlushPolicy {
    /// `closing`: the input has ended, so everything buffered goes out as soon as a
    /// connection is free.
    pub fn decide(
        &self,
        buffered: usize,
        oldest: Option<Instant>,
        in_flight: usize,
        closing: bool,
        now: Instant,
    ) -> Decision {
        let Some(oldest) = oldest.filter(|_| buffered > 0) else {
            return Decision::Idle;
        };
        if in_flight >= self.max_in_flight.max(1) {
            return Decision::Idle;
        }
        let take = buffered.min(self.max_batch_rows.max(1));
        let deadline = oldest + self.max_wait;
        if buffered >= self.batch_size
            || now >= deadline
            || closing
            || (self.eager && in_flight == 0)
        {
            Decision::Flush(take)
        } else {
            Decision::WaitUntil(deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> FlushPolicy {
        FlushPolicy {
            eager: false,
            ..FlushPolicy::default()
        }
    }

    #[test]
    fn nothing_buffered_is_idle() {
        let now = Instant::now();
        assert_eq!(
            FlushPolicy::default().decide(0, None, 0, false, now),
            Decision::Idle
        );
    }

    #[test]
    fn fifty_records_trigger_a_batch() {
        let now = Instant::now();
        let p = strict();
        assert_eq!(
            p.decide(49, Some(now), 0, false, now),
            Decision::WaitUntil(now + Duration::from_secs(1))
        );
        assert_eq!(p.decide(50, Some(now), 0, false, now), Decision::Flush(50));
        assert_eq!(p.decide(75, Some(now), 1, false, now), Decision::Flush(75));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_record_never_waits_past_max_wait() {
        let p = strict();
        let t0 = Instant::now();
        let Decision::WaitUntil(deadline) = p.decide(3, Some(t0), 0, false, Instant::now()) else {
            panic!("3 records wait for the timer");
        };
        assert_eq!(deadline, t0 + p.max_wait, "the deadline is the upper bound");
        tokio::time::sleep_until(deadline).await;
        assert_eq!(
            p.decide(3, Some(t0), 0, false, Instant::now()),
            Decision::Flush(3)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            p.decide(3, Some(t0), 0, false, Instant::now()),
            Decision::Flush(3),
            "overdue stays due"
        );
    }

    #[test]
    fn one_second_triggers_a_batch() {
        let t0 = Instant::now();
        let p = strict();
        let just_before = t0 + Duration::from_millis(999);
        assert!(matches!(
            p.decide(3, Some(t0), 0, false, just_before),
            Decision::WaitUntil(_)
        ));
        assert_eq!(
            p.decide(3, Some(t0), 0, false, t0 + Duration::from_secs(1)),
            Decision::Flush(3)
        );
    }

    #[test]
    fn eager_flushes_when_nothing_is_in_flight() {
        let now = Instant::now();
        let p = FlushPolicy::default();
        assert_eq!(p.decide(1, Some(now), 0, false, now), Decision::Flush(1));
        // one in flight: wait for it, up to the 50/1 s bounds
        assert!(matches!(
            p.decide(10, Some(now), 1, false, now),
            Decision::WaitUntil(_)
        ));
    }

    #[test]
    fn connections_bound_concurrency_and_size_is_capped() {
        let now = Instant::now();
        let p = FlushPolicy {
            max_batch_rows: 100,
            ..FlushPolicy::default()
        };
        assert_eq!(p.decide(1000, Some(now), 2, false, now), Decision::Idle);
        assert_eq!(
            p.decide(1000, Some(now), 1, false, now),
            Decision::Flush(100)
        );
    }

    #[test]
    fn closing_flushes_the_rest() {
        let now = Instant::now();
        assert_eq!(
            strict().decide(3, Some(now), 1, true, now),
            Decision::Flush(3)
        );
    }
}
