//! The one way every retry loop waits: exponential backoff (×2) with ±50 % jitter,
//! capped, never giving up. Each loop names its bounds through a preset here, so
//! the retry behaviour of the service reads in one place.

use std::time::Duration;

use backoff::ExponentialBackoff;

/// Exponential backoff from `initial` up to `max`, with jitter, for ever.
pub fn exponential(initial: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: initial,
        current_interval: initial,
        max_interval: max,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

/// A supervised task that stopped: restart after 0.5 s, up to 30 s.
pub fn task_restart() -> ExponentialBackoff {
    exponential(Duration::from_millis(500), Duration::from_secs(30))
}

/// The database at start-up (migrations): 250 ms up to 10 s.
pub fn database_start() -> ExponentialBackoff {
    exponential(Duration::from_millis(250), Duration::from_secs(10))
}

/// Redis (price cache, position events): 100 ms up to 5 s.
pub fn redis() -> ExponentialBackoff {
    exponential(Duration::from_millis(100), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backoff::backoff::Backoff;

    #[test]
    fn waits_grow_within_jitter_and_stop_at_the_cap() {
        let mut b = exponential(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..10).map(|_| b.next_backoff().unwrap()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(150));
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(1500)),
            "{waits:?}"
        );
        assert!(
            waits[9] >= Duration::from_millis(500),
            "reaches the cap: {waits:?}"
        );
        b.reset();
        assert!(b.next_backoff().unwrap() <= Duration::from_millis(150));
    }
}
