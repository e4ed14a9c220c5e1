//! The account streamer: `connect` with the access token, heartbeats, and
//! `CurrentPosition` pushes.

use super::*;

pub(super) struct AccountHandler {
    pub(super) rest: Rest,
    pub(super) cfg: TastytradeConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) token: Secret,
    pub(super) next_request: u64,
    pub(super) force_token: bool,
}

impl AccountHandler {
    pub(super) fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    pub(super) async fn position(&mut self, data: &serde_json::Value, text: &str) -> Flow {
        let p = match rest::parse_position(data) {
            Ok(p) => p,
            Err(err) => {
                self.shared.malformed("CurrentPosition", text, &err);
                return Flow::Continue;
            }
        };
        let quote = {
            let mut book = self.shared.book.lock().expect("book lock");
            let p = book.upsert(p);
            self.shared
                .stats
                .positions
                .store(book.positions.len() as u64, Relaxed);
            self.shared.market.lock().expect("market lock").quote_for(p)
        };
        self.shared.stats.position_updates.fetch_add(1, Relaxed);
        metrics::counter!(POSITION_UPDATES, "broker" => BROKER.as_str()).increment(1);
        tracing::info!(
            account = %quote.position.account,
            symbol = %quote.position.symbol,
            quantity = %quote.position.quantity,
            "Tastytrade position changed"
        );
        self.shared.emit(quote).await;
        Flow::Data
    }
}

impl WsHandler for AccountHandler {
    async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
        self.token = self
            .rest
            .access_token(std::mem::take(&mut self.force_token))
            .await
            .map_err(|e| self.shared.prepare_error(e))?;
        let known = self.shared.book.lock().expect("book lock").accounts.clone();
        if known.is_empty() {
            let accounts = self
                .rest
                .accounts()
                .await
                .map_err(|e| self.shared.prepare_error(e))?;
            self.shared.book.lock().expect("book lock").accounts = accounts;
        }
        Ok(ConnectRequest {
            url: self.cfg.account_streamer_url.clone(),
            headers: Vec::new(),
            tls: self.cfg.tls(),
        })
    }

    fn on_open(&mut self, out: &mut Outbox) {
        let accounts = self.shared.book.lock().expect("book lock").accounts.clone();
        let id = self.request_id();
        out.push(account_stream::connect(self.token.expose(), &accounts, id));
        // The streamer replays nothing: re-read positions for whatever we missed.
        self.shared.refresh_positions.notify_one();
    }

    async fn on_text(&mut self, text: &str, _out: &mut Outbox) -> Flow {
        let messages = match account_stream::parse(text) {
            Ok(m) => m,
            Err(err) => {
                self.shared
                    .malformed("account streamer message", text, &err);
                return Flow::Continue;
            }
        };
        let mut flow = Flow::Continue;
        for m in messages {
            let f = match m {
                StreamerMessage::Ack {
                    ok: true, action, ..
                } if action == "heartbeat" => Flow::ProbeReply,
                StreamerMessage::Ack { ok: true, .. } => Flow::Continue,
                StreamerMessage::Ack {
                    ok: false,
                    action,
                    message,
                    ..
                } => {
                    tracing::warn!(%action, %message, "Tastytrade account streamer refused an action");
                    self.force_token = true;
                    Flow::Reconnect("action_refused")
                }
                StreamerMessage::Notification { kind, data } if kind == "CurrentPosition" => {
                    self.position(&data, text).await
                }
                StreamerMessage::Notification { kind, .. } => {
                    tracing::debug!(%kind, "account notification ignored");
                    Flow::Continue
                }
            };
            flow = match (flow, f) {
                (Flow::Reconnect(r), _) | (_, Flow::Reconnect(r)) => Flow::Reconnect(r),
                (Flow::Data, _) | (_, Flow::Data) => Flow::Data,
                (Flow::ProbeReply, _) | (_, Flow::ProbeReply) => Flow::ProbeReply,
                _ => Flow::Continue,
            };
        }
        flow
    }

    fn heartbeat(&mut self, out: &mut Outbox) {
        let id = self.request_id();
        out.push(account_stream::heartbeat(self.token.expose(), id));
    }

    fn probe(&mut self, out: &mut Outbox) -> bool {
        self.heartbeat(out);
        true
    }

    fn on_tick(&mut self, _out: &mut Outbox) -> Flow {
        Flow::Continue
    }

    fn on_disconnect(&mut self, _reason: Disconnect) {}
}
