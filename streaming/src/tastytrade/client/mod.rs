//! The Tastytrade streaming client. Five loops share one book:
//!
//! - the access-token keeper (OAuth refresh ahead of the 15-minute expiry),
//! - the quote-token keeper (a fresh DXLink token well before the 24 h expiry; an
//!   open feed re-authorizes on the same socket, so no subscription is dropped),
//! - the positions poller (REST, periodically and after every account-streamer
//!   reconnect, since the streamer replays nothing),
//! - the account streamer (position changes as they happen),
//! - the DXLink feed: Greeks and Quote for every option, Quote for every underlying
//!   and stock, the whole handshake and every subscription replayed per socket.
//!
//! Both sockets run on the shared reconnecting loop ([`crate::ws`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::account_stream::{self, StreamerMessage};
use super::dxlink::{self, DxEvent, EventType, GreeksEvent, QuoteEvent, Sub};
use super::feed_session::{FeedSession, Phase, Step};
use super::rest::{self, Credentials, QuoteToken, Rest, RestError, TtPosition};
use super::symbols::parse_occ;
use super::TtQuote;
use crate::event::{Broker, BrokerEvent, BrokerPayload};
use crate::secret::Secret;
use crate::ws::{
    self, ConnectRequest, Disconnect, Flow, Outbox, PrepareError, TlsPolicy, WsConfig, WsHandler,
    WsStats,
};

use crate::broker_metrics::{self, POSITIONS, REST_ERRORS};
use crate::tasks::TaskGroup;
pub const SUBSCRIPTIONS_SENT: &str = "greekstream_tastytrade_subscriptions_sent_total";
pub const POSITION_UPDATES: &str = "greekstream_tastytrade_position_updates_total";
pub const TOKEN_REFRESHES: &str = "greekstream_tastytrade_token_refreshes_total";
mod account;
mod feed;
mod keepers;
mod state;

use account::*;
use feed::*;
use keepers::*;
use state::*;

const BROKER: Broker = Broker::Tastytrade;
/// The DXLink channel we open for the FEED service (client channels are odd).
const FEED_CHANNEL: u64 = 3;

#[derive(Debug, Clone)]
pub struct TastytradeConfig {
    /// REST base, `https://api.tastyworks.com`.
    pub api_url: String,
    /// Account streamer, `wss://streamer.tastyworks.com`.
    pub account_streamer_url: String,
    pub credentials: Credentials,
    /// Only for a local simulator served over TLS with a self-signed certificate.
    pub accept_invalid_certs: bool,
    pub positions_refresh: Duration,
    /// How long a quote token lives (24 h, per the API docs: the response does not say).
    pub quote_token_ttl: Duration,
    /// A new quote token is fetched once this fraction of its life has passed.
    pub quote_token_renew_at: f64,
    /// The `keepaliveTimeout` we announce; we send KEEPALIVE at half of it.
    pub keepalive_timeout: Duration,
    /// The `acceptKeepaliveTimeout` we ask of the server: it must send something at
    /// least this often, so a silent socket is one that missed it.
    pub accept_keepalive_timeout: Duration,
    pub request_timeout: Duration,
    pub feed: WsConfig,
    pub account: WsConfig,
}

impl TastytradeConfig {
    pub fn new(
        api_url: impl Into<String>,
        account_streamer_url: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        let keepalive_timeout = Duration::from_secs(60);
        let accept_keepalive_timeout = Duration::from_secs(15);
        let mut feed = WsConfig::new(BROKER);
        feed.heartbeat_interval = keepalive_timeout / 2;
        // Longer than the keepalive we asked the server for, so a quiet market is
        // never mistaken for a dead socket; probing finds a dead one much sooner.
        feed.silence_timeout = accept_keepalive_timeout + Duration::from_secs(10);
        let mut account = WsConfig::new(BROKER);
        account.socket = "account";
        account.heartbeat_interval = Duration::from_secs(20);
        // Account notifications are rare: judge this socket by heartbeat acks.
        account.silence_timeout = Duration::from_secs(65);
        Self {
            api_url: api_url.into().trim_end_matches('/').to_owned(),
            account_streamer_url: account_streamer_url.into(),
            credentials,
            accept_invalid_certs: false,
            positions_refresh: Duration::from_secs(60),
            quote_token_ttl: Duration::from_secs(24 * 3600),
            quote_token_renew_at: 0.75,
            keepalive_timeout,
            accept_keepalive_timeout,
            request_timeout: Duration::from_secs(10),
            feed,
            account,
        }
    }

    fn tls(&self) -> TlsPolicy {
        TlsPolicy::accept_invalid(self.accept_invalid_certs)
    }
}

