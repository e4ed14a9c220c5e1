//! A fixed-size latency histogram for the rolling p95 in the logs: 0.1 ms buckets
//! up to 10 s, everything above in the last bucket. Recording is O(1) and nothing
//! allocates after construction.

#[derive(Debug, Clone)]
pub struct LatencyWindow {
    buckets: Vec<u32>,
    count: u64,
}

const RESOLUTION_US: u64 = 100;
const MAX_US: u64 = 10_000_000;

impl Default for LatencyWindow {
    fn default() -> Self {
        Self {
            buckets: vec![0; (MAX_US / RESOLUTION_US) as usize + 1],
            count: 0,
        }
    }
}

impl LatencyWindow {
    pub fn record_micros(&mut self, us: i64) {
        let idx = (us.max(0) as u64 / RESOLUTION_US).min(MAX_US / RESOLUTION_US) as usize;
        self.buckets[idx] = self.buckets[idx].saturating_add(1);
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The upper edge of the bucket holding quantile `q`, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(((i as u64 + 1) * RESOLUTION_US) as f64 / 1000.0);
            }
        }
        None
    }

    pub fn reset(&mut self) {
        self.buckets.fill(0);
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.quantile_ms(0.95), None);
        for ms in 1..=100 {
            w.record_micros(ms * 1000 - 50);
        }
        assert_eq!(w.count(), 100);
        assert_eq!(w.quantile_ms(0.95), Some(95.0));
        assert_eq!(w.quantile_ms(0.5), Some(50.0));
        w.record_micros(60_000_000);
        assert_eq!(w.quantile_ms(1.0), Some(10_000.1));
        w.reset();
        assert_eq!(w.count(), 0);
    }
}
