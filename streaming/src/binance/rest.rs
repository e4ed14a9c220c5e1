//! The signed Binance REST client.
//!
//! - SIGNED calls carry `timestamp` (our clock plus the measured server offset) and
//!   `recvWindow`, and a hex HMAC-SHA256 `signature` as the last parameter; the API
//!   key travels in `X-MBX-APIKEY`. All parameters go in the query string (valid for
//!   every method), so the signed bytes are exactly the bytes sent.
//! - Every response's `X-MBX-USED-WEIGHT-1M` is read and exported.
//! - 429 and 418 stop all requests until `Retry-After` or the ban's end; a request
//!   made meanwhile fails at once without reaching the venue.
//! - A `-1021` (timestamp outside recvWindow) re-measures the offset and retries once.
//! - Errors keep Binance's `code` and `msg`. Keys never reach a log or an error.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::sign::sign;
use super::wire::{
    self, AccountSummary, DepthSnapshot, OptionMark, OptionPosition, PositionRisk, SymbolInfo,
    WireError,
};
use crate::secret::Secret;

pub const USED_WEIGHT: &str = "greekstream_binance_used_weight_1m";
pub const TIME_OFFSET: &str = "greekstream_binance_time_offset_ms";
pub const RATE_LIMITED: &str = "greekstream_binance_rate_limited_total";
pub const RECV_WINDOW_MS: u64 = 5000;

#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Keys {
    pub api_key: Secret,
    pub secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("HTTP {status}: code {code}: {msg}")]
    Api { status: u16, code: i64, msg: String },
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// Rate limited (429) or banned (418): no request is sent until `retry_in` passes.
    #[error("requests paused for {retry_in:?} after HTTP {status}")]
    Paused { status: u16, retry_in: Duration },
    /// The request may have reached the venue (a timeout, a connection broken after
    /// the write): for an order, its outcome is unknown.
    #[error("transport: {0}")]
    Transport(String),
    /// No connection was made: the request never left.
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("unexpected body: {0}")]
    Body(#[from] WireError),
}

impl RestError {
    pub fn code(&self) -> Option<i64> {
        match self {
            RestError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The API key or signature was refused (or the listen key is unknown).
    pub fn is_auth(&self) -> bool {
        matches!(self, RestError::Api { status: 401, .. })
            || matches!(self.code(), Some(-2014 | -2015 | -1022))
    }
}

/// Counters a test or a report can read.
#[derive(Debug, Default)]
pub struct RestStats {
    pub requests: AtomicU64,
    pub used_weight: AtomicU64,
    /// The venue's new-order counts in its current 10 s and 1 min windows, as of
    /// `order_count_at_ms` (our clock), from the last reply that carried them.
    pub order_count_10s: AtomicU64,
    pub order_count_1m: AtomicU64,
    pub order_count_at_ms: AtomicI64,
    pub time_offset_ms: AtomicI64,
    pub rate_limited: AtomicU64,
    pub banned: AtomicU64,
    /// Requests refused locally because a pause was in force.
    pub held_back: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: Arc<str>,
    keys: Keys,
    paused_until: Arc<Mutex<Option<(Instant, u16)>>>,
    pub stats: Arc<RestStats>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Appends `k=v` pairs, percent-encoding values.
fn encode(params: &[(&str, String)]) -> String {
    let mut s = String::new();
    for (k, v) in params {
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        for b in v.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    s.push(b as char)
                }
                _ => s.push_str(&format!("%{b:02X}")),
            }
        }
    }
    s
}

/// How long a 429 or 418 stops requests: `Retry-After`, else the ban's end from the
/// message, else until the weight window turns over.
fn pause_for(status: u16, retry_after: Option<&str>, msg: &str) -> Duration {
    if let Some(secs) = retry_after.and_then(|s| s.trim().parse::<u64>().ok()) {
        return Duration::from_secs(secs.max(1));
    }
    if status == 418 {
        if let Some(until) = wire::banned_until(msg) {
            return Duration::from_millis((until - now_ms()).max(1000) as u64);
        }
        return Duration::from_secs(120);
    }
    Duration::from_millis(60_000 - (now_ms().rem_euclid(60_000)) as u64 + 100)
}

/// The API a path belongs to, as a bounded metric label.
fn api_of(path: &str) -> &'static str {
    match path.trim_start_matches('/').split('/').next() {
        Some("eapi") => "eapi",
        Some("fapi") => "fapi",
        _ => "other",
    }
}

