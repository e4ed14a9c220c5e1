//! The one reconnecting WebSocket loop every adapter runs on.
//!
//! A venue adapter implements [`WsHandler`]: how to prepare a connection (fetch a
//! session or token), what to send once the socket opens (handshake and every
//! subscription — nothing survives a reconnect), how to read a frame, what heartbeat
//! to send, and what to do on a periodic tick (renew subscriptions). This loop owns
//! everything else: connecting (TLS through rustls), bounded exponential backoff with
//! jitter, the inbound-silence watchdog, and per-broker connection metrics.
//!
//! Silence is judged by frames received, not by the socket being open: a half-dead
//! TCP connection looks open for minutes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;

use crate::event::Broker;

pub const WS_CONNECTION_STATE: &str = "greekstream_ws_connection_state";
pub const WS_RECONNECTS: &str = "greekstream_ws_reconnects_total";
pub const WS_FRAMES: &str = "greekstream_ws_frames_received_total";
pub const MALFORMED_FRAMES: &str = "greekstream_broker_malformed_frames_total";

/// Connection states, exported as one 0/1 gauge per state (a Prometheus state set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Disconnected,
    Connecting,
    Connected,
    /// The venue says we are not logged in; we wait for the session to come back
    /// instead of hammering it with reconnects.
    Unauthenticated,
}

impl ConnState {
    pub const ALL: [ConnState; 4] = [
        ConnState::Disconnected,
        ConnState::Connecting,
        ConnState::Connected,
        ConnState::Unauthenticated,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ConnState::Disconnected => "disconnected",
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Unauthenticated => "unauthenticated",
        }
    }
}

/// Why a connection ended (the `reason` label of the reconnect counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The server closed the socket (close frame or EOF).
    Closed,
    /// A transport or protocol error.
    Error,
    /// No frame for longer than the silence timeout.
    Silence,
    /// The handler asked for a fresh connection.
    Handler(&'static str),
    /// The connection could not be opened.
    ConnectFailed,
    /// The venue did not take our outbound frames within the send timeout.
    SendTimeout,
}

impl Disconnect {
    pub const fn as_str(self) -> &'static str {
        match self {
            Disconnect::Closed => "closed",
            Disconnect::Error => "error",
            Disconnect::Silence => "silence",
            Disconnect::Handler(reason) => reason,
            Disconnect::ConnectFailed => "connect_failed",
            Disconnect::SendTimeout => "send_timeout",
        }
    }
}

/// Registers the connection metrics of one socket of `broker` at zero.
pub fn register_metrics(broker: Broker, socket: &'static str) {
    set_state(broker, socket, ConnState::Disconnected);
    for r in [
        "closed",
        "error",
        "silence",
        "connect_failed",
        "send_timeout",
    ] {
        metrics::counter!(WS_RECONNECTS, "broker" => broker.as_str(), "socket" => socket, "reason" => r)
            .increment(0);
    }
    metrics::counter!(WS_FRAMES, "broker" => broker.as_str(), "socket" => socket).increment(0);
    metrics::counter!(MALFORMED_FRAMES, "broker" => broker.as_str()).increment(0);
}

fn set_state(broker: Broker, socket: &'static str, state: ConnState) {
    for s in ConnState::ALL {
        metrics::gauge!(WS_CONNECTION_STATE, "broker" => broker.as_str(), "socket" => socket,
            "state" => s.as_str())
        .set(if s == state { 1.0 } else { 0.0 });
    }
}

/// Counts a frame a handler could not use. Call it from every adapter so the
/// metric means the same everywhere.
pub fn count_malformed(broker: Broker) {
    metrics::counter!(MALFORMED_FRAMES, "broker" => broker.as_str()).increment(1);
}