/// Counters a test or a report can read while the client runs.
#[derive(Debug, Default)]
pub struct TastytradeStats {
    pub feed: WsStats,
    pub account: WsStats,
    pub events_sent: AtomicU64,
    pub malformed: AtomicU64,
    pub subscriptions_sent: AtomicU64,
    pub positions: AtomicU64,
    pub position_updates: AtomicU64,
    /// AUTHs sent on an open feed (token renewal or withdrawal).
    pub reauthorizations: AtomicU64,
    pub authenticated: AtomicBool,
    /// Access tokens and quote tokens fetched (shared with the REST client).
    pub rest: Arc<rest::RestStats>,
}

/// The DXLink symbol of a position: the API's own when it gives one, else built
/// from the OCC symbol (options) or the ticker (stocks).
pub fn streamer_symbol(p: &TtPosition) -> Option<String> {
    if let Some(s) = &p.streamer_symbol {
        return Some(s.clone());
    }
    match p.instrument_type.as_str() {
        "Equity Option" => parse_occ(&p.symbol).ok().map(|o| o.to_dxfeed()),
        "Equity" => Some(p.symbol.clone()),
        _ => None,
    }
}

fn is_option(p: &TtPosition) -> bool {
    p.instrument_type.ends_with("Option")
}

struct Shared {
    book: Mutex<Book>,
    market: Mutex<Market>,
    /// The current quote token and a generation number that changes with it.
    quote_token: Mutex<Option<(QuoteToken, u64)>>,
    stats: Arc<TastytradeStats>,
    tx: mpsc::Sender<BrokerEvent>,
    /// Wakes the positions poller (after an account-streamer reconnect).
    refresh_positions: Notify,
}

impl Shared {
    async fn emit(&self, quote: TtQuote) -> bool {
        let event = BrokerEvent {
            broker: BROKER,
            account: quote.position.account.clone(),
            received_at: Utc::now(),
            payload: BrokerPayload::Tastytrade(quote),
        };
        if self.tx.send(event).await.is_err() {
            return false;
        }
        self.stats.events_sent.fetch_add(1, Relaxed);
        true
    }

    fn malformed(&self, what: &str, text: &str, err: &dyn std::fmt::Display) {
        broker_metrics::report_malformed(BROKER, &self.stats.malformed, what, text, err);
    }

    fn set_authenticated(&self, ok: bool) {
        broker_metrics::set_authenticated(BROKER, &self.stats.authenticated, ok);
    }
}

/// Registers the Tastytrade source's metrics at zero.
pub fn register_metrics() {
    ws::register_metrics(BROKER, "market_data");
    ws::register_metrics(BROKER, "account");
    metrics::counter!(REST_ERRORS, "broker" => BROKER.as_str()).increment(0);
    metrics::counter!(SUBSCRIPTIONS_SENT, "broker" => BROKER.as_str()).increment(0);
    metrics::counter!(POSITION_UPDATES, "broker" => BROKER.as_str()).increment(0);
    for t in ["access", "quote"] {
        metrics::counter!(TOKEN_REFRESHES, "token" => t).increment(0);
    }
    metrics::gauge!(POSITIONS, "broker" => BROKER.as_str()).set(0.0);
}

