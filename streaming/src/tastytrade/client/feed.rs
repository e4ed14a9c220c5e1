//! The DXLink market-data socket: the SETUP/AUTH/CHANNEL/FEED handshake, every
//! subscription replayed on each connection, Greeks and quotes.

use super::*;

pub(super) struct FeedHandler {
    pub(super) rest: Rest,
    pub(super) cfg: TastytradeConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) session: FeedSession,
    /// The quote token this socket authorized with.
    pub(super) token_generation: u64,
    /// The server refused our token: fetch a new one before the next connect.
    pub(super) force_token: bool,
    /// Subscriptions on the current socket.
    pub(super) subscribed: BTreeSet<Sub>,
    pub(super) book_version: u64,
    pub(super) wanted: BTreeSet<Sub>,
}

impl FeedHandler {
    pub(super) fn current_token(&self) -> Option<(QuoteToken, u64)> {
        self.shared.quote_token.lock().expect("token lock").clone()
    }

    pub(super) fn refresh_wanted(&mut self) {
        let book = self.shared.book.lock().expect("book lock");
        if book.version != self.book_version {
            self.book_version = book.version;
            self.wanted = book.wanted.clone();
        }
    }

    pub(super) fn authorize(&mut self, out: &mut Outbox) {
        if let Some((token, generation)) = self.current_token() {
            self.token_generation = generation;
            out.push(dxlink::auth(token.token.expose()));
        }
    }

    pub(super) fn send_subscriptions(&mut self, subs: &[Sub], out: &mut Outbox) {
        for msg in dxlink::subscriptions(FEED_CHANNEL, subs) {
            out.push(msg);
        }
        self.shared
            .stats
            .subscriptions_sent
            .fetch_add(subs.len() as u64, Relaxed);
        metrics::counter!(SUBSCRIPTIONS_SENT, "broker" => BROKER.as_str())
            .increment(subs.len() as u64);
    }

    pub(super) fn subscribe_all(&mut self, out: &mut Outbox) {
        self.refresh_wanted();
        self.subscribed = self.wanted.clone();
        let all: Vec<Sub> = self.subscribed.iter().cloned().collect();
        self.send_subscriptions(&all, out);
    }

    pub(super) async fn dispatch(&mut self, events: Vec<DxEvent>) {
        for event in events {
            let quotes: Vec<TtQuote> = {
                let book = self.shared.book.lock().expect("book lock");
                let mut market = self.shared.market.lock().expect("market lock");
                let (symbol, options) = match event {
                    DxEvent::Greeks(g) => {
                        let symbol = g.symbol.clone();
                        market.greeks.insert(symbol.clone(), Arc::new(g));
                        (symbol, true)
                    }
                    DxEvent::Quote(q) => {
                        let symbol = q.symbol.clone();
                        market.quotes.insert(symbol.clone(), Arc::new(q));
                        (symbol, false)
                    }
                };
                // Options are emitted on their Greeks; stocks and futures on quotes.
                book.by_symbol
                    .get(&symbol)
                    .into_iter()
                    .flatten()
                    .filter(|p| is_option(p) == options)
                    .map(|p| market.quote_for_symbol(&symbol, p.clone()))
                    .collect()
            };
            for q in quotes {
                if !self.shared.emit(q).await {
                    return;
                }
            }
        }
    }
}

impl WsHandler for FeedHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let token = match self.current_token() {
            Some(t) if !std::mem::take(&mut self.force_token) => t.0,
            _ => {
                fetch_quote_token(&self.rest, &self.shared)
                    .await
                    .map_err(|e| self.shared.prepare_error(e))?
                    .0
            }
        };
        Ok(ConnectRequest {
            url: token.dxlink_url,
            headers: Vec::new(),
            tls: self.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        self.session = FeedSession::new(FEED_CHANNEL);
        self.subscribed.clear();
        out.push(dxlink::setup(
            self.cfg.keepalive_timeout.as_secs(),
            self.cfg.accept_keepalive_timeout.as_secs(),
        ));
    }

    async fn on_text(&mut self, text: &str, out: &mut Outbox) -> Flow {
        let msg = match dxlink::parse_message(text) {
            Ok(m) => m,
            Err(err) => {
                self.shared.malformed("DXLink message", text, &err);
                return Flow::Continue;
            }
        };
        match self.session.on_message(msg) {
            Step::Nothing => Flow::Continue,
            Step::Send(msgs) => {
                for m in msgs {
                    out.push(m);
                }
                Flow::Continue
            }
            Step::Authorize => {
                self.authorize(out);
                Flow::Continue
            }
            Step::Subscribe => {
                out.push(dxlink::feed_setup(FEED_CHANNEL));
                self.subscribe_all(out);
                Flow::Continue
            }
            Step::Resubscribe => {
                let all: Vec<Sub> = self.subscribed.iter().cloned().collect();
                self.send_subscriptions(&all, out);
                Flow::Continue
            }
            Step::Reauthorize => {
                tracing::info!("DXLink withdrew authorization; authorizing with a fresh token");
                match fetch_quote_token(&self.rest, &self.shared).await {
                    Ok(_) => {
                        self.authorize(out);
                        self.session.reauthorizing();
                        self.shared.stats.reauthorizations.fetch_add(1, Relaxed);
                        Flow::Continue
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot fetch a new quote token");
                        Flow::Reconnect("token_refresh_failed")
                    }
                }
            }
            Step::Data(batch) => {
                for err in &batch.skipped {
                    self.shared.malformed("DXLink event", text, err);
                }
                let had_events = !batch.events.is_empty();
                self.dispatch(batch.events).await;
                if had_events {
                    Flow::Data
                } else {
                    Flow::Continue
                }
            }
            Step::Malformed(why) => {
                self.shared.malformed("DXLink message", text, &why);
                Flow::Continue
            }
            Step::Alive => Flow::ProbeReply,
            Step::Reconnect(reason) => {
                if reason == "auth_rejected" {
                    self.force_token = true;
                }
                Flow::Reconnect(reason)
            }
        }
    }

    fn heartbeat(&mut self, out: &mut Outbox) {
        out.push(dxlink::keepalive());
    }

    fn probe(&mut self, out: &mut Outbox) -> bool {
        out.push(dxlink::keepalive());
        true
    }

    fn on_tick(&mut self, out: &mut Outbox) -> Flow {
        if self.session.phase != Phase::Streaming {
            return Flow::Continue;
        }
        // A renewed quote token: authorize again on this socket, keeping the channel.
        if let Some((token, generation)) = self.current_token() {
            if generation != self.token_generation {
                self.token_generation = generation;
                out.push(dxlink::auth(token.token.expose()));
                self.session.reauthorizing();
                self.shared.stats.reauthorizations.fetch_add(1, Relaxed);
                return Flow::Continue;
            }
        }
        self.refresh_wanted();
        let add: Vec<Sub> = self.wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<Sub> = self.subscribed.difference(&self.wanted).cloned().collect();
        if !add.is_empty() {
            self.send_subscriptions(&add, out);
        }
        if !remove.is_empty() {
            for msg in dxlink::unsubscriptions(FEED_CHANNEL, &remove) {
                out.push(msg);
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            self.subscribed = self.wanted.clone();
        }
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {
        self.subscribed.clear();
    }
}