#[derive(Debug, Clone)]
pub struct WsConfig {
    pub broker: Broker,
    /// Which of the broker's sockets this is (`market_data`, `account`): the
    /// `socket` label of the connection metrics.
    pub socket: &'static str,
    /// How often [`WsHandler::heartbeat`] runs while connected.
    pub heartbeat_interval: Duration,
    /// No inbound frame for this long → the socket is replaced.
    pub silence_timeout: Duration,
    /// Once the venue has answered a probe on this socket: after this much silence a
    /// probe is sent, and no answer within `probe_timeout` replaces the socket. This
    /// finds a dead socket in seconds without mistaking a quiet market for one.
    pub probe_after: Duration,
    pub probe_timeout: Duration,
    /// How often [`WsHandler::on_tick`] runs (and the silence check with it).
    pub tick_interval: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long to wait between checks while the venue reports us unauthenticated.
    pub unauthenticated_poll: Duration,
    /// A connection resets the reconnect backoff only once it has brought data and
    /// stayed up this long: a venue that accepts and drops at once is not hammered
    /// (Binance allows 300 connections per 5 minutes per IP).
    pub stable_after: Duration,
    /// Outbound frames the venue does not take within this are a dead connection.
    pub send_timeout: Duration,
}

impl WsConfig {
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            socket: "market_data",
            heartbeat_interval: Duration::from_secs(30),
            silence_timeout: Duration::from_secs(25),
            probe_after: Duration::from_secs(2),
            probe_timeout: Duration::from_millis(1500),
            tick_interval: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            unauthenticated_poll: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
        }
    }

    fn backoff(&self) -> backoff::ExponentialBackoff {
        crate::retry::exponential(self.backoff_initial, self.backoff_max)
    }
}

/// Certificate checking for `wss://` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Verify against the webpki roots (every real venue).
    Verify,
    /// Accept any certificate: only for a local gateway with a self-signed
    /// certificate, and only when configured.
    AcceptInvalidCerts,
}

impl TlsPolicy {
    /// `AcceptInvalidCerts` only when configured so.
    pub const fn accept_invalid(accept: bool) -> Self {
        if accept {
            TlsPolicy::AcceptInvalidCerts
        } else {
            TlsPolicy::Verify
        }
    }
}

/// Where and how to open the next connection.
#[derive(Clone)]
pub struct ConnectRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub tls: TlsPolicy,
}

/// Header values (session cookies) never print, nor credentials in the URL
/// (a listen key).
impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, _)| (*k, "***")).collect();
        f.debug_struct("ConnectRequest")
            .field("url", &crate::secret::redact_url(&self.url))
            .field("headers", &headers)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The venue says we are not logged in: wait in the `unauthenticated` state.
    #[error("not authenticated: {0}")]
    NotAuthenticated(String),
    /// Anything else (network, HTTP status): back off and retry.
    #[error("{0}")]
    Failed(String),
}

/// What the loop should do after a frame or a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The frame carried data: the connection is proven good, so the backoff resets.
    Data,
    /// The frame answered a probe: the venue answers probes on this socket.
    ProbeReply,
    /// Drop this socket and connect again (the reason becomes a metric label).
    Reconnect(&'static str),
}

/// Text frames to send, collected by the handler and sent by the loop.
#[derive(Debug, Default)]
pub struct Outbox(Vec<String>);