/// Streams until `cancel` fires. Venue errors are retried with backoff, counted and
/// logged, never returned.
pub async fn run_tastytrade(
    cfg: TastytradeConfig,
    tx: mpsc::Sender<BrokerEvent>,
    stats: Arc<TastytradeStats>,
    cancel: CancellationToken,
) -> Result<(), RestError> {
    let mut rest = Rest::new(
        &cfg.api_url,
        cfg.credentials.clone(),
        cfg.accept_invalid_certs,
        cfg.request_timeout,
    )?;
    rest.stats = stats.rest.clone();
    register_metrics();
    let shared = Arc::new(Shared {
        book: Mutex::new(Book::default()),
        market: Mutex::new(Market::default()),
        quote_token: Mutex::new(None),
        stats: stats.clone(),
        tx,
        refresh_positions: Notify::new(),
    });
    // Stopped with this run, however it ends (see `TaskGroup`).
    let mut tasks = TaskGroup::default();
    tasks.spawn(keep_access_token(
        rest.clone(),
        shared.clone(),
        cancel.clone(),
    ));
    tasks.spawn(keep_quote_token(
        rest.clone(),
        cfg.quote_token_ttl.mul_f64(cfg.quote_token_renew_at),
        shared.clone(),
        cancel.clone(),
    ));
    tasks.spawn(poll_positions(
        rest.clone(),
        cfg.positions_refresh,
        shared.clone(),
        cancel.clone(),
    ));
    let mut account = AccountHandler {
        rest: rest.clone(),
        cfg: cfg.clone(),
        shared: shared.clone(),
        token: Secret::default(),
        next_request: 1,
        force_token: false,
    };
    let mut feed = FeedHandler {
        rest,
        cfg: cfg.clone(),
        shared: shared.clone(),
        session: FeedSession::new(FEED_CHANNEL),
        token_generation: 0,
        force_token: false,
        subscribed: BTreeSet::new(),
        book_version: u64::MAX,
        wanted: BTreeSet::new(),
    };
    let account_cancel = cancel.clone();
    let account_stats = stats.clone();
    let account_task = async move {
        ws::run_ws(
            &account.cfg.account.clone(),
            &mut account,
            &account_stats.account,
            &account_cancel,
        )
        .await
    };
    tokio::join!(
        account_task,
        ws::run_ws(&cfg.feed, &mut feed, &stats.feed, &cancel)
    );
    drop(tasks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn pos(account: &str, symbol: &str, kind: &str, und: &str, qty: i64) -> TtPosition {
        TtPosition {
            account: Arc::from(account),
            symbol: symbol.into(),
            instrument_type: kind.into(),
            underlying_symbol: und.into(),
            quantity: Decimal::from(qty),
            multiplier: Decimal::ONE_HUNDRED,
            streamer_symbol: None,
            expires_at: None,
        }
    }

    #[test]
    fn the_book_wants_greeks_for_options_and_quotes_for_underlyings() {
        let mut b = Book::default();
        b.replace_account(
            "A",
            vec![
                pos("A", "SPY   260619C00500000", "Equity Option", "SPY", -2),
                pos("A", "AAPL", "Equity", "AAPL", 100),
                pos("A", "QQQ   260619P00400000", "Equity Option", "QQQ", 0),
            ],
            Instant::now(),
        );
        let wanted: Vec<String> = b
            .wanted
            .iter()
            .map(|(t, s)| format!("{}:{s}", t.as_str()))
            .collect();
        assert_eq!(
            wanted,
            vec![
                "Greeks:.SPY260619C500",
                "Quote:.SPY260619C500",
                "Quote:AAPL",
                "Quote:SPY"
            ]
        );
        let v = b.version;
        b.replace_account(
            "A",
            vec![
                pos("A", "SPY   260619C00500000", "Equity Option", "SPY", -2),
                pos("A", "AAPL", "Equity", "AAPL", 100),
            ],
            Instant::now(),
        );
        assert_eq!(b.version, v, "same book, same version");
        let closed = b.upsert(pos("A", "AAPL", "Equity", "AAPL", 0));
        assert!(closed.quantity.is_zero());
        assert!(!b.wanted.contains(&(EventType::Quote, "AAPL".into())));
        assert_eq!(b.positions.len(), 1);
        b.replace_account(
            "B",
            vec![pos("B", "AAPL", "Equity", "AAPL", 5)],
            Instant::now(),
        );
        assert_eq!(b.positions.len(), 2, "accounts are replaced independently");
    }

    #[test]
    fn a_rest_read_reports_closes_and_quantity_changes_at_their_new_quantity() {
        let mut b = Book::default();
        let spy = "SPY   260619C00500000";
        b.replace_account(
            "A",
            vec![
                pos("A", spy, "Equity Option", "SPY", -2),
                pos("A", "AAPL", "Equity", "AAPL", 100),
            ],
            Instant::now(),
        );
        let changed = b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 50)],
            Instant::now(),
        );
        let mut seen: Vec<(String, Decimal)> = changed
            .iter()
            .map(|p| (p.symbol.clone(), p.quantity))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("AAPL".to_owned(), Decimal::from(50)),
                (spy.to_owned(), Decimal::ZERO)
            ]
        );
        assert!(b
            .replace_account(
                "A",
                vec![pos("A", "AAPL", "Equity", "AAPL", 50)],
                Instant::now()
            )
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rest_read_older_than_a_streamed_change_never_reverts_it() {
        let mut b = Book::default();
        b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 100)],
            Instant::now(),
        );
        // The read starts, the streamer reports a fill, then the read returns what
        // the venue held when it started.
        let read_started = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        b.upsert(pos("A", "AAPL", "Equity", "AAPL", 150));
        b.upsert(pos("A", "MSFT", "Equity", "MSFT", 10));
        let changed = b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 100)],
            read_started,
        );
        assert!(changed.is_empty(), "{changed:?}");
        let qty = |b: &Book, s: &str| {
            b.positions
                .get(&(Arc::from("A"), s.to_owned()))
                .map(|p| p.quantity)
        };
        assert_eq!(qty(&b, "AAPL"), Some(Decimal::from(150)));
        assert_eq!(qty(&b, "MSFT"), Some(Decimal::from(10)));
        // A read that starts after the change is the truth again.
        tokio::time::advance(Duration::from_millis(10)).await;
        let changed = b.replace_account(
            "A",
            vec![pos("A", "AAPL", "Equity", "AAPL", 150)],
            Instant::now(),
        );
        assert_eq!(changed.len(), 1, "MSFT closed");
        assert_eq!(qty(&b, "MSFT"), None);
    }
}
