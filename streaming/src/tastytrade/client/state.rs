//! What the client knows: positions per account (REST reads and streamed changes,
//! ordered), the subscriptions they need, and the latest market data. Pure: no IO.

use super::*;

pub(super) type PositionKey = (Arc<str>, String);

#[derive(Default)]
pub(super) struct Book {
    pub(super) positions: HashMap<PositionKey, Arc<TtPosition>>,
    /// Positions by DXLink symbol.
    pub(super) by_symbol: HashMap<String, Vec<Arc<TtPosition>>>,
    pub(super) wanted: BTreeSet<Sub>,
    pub(super) accounts: Vec<String>,
    pub(super) version: u64,
    /// When the account streamer last changed each position.
    pub(super) streamed: HashMap<PositionKey, Instant>,
}

impl Book {
    pub(super) fn reindex(&mut self) {
        let mut by_symbol: HashMap<String, Vec<Arc<TtPosition>>> = HashMap::new();
        let mut wanted = BTreeSet::new();
        for p in self.positions.values() {
            let Some(sym) = streamer_symbol(p) else {
                continue;
            };
            if is_option(p) {
                wanted.insert((EventType::Greeks, sym.clone()));
                wanted.insert((EventType::Quote, p.underlying_symbol.clone()));
            }
            wanted.insert((EventType::Quote, sym.clone()));
            by_symbol.entry(sym).or_default().push(p.clone());
        }
        self.by_symbol = by_symbol;
        self.wanted = wanted;
        self.version += 1;
    }

    /// Every position of `account` as a REST read that began at `read_started`
    /// reports it. A position the account streamer changed after that instant keeps
    /// the streamed state: the read may predate the change and must not revert it.
    /// Returns the positions whose quantity changed, closes included (at quantity 0),
    /// so their rows can say so (no market data will come for a closed one).
    pub(super) fn replace_account(
        &mut self,
        account: &str,
        positions: Vec<TtPosition>,
        read_started: Instant,
    ) -> Vec<Arc<TtPosition>> {
        let before: HashMap<PositionKey, Arc<TtPosition>> = self
            .positions
            .iter()
            .filter(|((a, _), _)| &**a == account)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut after: HashMap<PositionKey, Arc<TtPosition>> = positions
            .into_iter()
            .filter(|p| !p.quantity.is_zero())
            .map(|p| ((p.account.clone(), p.symbol.clone()), Arc::new(p)))
            .collect();
        self.streamed.retain(|_, at| at.elapsed() < STREAMED_MEMORY);
        for (key, at) in &self.streamed {
            if &*key.0 == account && *at >= read_started {
                match before.get(key) {
                    Some(p) => after.insert(key.clone(), p.clone()),
                    None => after.remove(key),
                };
            }
        }
        if before == after {
            return Vec::new();
        }
        let mut changed: Vec<Arc<TtPosition>> = after
            .iter()
            .filter(|(k, p)| before.get(*k).is_some_and(|b| b.quantity != p.quantity))
            .map(|(_, p)| p.clone())
            .collect();
        changed.extend(
            before
                .iter()
                .filter(|(k, _)| !after.contains_key(*k))
                .map(|(_, p)| {
                    Arc::new(TtPosition {
                        quantity: Decimal::ZERO,
                        ..TtPosition::clone(p)
                    })
                }),
        );
        self.positions.retain(|(a, _), _| &**a != account);
        self.positions.extend(after);
        self.reindex();
        changed
    }

    /// One position as the account streamer pushed it. Returns it (closed ones too,
    /// so their last row can say so).
    pub(super) fn upsert(&mut self, p: TtPosition) -> Arc<TtPosition> {
        let key = (p.account.clone(), p.symbol.clone());
        self.streamed.insert(key.clone(), Instant::now());
        let p = Arc::new(p);
        if p.quantity.is_zero() {
            self.positions.remove(&key);
        } else {
            self.positions.insert(key, p.clone());
        }
        self.reindex();
        p
    }
}

/// How long a streamed change is remembered to protect it from older REST reads:
/// far longer than any one read takes.
pub(super) const STREAMED_MEMORY: Duration = Duration::from_secs(600);

/// The latest market data per DXLink symbol, shared by both sockets.
#[derive(Default)]
pub(super) struct Market {
    pub(super) greeks: HashMap<String, Arc<GreeksEvent>>,
    pub(super) quotes: HashMap<String, Arc<QuoteEvent>>,
}

impl Market {
    pub(super) fn quote_for(&self, position: Arc<TtPosition>) -> TtQuote {
        let sym = streamer_symbol(&position).unwrap_or_default();
        self.quote_for_symbol(&sym, position)
    }

    /// As [`Market::quote_for`], when the caller already knows the DXLink symbol
    /// (the per-event path: no symbol is rebuilt).
    pub(super) fn quote_for_symbol(&self, sym: &str, position: Arc<TtPosition>) -> TtQuote {
        TtQuote {
            greeks: is_option(&position)
                .then(|| self.greeks.get(sym).cloned())
                .flatten(),
            quote: self.quotes.get(sym).cloned(),
            underlying: self.quotes.get(&position.underlying_symbol).cloned(),
            position,
        }
    }
}