impl Outbox {
    pub fn push(&mut self, text: impl Into<String>) {
        self.0.push(text.into());
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, String> {
        self.0.drain(..)
    }
}

/// One venue's side of the connection. Every method but `prepare` and `on_text` is
/// synchronous: they only decide what to send.
pub trait WsHandler: Send {
    /// Runs before each connection attempt (fetch a session, refresh a token).
    fn prepare(&mut self) -> impl Future<Output = Result<ConnectRequest, PrepareError>> + Send;
    /// The socket is open: queue the handshake and every subscription.
    fn on_open(&mut self, out: &mut Outbox);
    /// One inbound text frame (binary frames are passed as UTF-8 text).
    fn on_text(&mut self, text: &str, out: &mut Outbox) -> impl Future<Output = Flow> + Send;
    /// Queue the venue's application-level heartbeat, if it has one.
    fn heartbeat(&mut self, out: &mut Outbox);
    /// Queue a message the venue answers at once (its reply makes `on_text` return
    /// [`Flow::ProbeReply`]); false if the venue has none.
    fn probe(&mut self, _out: &mut Outbox) -> bool {
        false
    }
    /// Periodic work while connected: renew or add subscriptions, check freshness.
    fn on_tick(&mut self, out: &mut Outbox) -> Flow;
    /// The socket is gone; forget per-connection state.
    fn on_disconnect(&mut self, reason: Disconnect);
}

/// Counts of what the loop did, for tests and reports.
#[derive(Debug, Default)]
pub struct WsStats {
    pub connects: std::sync::atomic::AtomicU64,
    pub disconnects: std::sync::atomic::AtomicU64,
}

impl WsStats {
    pub fn connects(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Connects, runs the handler, and reconnects until `cancel` fires.
pub async fn run_ws<H: WsHandler>(
    cfg: &WsConfig,
    handler: &mut H,
    stats: &WsStats,
    cancel: &CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let broker = cfg.broker;
    let socket = cfg.socket;
    register_metrics(broker, socket);
    let mut backoff = cfg.backoff();
    let mut failures_logged = 0u32;
    let mut unauthenticated = false;
    while !cancel.is_cancelled() {
        set_state(broker, socket, ConnState::Connecting);
        let prepared = tokio::select! {
            r = handler.prepare() => r,
            _ = cancel.cancelled() => break,
        };
        let outcome = match prepared {
            Ok(req) => match connect(&req, cfg.connect_timeout).await {
                Ok(ws) => {
                    if std::mem::take(&mut unauthenticated) {
                        tracing::info!(%broker, "authenticated again");
                    }
                    stats.connects.fetch_add(1, Relaxed);
                    set_state(broker, socket, ConnState::Connected);
                    tracing::info!(%broker, "websocket connected");
                    let opened = Instant::now();
                    let (reason, had_data) = session(cfg, handler, ws, cancel).await;
                    stats.disconnects.fetch_add(1, Relaxed);
                    handler.on_disconnect(reason);
                    if had_data && opened.elapsed() >= cfg.stable_after {
                        backoff.reset();
                        failures_logged = 0;
                    }
                    Err(reason)
                }
                Err(err) => {
                    if failures_logged < 5 {
                        tracing::warn!(%broker, error = %err, "websocket connect failed");
                    }
                    failures_logged = failures_logged.saturating_add(1);
                    Err(Disconnect::ConnectFailed)
                }
            },
            Err(PrepareError::NotAuthenticated(msg)) => {
                set_state(broker, socket, ConnState::Unauthenticated);
                // Once per episode: a long logout must not flood the log.
                if !std::mem::replace(&mut unauthenticated, true) {
                    tracing::warn!(%broker, reason = %msg, "not authenticated; waiting for the session");
                }
                Ok(cfg.unauthenticated_poll)
            }
            Err(PrepareError::Failed(msg)) => {
                if failures_logged < 5 {
                    tracing::warn!(%broker, error = %msg, "cannot prepare a connection");
                }
                failures_logged = failures_logged.saturating_add(1);
                Err(Disconnect::ConnectFailed)
            }
        };
        if cancel.is_cancelled() {
            break;
        }
        let wait = match outcome {
            Ok(wait) => wait,
            Err(reason) => {
                set_state(broker, socket, ConnState::Disconnected);
                metrics::counter!(WS_RECONNECTS, "broker" => broker.as_str(), "socket" => socket,
                    "reason" => reason.as_str())
                .increment(1);
                backoff.next_backoff().unwrap_or(cfg.backoff_max)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    set_state(broker, socket, ConnState::Disconnected);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid request: {0}")]
    Request(String),
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
}

async fn connect(req: &ConnectRequest, timeout: Duration) -> Result<Socket, ConnectError> {
    let mut request = req
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Request(e.to_string()))?;
    for (name, value) in &req.headers {
        let value = HeaderValue::from_str(value)
            .map_err(|_| ConnectError::Request(format!("header {name}")))?;
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    let connector = Connector::Rustls(tls_config(req.tls));
    let fut =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Runs one connection until it ends. Returns why, and whether data arrived.
async fn session<H: WsHandler>(
    cfg: &WsConfig,
    handler: &mut H,
    ws: Socket,
    cancel: &CancellationToken,
) -> (Disconnect, bool) {
    let broker = cfg.broker;
    let frames = metrics::counter!(WS_FRAMES, "broker" => broker.as_str(), "socket" => cfg.socket);
    let (mut sink, mut stream) = ws.split();
    let mut out = Outbox::default();
    let mut had_data = false;
    handler.on_open(&mut out);
    // Learn at once whether the venue answers probes on this socket.
    let mut probe_sent = handler.probe(&mut out).then(Instant::now);
    let mut probes_answered = false;
    if let Err(reason) = flush(&mut sink, &mut out, cfg.send_timeout).await {
        return (reason, false);
    }
    let start = Instant::now();
    let mut heartbeat =
        tokio::time::interval_at(start + cfg.heartbeat_interval, cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval_at(start + cfg.tick_interval, cfg.tick_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_inbound = start;
    let reason = loop {
        let flow = tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    None => break Disconnect::Closed,
                    Some(Err(err)) => {
                        tracing::warn!(%broker, error = %err, "websocket error");
                        break Disconnect::Error;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        tracing::info!(%broker, ?frame, "server closed the websocket");
                        break Disconnect::Closed;
                    }
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                        Ok(s) => s.into(),
                        Err(_) => {
                            last_inbound = Instant::now();
                            count_malformed(broker);
                            continue;
                        }
                    },
                    // Pings are answered by tungstenite itself; both count as life.
                    Some(Ok(_)) => {
                        last_inbound = Instant::now();
                        probe_sent = None;
                        continue;
                    }
                };
                probe_sent = None;
                frames.increment(1);
                let flow = handler.on_text(text.as_str(), &mut out).await;
                // Time spent handing the frame on (a full pipeline pushing back) is
                // not silence: more frames may be waiting in the socket meanwhile.
                last_inbound = Instant::now();
                flow
            }
            _ = heartbeat.tick() => {
                handler.heartbeat(&mut out);
                Flow::Continue
            }
            _ = tick.tick() => {
                let silent = last_inbound.elapsed();
                if silent > cfg.silence_timeout {
                    tracing::warn!(%broker, silent_ms = silent.as_millis() as u64,
                        "no frame within the silence timeout; replacing the socket");
                    break Disconnect::Silence;
                }
                if probes_answered && silent > cfg.probe_after {
                    match probe_sent {
                        None => probe_sent = handler.probe(&mut out).then(Instant::now),
                        Some(at) if at.elapsed() > cfg.probe_timeout => {
                            tracing::warn!(%broker, silent_ms = silent.as_millis() as u64,
                                "probe unanswered; replacing the socket");
                            break Disconnect::Silence;
                        }
                        Some(_) => {}
                    }
                }
                handler.on_tick(&mut out)
            }
            _ = cancel.cancelled() => {
                let _ = tokio::time::timeout(cfg.send_timeout, sink.send(Message::Close(None))).await;
                break Disconnect::Closed;
            }
        };
        match flow {
            Flow::Continue => {}
            Flow::Data => had_data = true,
            Flow::ProbeReply => probes_answered = true,
            Flow::Reconnect(reason) => break Disconnect::Handler(reason),
        }
        if !out.is_empty() {
            if let Err(reason) = flush(&mut sink, &mut out, cfg.send_timeout).await {
                break reason;
            }
        }
    };
    if !matches!(reason, Disconnect::Closed) {
        tracing::warn!(%broker, reason = reason.as_str(), "websocket disconnected");
    }
    (reason, had_data)
}

async fn flush<S>(sink: &mut S, out: &mut Outbox, timeout: Duration) -> Result<(), Disconnect>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let send = async {
        for text in out.drain() {
            sink.feed(Message::text(text))
                .await
                .map_err(|_| Disconnect::Error)?;
        }
        sink.flush().await.map_err(|_| Disconnect::Error)
    };
    tokio::time::timeout(timeout, send)
        .await
        .unwrap_or(Err(Disconnect::SendTimeout))
}

/// The rustls client configuration for a policy, built once per policy.
pub fn tls_config(policy: TlsPolicy) -> Arc<rustls::ClientConfig> {
    use std::sync::OnceLock;
    static VERIFY: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    static ACCEPT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    match policy {
        TlsPolicy::Verify => VERIFY
            .get_or_init(|| {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default protocol versions")
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            })
            .clone(),
        TlsPolicy::AcceptInvalidCerts => ACCEPT
            .get_or_init(|| {
                let p = provider();
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(p.clone())
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default protocol versions")
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(p)))
                        .with_no_client_auth(),
                )
            })
            .clone(),
    }
}

/// Accepts any server certificate but still checks the handshake signatures, so the
/// connection is encrypted to whoever answered: acceptable for a gateway on localhost.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one data frame on every connection, then drops it.
    async fn flapping_venue() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                        let _ = ws.send(Message::text("{\"data\":1}")).await;
                        let _ = ws.close(None).await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    struct OneShot(String);

