//! What the client knows of the account: positions by leg, marks, option marks and
//! units, and which streams they need. Pure: no IO.

use super::*;

pub(super) type PositionKey = (String, String);

/// How long a streamed change is protected from older REST reads: far longer than
/// any one read takes.
pub(super) const STREAMED_MEMORY: Duration = Duration::from_secs(600);

#[derive(Default)]
pub(super) struct State {
    pub(super) positions: HashMap<PositionKey, Arc<BnPosition>>,
    pub(super) info: HashMap<String, SymbolInfo>,
    pub(super) marks: HashMap<String, Arc<MarkPrice>>,
    pub(super) option_marks: HashMap<String, Arc<OptionMark>>,
    /// Bumped whenever the set of symbols to stream may have changed.
    pub(super) version: u64,
    /// When the user stream last changed each position: a REST read that began
    /// before must not revert it.
    pub(super) streamed: HashMap<PositionKey, Instant>,
    /// Held options' contract units (`/eapi/v1/exchangeInfo`): their multiplier.
    pub(super) option_units: HashMap<String, Decimal>,
}

impl State {
    pub(super) fn position(
        &self,
        account: &Arc<str>,
        symbol: &str,
        side: &str,
        amount: Decimal,
        entry: Decimal,
    ) -> BnPosition {
        let info = self.info.get(symbol);
        let kind = kind_of(symbol, info);
        // An option's multiplier is its venue-listed unit, never a guess: unknown
        // is 0, which normalization refuses (counted as invalid_multiplier).
        let contract_size = match kind {
            BnKind::Option => self
                .option_units
                .get(symbol)
                .copied()
                .unwrap_or(Decimal::ZERO),
            _ => Decimal::ONE,
        };
        BnPosition {
            account: account.clone(),
            symbol: symbol.to_owned(),
            position_side: side.to_owned(),
            amount: amount.normalize(),
            entry_price: entry,
            kind,
            contract_size,
            underlying: underlying_of(symbol, info),
        }
    }

    pub(super) fn quote(&self, p: Arc<BnPosition>) -> BnQuote {
        BnQuote {
            mark: self.marks.get(&p.symbol).cloned(),
            option: (p.kind == BnKind::Option)
                .then(|| self.option_marks.get(&p.symbol).cloned())
                .flatten(),
            position: p,
        }
    }

    /// Marks of one underlying's options (the stream carries every listed strike):
    /// only those of held options are kept, so memory follows the positions, not
    /// the option chain. Returns a quote for each held position they move.
    pub(super) fn apply_option_marks(&mut self, marks: Vec<OptionMark>) -> Vec<BnQuote> {
        let mut held: HashMap<&str, Vec<Arc<BnPosition>>> = HashMap::new();
        for p in self.positions.values().filter(|p| p.kind == BnKind::Option) {
            held.entry(p.symbol.as_str()).or_default().push(p.clone());
        }
        let mut moved = Vec::new();
        for m in marks {
            if let Some(positions) = held.get(m.symbol.as_str()) {
                moved.extend(positions.iter().cloned());
                self.option_marks.insert(m.symbol.clone(), Arc::new(m));
            }
        }
        moved.into_iter().map(|p| self.quote(p)).collect()
    }

    /// Sets one position; returns it if it changed (closed ones too, with amount 0).
    pub(super) fn upsert(&mut self, p: BnPosition) -> Option<Arc<BnPosition>> {
        let key = (p.symbol.clone(), p.position_side.clone());
        let p = Arc::new(p);
        let changed = match self.positions.get(&key) {
            Some(old) => old.amount != p.amount || old.entry_price != p.entry_price,
            None => !p.amount.is_zero(),
        };
        if !changed {
            return None;
        }
        if p.amount.is_zero() {
            self.positions.remove(&key);
            if !self.positions.values().any(|q| q.symbol == p.symbol) {
                // Nothing left to price with it (a listed symbol's mark stays: it is
                // small, and configured symbols stream whether held or not).
                self.option_marks.remove(&p.symbol);
            }
        } else {
            self.positions.insert(key, p.clone());
        }
        self.version += 1;
        Some(p)
    }

    pub(super) fn streams(&self, configured: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut public = BTreeSet::new();
        let mut market = BTreeSet::new();
        let linear = configured.iter().cloned().chain(
            self.positions
                .values()
                .filter(|p| p.kind != BnKind::Option)
                .map(|p| p.symbol.clone()),
        );
        for s in linear {
            let s = s.to_ascii_lowercase();
            public.insert(format!("{s}@depth@100ms"));
            public.insert(format!("{s}@bookTicker"));
            market.insert(format!("{s}@markPrice@1s"));
        }
        for p in self.positions.values().filter(|p| p.kind == BnKind::Option) {
            market.insert(format!(
                "{}@optionMarkPrice",
                p.underlying.to_ascii_lowercase()
            ));
        }
        (public, market)
    }
}