impl Rest {
    pub fn new(base: &str, keys: Keys, timeout: Duration) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("greekstream/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').into(),
            keys,
            paused_until: Arc::new(Mutex::new(None)),
            stats: Arc::new(RestStats::default()),
        })
    }

    /// A client of another Binance API host (the options API, `eapi`) with the same
    /// keys and clock offset and its own rate-limit pause: its limits are separate.
    pub fn sibling(&self, base: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: base.trim_end_matches('/').into(),
            keys: self.keys.clone(),
            paused_until: Arc::new(Mutex::new(None)),
            stats: self.stats.clone(),
        }
    }

    /// The remaining pause, if requests are stopped.
    pub fn paused_for(&self) -> Option<Duration> {
        let slot = self.paused_until.lock().expect("pause lock");
        slot.and_then(|(until, _)| until.checked_duration_since(Instant::now()))
    }

    fn pause(&self, status: u16, wait: Duration) {
        let mut slot = self.paused_until.lock().expect("pause lock");
        let until = Instant::now() + wait;
        if slot.is_none_or(|(u, _)| u < until) {
            *slot = Some((until, status));
        }
    }

    /// One request. `signed` adds timestamp, recvWindow and signature.
    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        signed: bool,
        with_key: bool,
    ) -> Result<String, RestError> {
        if let Some(retry_in) = self.paused_for() {
            self.stats.held_back.fetch_add(1, Relaxed);
            let status = self
                .paused_until
                .lock()
                .expect("pause lock")
                .map_or(429, |p| p.1);
            return Err(RestError::Paused { status, retry_in });
        }
        let mut query = encode(params);
        if signed {
            let ts = now_ms() + self.stats.time_offset_ms.load(Relaxed);
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("recvWindow={RECV_WINDOW_MS}&timestamp={ts}"));
            let sig = sign(self.keys.secret.expose().as_bytes(), query.as_bytes());
            query.push_str("&signature=");
            query.push_str(&sig);
        }
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let mut req = self.http.request(method, url);
        if with_key || signed {
            req = req.header("X-MBX-APIKEY", self.keys.api_key.expose());
        }
        self.stats.requests.fetch_add(1, Relaxed);
        let resp = req.send().await.map_err(|e| {
            self.stats.errors.fetch_add(1, Relaxed);
            if e.is_connect() {
                RestError::Connect(e.without_url().to_string())
            } else {
                RestError::Transport(e.without_url().to_string())
            }
        })?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(w) = header("x-mbx-used-weight-1m").and_then(|w| w.parse::<u64>().ok()) {
            self.stats.used_weight.store(w, Relaxed);
            metrics::gauge!(USED_WEIGHT, "api" => api_of(path)).set(w as f64);
        }
        if let Some(c) = header("x-mbx-order-count-10s").and_then(|c| c.parse::<u64>().ok()) {
            self.stats.order_count_10s.store(c, Relaxed);
            if let Some(m) = header("x-mbx-order-count-1m").and_then(|c| c.parse::<u64>().ok()) {
                self.stats.order_count_1m.store(m, Relaxed);
            }
            self.stats.order_count_at_ms.store(now_ms(), Relaxed);
        }
        let retry_after = header("retry-after");
        let body = resp
            .text()
            .await
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        if status.is_success() {
            return Ok(body);
        }
        self.stats.errors.fetch_add(1, Relaxed);
        let err = wire::parse_error(&body);
        if status == StatusCode::TOO_MANY_REQUESTS || status.as_u16() == 418 {
            let code = status.as_u16();
            let wait = pause_for(
                code,
                retry_after.as_deref(),
                err.as_ref().map_or("", |e| &e.msg),
            );
            if code == 418 {
                self.stats.banned.fetch_add(1, Relaxed);
            } else {
                self.stats.rate_limited.fetch_add(1, Relaxed);
            }
            metrics::counter!(RATE_LIMITED, "status" => if code == 418 { "418" } else { "429" })
                .increment(1);
            tracing::warn!(
                status = code,
                pause_ms = wait.as_millis() as u64,
                "Binance rate limit: requests stop until the pause ends"
            );
            self.pause(code, wait);
            return Err(RestError::Paused {
                status: code,
                retry_in: wait,
            });
        }
        Err(match err {
            Some(e) => RestError::Api {
                status: status.as_u16(),
                code: e.code,
                msg: e.msg,
            },
            None => RestError::Http {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            },
        })
    }

    /// A SIGNED call; a `-1021` re-measures the clock offset and retries once.
    pub async fn signed(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<String, RestError> {
        match self.send(method.clone(), path, params, true, true).await {
            Err(e) if e.code() == Some(-1021) => {
                self.sync_time().await?;
                self.send(method, path, params, true, true).await
            }
            other => other,
        }
    }

    pub async fn public(&self, path: &str, params: &[(&str, String)]) -> Result<String, RestError> {
        self.send(Method::GET, path, params, false, false).await
    }

    /// Measures `serverTime − local time` (taking the request's midpoint) and keeps it.
    pub async fn sync_time(&self) -> Result<i64, RestError> {
        let sent = now_ms();
        let body = self.public("/fapi/v1/time", &[]).await?;
        let received = now_ms();
        let server = wire::parse_server_time(&body)?;
        let offset = server - (sent + received) / 2;
        self.stats.time_offset_ms.store(offset, Relaxed);
        metrics::gauge!(TIME_OFFSET).set(offset as f64);
        Ok(offset)
    }

    pub async fn exchange_info(&self) -> Result<Vec<SymbolInfo>, RestError> {
        Ok(wire::parse_exchange_info(
            &self.public("/fapi/v1/exchangeInfo", &[]).await?,
        )?)
    }

    /// [`Rest::exchange_info`] and the venue's new-order limits, from one request.
    pub async fn exchange_info_and_order_limits(
        &self,
    ) -> Result<(Vec<SymbolInfo>, Vec<(u64, u64)>), RestError> {
        let body = self.public("/fapi/v1/exchangeInfo", &[]).await?;
        Ok((
            wire::parse_exchange_info(&body)?,
            wire::parse_order_limits(&body)?,
        ))
    }

    pub async fn depth(&self, symbol: &str, limit: u32) -> Result<DepthSnapshot, RestError> {
        let body = self
            .public(
                "/fapi/v1/depth",
                &[("symbol", symbol.to_owned()), ("limit", limit.to_string())],
            )
            .await?;
        Ok(wire::parse_depth_snapshot(&body)?)
    }

    /// Held positions (`/fapi/v3/positionRisk`), with the rows that did not parse.
    pub async fn position_risk(&self) -> Result<(Vec<PositionRisk>, Vec<WireError>), RestError> {
        let body = self
            .signed(Method::GET, "/fapi/v3/positionRisk", &[])
            .await?;
        Ok(wire::parse_position_risk(&body)?)
    }

    /// [`Rest::position_risk`] of one symbol (the venue answers only its rows).
    pub async fn position_risk_of(
        &self,
        symbol: &str,
    ) -> Result<(Vec<PositionRisk>, Vec<WireError>), RestError> {
        let body = self
            .signed(
                Method::GET,
                "/fapi/v3/positionRisk",
                &[("symbol", symbol.to_owned())],
            )
            .await?;
        let (mut rows, errors) = wire::parse_position_risk(&body)?;
        rows.retain(|r| r.symbol == symbol);
        Ok((rows, errors))
    }

    /// The margin account's totals (`/fapi/v3/account`).
    pub async fn account(&self) -> Result<AccountSummary, RestError> {
        let body = self.signed(Method::GET, "/fapi/v3/account", &[]).await?;
        Ok(wire::parse_account(&body)?)
    }

    /// Held option positions (`/eapi/v1/position`, on the options host).
    pub async fn option_positions(
        &self,
    ) -> Result<(Vec<OptionPosition>, Vec<WireError>), RestError> {
        let body = self.signed(Method::GET, "/eapi/v1/position", &[]).await?;
        Ok(wire::parse_option_positions(&body)?)
    }

    /// Each option's contract unit (`/eapi/v1/exchangeInfo`, on the options host).
    pub async fn option_units(
        &self,
    ) -> Result<std::collections::HashMap<String, rust_decimal::Decimal>, RestError> {
        let body = self.public("/eapi/v1/exchangeInfo", &[]).await?;
        Ok(wire::parse_option_units(&body)?)
    }

    /// Option marks with IV and Greeks (`/eapi/v1/mark`, on the options host).
    pub async fn option_marks(&self) -> Result<Vec<OptionMark>, RestError> {
        let body = self.public("/eapi/v1/mark", &[]).await?;
        Ok(wire::parse_option_marks(&body, now_ms())?)
    }

    pub async fn create_listen_key(&self) -> Result<Secret, RestError> {
        let body = self
            .send(Method::POST, "/fapi/v1/listenKey", &[], false, true)
            .await?;
        Ok(Secret::new(wire::parse_listen_key(&body)?))
    }

    pub async fn keepalive_listen_key(&self) -> Result<(), RestError> {
        self.send(Method::PUT, "/fapi/v1/listenKey", &[], false, true)
            .await
            .map(drop)
    }

    pub async fn delete_listen_key(&self) -> Result<(), RestError> {
        self.send(Method::DELETE, "/fapi/v1/listenKey", &[], false, true)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_escapes_everything_but_unreserved() {
        assert_eq!(
            encode(&[("symbol", "BTCUSDT".into()), ("ids", "[1,2]".into())]),
            "symbol=BTCUSDT&ids=%5B1%2C2%5D"
        );
        assert_eq!(encode(&[]), "");
    }

    #[test]
    fn pauses_follow_retry_after_then_the_ban_then_the_minute() {
        assert_eq!(pause_for(429, Some("7"), ""), Duration::from_secs(7));
        let until = now_ms() + 30_000;
        let msg = format!(
            "Way too many requests; IP(1.2.3.4) banned until {until}. Please use the websocket"
        );
        let ban = pause_for(418, None, &msg);
        assert!(
            ban > Duration::from_secs(28) && ban <= Duration::from_secs(30),
            "{ban:?}"
        );
        let minute = pause_for(429, None, "");
        assert!(minute <= Duration::from_millis(60_100), "{minute:?}");
    }

    #[test]
    fn errors_never_show_keys() {
        let keys = Keys {
            api_key: Secret::new("KEY123"),
            secret: Secret::new("SECRET456"),
        };
        let rest = Rest::new("http://127.0.0.1:1", keys, Duration::from_secs(1)).unwrap();
        let shown = format!("{rest:?}");
        assert!(
            !shown.contains("KEY123") && !shown.contains("SECRET456"),
            "{shown}"
        );
    }
}