    impl WsHandler for OneShot {
        async fn prepare(&mut self) -> Result<ConnectRequest, PrepareError> {
            Ok(ConnectRequest {
                url: self.0.clone(),
                headers: Vec::new(),
                tls: TlsPolicy::Verify,
            })
        }
        fn on_open(&mut self, _out: &mut Outbox) {}
        async fn on_text(&mut self, _text: &str, _out: &mut Outbox) -> Flow {
            Flow::Data
        }
        fn heartbeat(&mut self, _out: &mut Outbox) {}
        fn on_tick(&mut self, _out: &mut Outbox) -> Flow {
            Flow::Continue
        }
        fn on_disconnect(&mut self, _reason: Disconnect) {}
    }

    #[tokio::test]
    async fn a_venue_that_accepts_and_drops_at_once_is_not_hammered() {
        let (addr, accepted) = flapping_venue().await;
        let mut cfg = WsConfig::new(Broker::Binance);
        cfg.backoff_initial = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_secs(2);
        let cancel = CancellationToken::new();
        let stats = WsStats::default();
        let mut handler = OneShot(format!("ws://{addr}/"));
        let run = run_ws(&cfg, &mut handler, &stats, &cancel);
        let _ = tokio::time::timeout(Duration::from_secs(3), run).await;
        // Growing waits from 20 ms (x2 each, jitter 50%) fit about 8 connections in
        // 3 s; resetting after every data frame would make over a hundred.
        let n = accepted.load(std::sync::atomic::Ordering::Relaxed);
        assert!((2..=20).contains(&n), "{n} connections in 3 s");
    }

    #[test]
    fn a_connect_request_debug_shows_no_session_cookie_or_listen_key() {
        let req = ConnectRequest {
            url: "wss://fstream.binance.com/private/ws?listenKey=pqia91ma19a5s61cv".into(),
            headers: vec![(
                "cookie",
                "api={\"session\":\"bb665d0f55b6289d70bc\"}".into(),
            )],
            tls: TlsPolicy::Verify,
        };
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("pqia91") && !shown.contains("bb665d0f"),
            "{shown}"
        );
        assert!(shown.contains("cookie"), "{shown}");
    }
}
