//! The two market-data sockets (`/public` and `/market`): subscriptions that follow
//! the positions, local order books, marks and option marks.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `/public`: diff depth and book tickers.
    Public,
    /// `/market`: mark prices and option marks.
    Market,
}

pub(super) struct MarketHandler {
    pub(super) shared: Arc<Shared>,
    pub(super) route: Route,
    pub(super) subscribed: BTreeSet<String>,
    pub(super) version: u64,
    pub(super) next_id: u64,
    pub(super) opened_at: Instant,
    pub(super) last_data: Instant,
}

impl MarketHandler {
    pub(super) fn new(shared: Arc<Shared>, route: Route) -> Self {
        Self {
            shared,
            route,
            subscribed: BTreeSet::new(),
            version: u64::MAX,
            next_id: 1,
            opened_at: Instant::now(),
            last_data: Instant::now(),
        }
    }

    pub(super) fn wanted(&self) -> BTreeSet<String> {
        let st = self.shared.state.lock().expect("state lock");
        let (public, market) = st.streams(&self.shared.cfg.symbols);
        match self.route {
            Route::Public => public,
            Route::Market => market,
        }
    }

    /// Subscribes what is wanted and not yet subscribed, 200 streams per request.
    pub(super) fn subscribe_missing(&mut self, out: &mut Outbox) {
        let version = self.shared.state.lock().expect("state lock").version;
        if version == self.version {
            return;
        }
        self.version = version;
        let missing: Vec<String> = self
            .wanted()
            .into_iter()
            .filter(|s| !self.subscribed.contains(s))
            .collect();
        for chunk in missing.chunks(200) {
            out.push(wire::subscribe(self.next_id, chunk));
            self.next_id += 1;
        }
        self.subscribed.extend(missing);
    }

    pub(super) async fn on_depth(&mut self, diff: wire::DepthUpdate) {
        let symbol = diff.symbol.clone();
        let mut sync = {
            let mut books = self.shared.stats.books.lock().expect("books lock");
            books.entry(symbol.clone()).or_default().on_diff(diff)
        };
        // A snapshot can itself be older than the buffered diffs: try a few times.
        for _ in 0..3 {
            match sync {
                Sync::Applied => {
                    self.shared.stats.depth_applied.fetch_add(1, Relaxed);
                    return;
                }
                Sync::Pending => return,
                Sync::Gap | Sync::NeedSnapshot => {
                    if sync == Sync::Gap {
                        self.shared.stats.resyncs.fetch_add(1, Relaxed);
                        metrics::counter!(BOOK_RESYNCS).increment(1);
                        tracing::info!(%symbol, "Binance depth gap: resyncing the book from a snapshot");
                    }
                    if self.shared.rest.paused_for().is_some() {
                        // Rate limited: diffs keep buffering and the snapshot waits
                        // for the pause to end, rather than one held request per diff.
                        let mut books = self.shared.stats.books.lock().expect("books lock");
                        if let Some(b) = books.get_mut(&symbol) {
                            b.snapshot_failed();
                        }
                        return;
                    }
                    let snap = self
                        .shared
                        .rest
                        .depth(&symbol, self.shared.cfg.depth_limit)
                        .await;
                    let mut books = self.shared.stats.books.lock().expect("books lock");
                    let book = books.entry(symbol.clone()).or_default();
                    match snap {
                        Ok(s) => {
                            self.shared.stats.snapshots.fetch_add(1, Relaxed);
                            sync = book.on_snapshot(&s);
                        }
                        Err(e) => {
                            book.snapshot_failed();
                            drop(books);
                            self.shared.rest_failed("depth snapshot", &e);
                            return;
                        }
                    }
                }
            }
        }
        if matches!(sync, Sync::Gap | Sync::NeedSnapshot) {
            let mut books = self.shared.stats.books.lock().expect("books lock");
            if let Some(b) = books.get_mut(&symbol) {
                b.snapshot_failed();
            }
        }
    }

    pub(super) async fn on_mark(&mut self, m: MarkPrice) {
        self.shared.stats.prices.update(&m.symbol, |e| {
            e.mark = Some(m.mark);
            e.mark_time = m.event_time;
        });
        let quotes: Vec<BnQuote> = {
            let mut st = self.shared.state.lock().expect("state lock");
            let m = Arc::new(m);
            st.marks.insert(m.symbol.clone(), m.clone());
            st.positions
                .values()
                .filter(|p| p.symbol == m.symbol)
                .cloned()
                .map(|p| st.quote(p))
                .collect()
        };
        for q in quotes {
            self.shared.emit(q).await;
        }
    }

    pub(super) async fn on_option_marks(&mut self, marks: Vec<OptionMark>) {
        let quotes = self
            .shared
            .state
            .lock()
            .expect("state lock")
            .apply_option_marks(marks);
        for q in quotes {
            self.shared.emit(q).await;
        }
    }
}

impl WsHandler for MarketHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let path = match self.route {
            Route::Public => "public",
            Route::Market => "market",
        };
        Ok(ConnectRequest {
            url: format!("{}/{path}/ws", self.shared.cfg.ws_url),
            headers: Vec::new(),
            tls: self.shared.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        self.subscribed.clear();
        self.version = u64::MAX;
        self.opened_at = Instant::now();
        self.last_data = Instant::now();
        self.subscribe_missing(out);
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        let flow = self.on_message(text).await;
        if flow == Flow::Data {
            self.last_data = Instant::now();
        }
        flow
    }

    fn heartbeat(&mut self, _out: &mut Outbox) {}

    fn probe(&mut self, out: &mut Outbox) -> bool {
        out.push(wire::list_subscriptions(0));
        true
    }

    fn on_tick(&mut self, out: &mut Outbox) -> Flow {
        if self.opened_at.elapsed() > self.shared.cfg.max_connection_age {
            return Flow::Reconnect("max_age");
        }
        if !self.subscribed.is_empty()
            && self.last_data.elapsed() > self.shared.cfg.market_data_timeout
        {
            tracing::warn!(route = ?self.route, "Binance market socket answers but sends no data; replacing it");
            return Flow::Reconnect("no_data");
        }
        self.subscribe_missing(out);
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {
        if self.route == Route::Public {
            let mut books = self.shared.stats.books.lock().expect("books lock");
            for b in books.values_mut() {
                b.reset();
            }
        }
    }
}

impl MarketHandler {
    pub(super) async fn on_message(&mut self, text: &str) -> Flow {
        match wire::parse_market(text) {
            Ok(MarketMessage::Depth(d)) => {
                self.on_depth(d).await;
                Flow::Data
            }
            Ok(MarketMessage::BookTicker(t)) => {
                self.shared.stats.prices.update(&t.symbol, |e| {
                    e.bid = Some(t.bid);
                    e.ask = Some(t.ask);
                    e.book_time = t.event_time;
                });
                Flow::Data
            }
            Ok(MarketMessage::MarkPrice(m)) => {
                self.on_mark(m).await;
                Flow::Data
            }
            Ok(MarketMessage::OptionMarks(m)) => {
                self.on_option_marks(m).await;
                Flow::Data
            }
            Ok(MarketMessage::Reply { .. }) => Flow::ProbeReply,
            Ok(MarketMessage::Error { code, msg }) => {
                tracing::warn!(code, %msg, "Binance refused a stream request");
                Flow::Continue
            }
            Err(e) => {
                self.shared.malformed("market frame", text, &e);
                Flow::Continue
            }
        }
    }
}
