//! Which price an order is checked and valued at: the first fresh quote of the
//! sources in order (the in-process stream, then the Redis cache, then the venue's
//! REST API), each judged against a staleness bound. When none is fresh the order is
//! refused with `PRICE_STALE` (a price exists but is too old) or `PRICE_UNAVAILABLE`
//! (none at all): an old price is never used to approve an order.

use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stream,
    Cache,
    Rest,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Cache => "cache",
            Source::Rest => "rest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub price: Decimal,
    /// When the venue stamped it (Unix milliseconds).
    pub at_ms: i64,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("No fresh price for {symbol}: the newest ({from}) is {age_ms} ms old, the bound is {bound_ms} ms")]
    Stale {
        symbol: String,
        from: &'static str,
        age_ms: i64,
        bound_ms: i64,
    },
    #[error("No price for {symbol}")]
    Unavailable { symbol: String },
}

impl PriceError {
    pub const fn code(&self) -> &'static str {
        match self {
            PriceError::Stale { .. } => "PRICE_STALE",
            PriceError::Unavailable { .. } => "PRICE_UNAVAILABLE",
        }
    }
}

/// One price lookup: offer each source's quote in order until one is fresh.
#[derive(Debug)]
pub struct Lookup<'a> {
    symbol: &'a str,
    now_ms: i64,
    bound_ms: i64,
    nearest_stale: Option<Quote>,
}

impl<'a> Lookup<'a> {
    pub fn new(symbol: &'a str, now_ms: i64, bound_ms: i64) -> Self {
        Self {
            symbol,
            now_ms,
            bound_ms,
            nearest_stale: None,
        }
    }

    /// The quote if it is fresh: positive, and stamped at most `bound_ms` before now
    /// (a stamp from the future counts as fresh up to the same bound, for clock skew).
    pub fn offer(&mut self, quote: Option<Quote>) -> Option<Quote> {
        let q = quote.filter(|q| q.price > Decimal::ZERO)?;
        if (self.now_ms - q.at_ms).abs() <= self.bound_ms {
            return Some(q);
        }
        let off = |q: &Quote| (self.now_ms - q.at_ms).abs();
        if self.nearest_stale.is_none_or(|s| off(&q) < off(&s)) {
            self.nearest_stale = Some(q);
        }
        None
    }

    /// Why no offered quote was fresh: the one nearest to fresh, or none at all.
    pub fn fail(self) -> PriceError {
        match self.nearest_stale {
            Some(q) => PriceError::Stale {
                symbol: self.symbol.to_owned(),
                from: q.source.as_str(),
                age_ms: (self.now_ms - q.at_ms).abs(),
                bound_ms: self.bound_ms,
            },
            None => PriceError::Unavailable {
                symbol: self.symbol.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(price: i64, at_ms: i64, source: Source) -> Option<Quote> {
        Some(Quote {
            price: Decimal::from(price),
            at_ms,
            source,
        })
    }

    #[test]
    fn the_first_fresh_source_wins() {
        let mut l = Lookup::new("BTCUSDT", 100_000, 10_000);
        assert_eq!(l.offer(q(1, 80_000, Source::Stream)), None, "20 s old");
        assert_eq!(l.offer(None), None);
        let cache = l.offer(q(2, 95_000, Source::Cache));
        assert_eq!(cache.map(|q| q.source), Some(Source::Cache));
    }

    #[test]
    fn without_a_fresh_quote_the_nearest_stale_one_is_reported() {
        let mut l = Lookup::new("BTCUSDT", 100_000, 10_000);
        l.offer(q(1, 50_000, Source::Stream));
        l.offer(q(1, 70_000, Source::Cache));
        l.offer(q(1, 200_000, Source::Rest));
        l.offer(q(0, 100_000, Source::Rest));
        let e = l.fail();
        assert_eq!(e.code(), "PRICE_STALE");
        assert_eq!(
            e.to_string(),
            "No fresh price for BTCUSDT: the newest (cache) is 30000 ms old, the bound is 10000 ms"
        );
        let e = Lookup::new("ETHUSDT", 0, 10).fail();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("PRICE_UNAVAILABLE", "No price for ETHUSDT")
        );
    }
}
