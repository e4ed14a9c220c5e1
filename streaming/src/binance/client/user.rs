//! The user data stream (`/private`): listen key, ACCOUNT_UPDATE and reconcile on
//! every (re)connect.

use super::*;

pub(super) struct UserHandler {
    pub(super) shared: Arc<Shared>,
    pub(super) listen_key: Option<Secret>,
    pub(super) opened_at: Instant,
}

impl UserHandler {
    pub(super) async fn on_account_update(&mut self, data: wire::AccountData) {
        let quotes: Vec<BnQuote> = {
            let mut st = self.shared.state.lock().expect("state lock");
            let mut quotes = Vec::new();
            for p in data.positions {
                let p = st.position(
                    &self.shared.account,
                    &p.symbol,
                    &p.position_side,
                    p.amount,
                    p.entry_price,
                );
                let key = (p.symbol.clone(), p.position_side.clone());
                st.streamed.insert(key, Instant::now());
                if let Some(p) = st.upsert(p) {
                    quotes.push(st.quote(p));
                }
            }
            self.shared.publish_positions_gauge(st.positions.len());
            quotes
        };
        for q in quotes {
            self.shared.emit(q).await;
        }
    }
}

impl WsHandler for UserHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        let stale = self.shared.listen_key_invalid.swap(false, Relaxed);
        if stale || self.listen_key.is_none() {
            let key = self.shared.rest.create_listen_key().await.map_err(|e| {
                self.shared.rest_failed("listen key", &e);
                if e.is_auth() {
                    PrepareError::NotAuthenticated(e.to_string())
                } else {
                    PrepareError::Failed(e.to_string())
                }
            })?;
            self.shared.set_authenticated(true);
            self.shared.stats.listen_keys_created.fetch_add(1, Relaxed);
            metrics::counter!(LISTEN_KEYS).increment(1);
            self.listen_key = Some(key);
        }
        let key = self.listen_key.as_ref().expect("listen key set above");
        Ok(ConnectRequest {
            url: format!(
                "{}/private/ws?listenKey={}",
                self.shared.cfg.ws_url,
                key.expose()
            ),
            headers: Vec::new(),
            tls: self.shared.cfg.tls(),
        })
    }

    fn on_open(&mut self, _out: &mut Outbox) {
        self.opened_at = Instant::now();
        // Whatever changed while we were away is not replayed: read it.
        self.shared.refresh_positions.notify_one();
        if let Some(orders) = &self.shared.cfg.orders {
            // A full queue already holds work that leads to reading the venue back.
            let _ = orders.try_send(OrderFeed::Opened);
        }
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        let event = match wire::parse_user(text) {
            Ok(e) => e,
            Err(e) => {
                self.shared.malformed("user data frame", text, &e);
                return Flow::Continue;
            }
        };
        let label = match &event {
            UserEvent::AccountUpdate { .. } => "account_update",
            UserEvent::OrderTradeUpdate { .. } => "order_trade_update",
            UserEvent::ListenKeyExpired { .. } => "listen_key_expired",
            UserEvent::Other(_) => "other",
        };
        metrics::counter!(USER_EVENTS, "event" => label).increment(1);
        match event {
            UserEvent::AccountUpdate { data, .. } => {
                self.shared.stats.account_updates.fetch_add(1, Relaxed);
                self.on_account_update(data).await;
                Flow::Data
            }
            UserEvent::OrderTradeUpdate { order, event_time } => {
                self.shared.stats.order_updates.fetch_add(1, Relaxed);
                tracing::debug!(symbol = %order.symbol, order_id = order.order_id,
                    status = %order.status, "Binance order update");
                if let Some(orders) = &self.shared.cfg.orders {
                    // Waits rather than drops: a fill must not be lost to a full queue.
                    let _ = orders.send(OrderFeed::Update { event_time, order }).await;
                }
                Flow::Data
            }
            UserEvent::ListenKeyExpired { .. } => {
                self.shared.stats.listen_key_expiries.fetch_add(1, Relaxed);
                tracing::warn!("Binance listen key expired; creating a new one");
                self.listen_key = None;
                Flow::Reconnect("listen_key_expired")
            }
            UserEvent::Other(_) => Flow::Data,
        }
    }

    fn heartbeat(&mut self, _out: &mut Outbox) {}

    fn on_tick(&mut self, _out: &mut Outbox) -> Flow {
        if self.shared.listen_key_invalid.load(Relaxed) {
            return Flow::Reconnect("listen_key_invalid");
        }
        if self.opened_at.elapsed() > self.shared.cfg.max_connection_age {
            return Flow::Reconnect("max_age");
        }
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {}
}
