//! Tastytrade REST: the bodies we read (pure parsing) and the HTTP client — OAuth
//! (refresh token → 15-minute access token, refreshed ahead of expiry), accounts,
//! positions and the DXLink quote token.
//!
//! Every request carries the `User-Agent` the API requires. Tokens travel as
//! [`Secret`]s and never reach a log line or an error message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::json::decimal;
use crate::secret::Secret;

pub const USER_AGENT: &str = concat!("greekstream/", env!("CARGO_PKG_VERSION"));

/// One position, with the sign applied: the API sends an unsigned `quantity` and a
/// separate `quantity-direction`.
#[derive(Debug, Clone, PartialEq)]
pub struct TtPosition {
    pub account: Arc<str>,
    /// OCC for options (`SPY   260619C00500000`), the ticker for equities.
    pub symbol: String,
    pub instrument_type: String,
    pub underlying_symbol: String,
    pub quantity: Decimal,
    pub multiplier: Decimal,
    /// The DXLink symbol, when the API gives one.
    pub streamer_symbol: Option<String>,
    /// The contract's expiry day (futures need it; options carry it in the symbol).
    pub expires_at: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("positions body has no data.items array")]
    NoItems,
    #[error("position row {index}: {what}")]
    BadRow { index: usize, what: &'static str },
}

fn text<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Reads one position object (a REST row, or the `data` of a `CurrentPosition`
/// account-streamer message).
pub fn parse_position(row: &Value) -> Result<TtPosition, &'static str> {
    let obj = row.as_object().ok_or("not an object")?;
    let magnitude = obj.get("quantity").and_then(decimal).ok_or("no quantity")?;
    if magnitude.is_sign_negative() {
        return Err("negative quantity: the API sends it unsigned");
    }
    let quantity = match text(obj, "quantity-direction").ok_or("no quantity-direction")? {
        "Long" => magnitude,
        "Short" => -magnitude,
        "Zero" => Decimal::ZERO,
        _ => return Err("unknown quantity-direction"),
    };
    let instrument_type = text(obj, "instrument-type").ok_or("no instrument-type")?;
    // An option's or a future's multiplier is never guessed: taking 1 for a missing
    // 100 would make every Greek of the position 100 times too small.
    let multiplier = match obj.get("multiplier").and_then(decimal) {
        Some(m) if m > Decimal::ZERO => m,
        Some(_) => return Err("multiplier not positive"),
        None if instrument_type == "Equity" => Decimal::ONE,
        None => return Err("no multiplier (required for options and futures)"),
    };
    Ok(TtPosition {
        account: Arc::from(text(obj, "account-number").ok_or("no account-number")?),
        symbol: text(obj, "symbol").ok_or("no symbol")?.to_owned(),
        instrument_type: instrument_type.to_owned(),
        underlying_symbol: text(obj, "underlying-symbol")
            .ok_or("no underlying-symbol")?
            .to_owned(),
        quantity: quantity.normalize(),
        multiplier: multiplier.normalize(),
        streamer_symbol: text(obj, "streamer-symbol").map(str::to_owned),
        expires_at: text(obj, "expires-at").and_then(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.date_naive())
                .or_else(|| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok())
        }),
    })
}

/// `GET /accounts/{n}/positions`: good rows, and the bad ones as errors beside them.
pub fn parse_positions(
    body: &Value,
) -> Result<(Vec<TtPosition>, Vec<PositionError>), PositionError> {
    let items = body
        .get("data")
        .and_then(|d| d.get("items"))
        .and_then(Value::as_array)
        .ok_or(PositionError::NoItems)?;
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (index, row) in items.iter().enumerate() {
        match parse_position(row) {
            Ok(p) => good.push(p),
            Err(what) => bad.push(PositionError::BadRow { index, what }),
        }
    }
    Ok((good, bad))
}

/// The account numbers in `GET /customers/me/accounts`.
pub fn parse_accounts(body: &Value) -> Option<Vec<String>> {
    let items = body.get("data")?.get("items")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|i| {
                let acct = i.get("account")?;
                if acct.get("is-closed").and_then(Value::as_bool) == Some(true) {
                    return None;
                }
                Some(acct.get("account-number")?.as_str()?.to_owned())
            })
            .collect(),
    )
}

/// The `{"error": ...}` envelope as one line: `code: message`.
pub fn error_text(body: &Value) -> Option<String> {
    let err = body.get("error")?;
    let one = |e: &Value| {
        let code = e
            .get("code")
            .or_else(|| e.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("error");
        let message = e
            .get("message")
            .or_else(|| e.get("domain"))
            .and_then(Value::as_str)
            .unwrap_or("");
        format!("{code}: {message}")
    };
    match err.get("errors").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Some(list.iter().map(one).collect::<Vec<_>>().join("; ")),
        _ => Some(one(err)),
    }
}

/// The DXLink endpoint and the token that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteToken {
    pub token: Secret,
    pub dxlink_url: String,
    pub level: String,
}

pub fn parse_quote_token(body: &Value) -> Option<QuoteToken> {
    let data = body.get("data")?;
    Some(QuoteToken {
        token: Secret::new(data.get("token")?.as_str()?),
        dxlink_url: data.get("dxlink-url")?.as_str()?.to_owned(),
        level: data
            .get("level")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The venue refused our credentials (bad or revoked refresh token).
    #[error("{route}: unauthorized ({message})")]
    Unauthorized { route: String, message: String },
    #[error("{route}: HTTP {status} ({message})")]
    Status {
        route: String,
        status: u16,
        message: String,
    },
    #[error("{route}: {message}")]
    Transport { route: String, message: String },
    #[error("{route}: unexpected body: {message}")]
    Body { route: String, message: String },
}

/// OAuth credentials: the provider's client secret and a user's refresh token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_secret: Secret,
    pub refresh_token: Secret,
}

#[derive(Debug, Default)]
pub struct RestStats {
    pub access_tokens: AtomicU64,
    pub quote_tokens: AtomicU64,
    pub requests: AtomicU64,
}

struct AccessToken {
    token: Secret,
    expires: Instant,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The REST API with a self-renewing access token. Cheap to clone.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: Arc<str>,
    credentials: Arc<Credentials>,
    access: Arc<tokio::sync::Mutex<Option<AccessToken>>>,
    /// Refresh this long before the access token expires.
    refresh_margin: Duration,
    pub stats: Arc<RestStats>,
}

impl Rest {
    pub fn new(
        base: &str,
        credentials: Credentials,
        accept_invalid_certs: bool,
        timeout: Duration,
    ) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(accept_invalid_certs)
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| RestError::Transport {
                route: "client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: Arc::from(base.trim_end_matches('/')),
            credentials: Arc::new(credentials),
            access: Arc::new(tokio::sync::Mutex::new(None)),
            refresh_margin: Duration::from_secs(60),
            stats: Arc::new(RestStats::default()),
        })
    }

    async fn send(
        &self,
        route: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), RestError> {
        self.stats.requests.fetch_add(1, Relaxed);
        // Errors name the route, never the URL or a header: both can carry tokens.
        let transport = |e: reqwest::Error| RestError::Transport {
            route: route.to_owned(),
            message: e.without_url().to_string(),
        };
        let resp = req
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(transport)?;
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, value))
    }

    fn check(route: &str, status: u16, body: Value) -> Result<Value, RestError> {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        metrics::counter!(crate::broker_metrics::REST_ERRORS, "broker" => "tastytrade")
            .increment(1);
        let message = error_text(&body).unwrap_or_default();
        Err(if status == 401 {
            RestError::Unauthorized {
                route: route.to_owned(),
                message,
            }
        } else {
            RestError::Status {
                route: route.to_owned(),
                status,
                message,
            }
        })
    }

    /// `POST /oauth/token` with the refresh token: a new access token.
    async fn refresh(&self) -> Result<AccessToken, RestError> {
        let route = "/oauth/token";
        let body = json!({
            "grant_type": "refresh_token",
            "client_secret": self.credentials.client_secret.expose(),
            "refresh_token": self.credentials.refresh_token.expose(),
        });
        let req = self.http.post(format!("{}{route}", self.base)).json(&body);
        let (status, value) = self.send(route, req).await?;
        let value = Self::check(route, status, value)?;
        let token = value
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| RestError::Body {
                route: route.into(),
                message: "no access_token".into(),
            })?;
        let ttl = value
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(900);
        self.stats.access_tokens.fetch_add(1, Relaxed);
        Ok(AccessToken {
            token: Secret::new(token),
            expires: Instant::now() + Duration::from_secs(ttl),
        })
    }

    /// A valid access token, refreshed when less than the margin is left (or when
    /// `force`, after the venue refused the current one).
    pub async fn access_token(&self, force: bool) -> Result<Secret, RestError> {
        let mut slot = self.access.lock().await;
        let fresh = slot
            .as_ref()
            .filter(|t| !force && t.expires > Instant::now() + self.refresh_margin);
        if let Some(t) = fresh {
            return Ok(t.token.clone());
        }
        let t = self.refresh().await?;
        let token = t.token.clone();
        *slot = Some(t);
        Ok(token)
    }

    /// How long until the access token needs refreshing (zero if there is none).
    pub async fn access_token_due_in(&self) -> Duration {
        let slot = self.access.lock().await;
        slot.as_ref().map_or(Duration::ZERO, |t| {
            t.expires
                .saturating_duration_since(Instant::now())
                .saturating_sub(self.refresh_margin)
        })
    }

    /// An authenticated GET; a 401 refreshes the token once and retries.
    pub async fn get(&self, route: &str) -> Result<Value, RestError> {
        let mut force = false;
        loop {
            let token = self.access_token(force).await?;
            let req = self
                .http
                .get(format!("{}{route}", self.base))
                .bearer_auth(token.expose());
            let (status, value) = self.send(route, req).await?;
            if status == 401 && !force {
                force = true;
                continue;
            }
            return Self::check(route, status, value);
        }
    }

    pub async fn accounts(&self) -> Result<Vec<String>, RestError> {
        let route = "/customers/me/accounts";
        let body = self.get(route).await?;
        parse_accounts(&body).ok_or_else(|| RestError::Body {
            route: route.into(),
            message: "no data.items".into(),
        })
    }

    pub async fn positions(
        &self,
        account: &str,
    ) -> Result<(Vec<TtPosition>, Vec<PositionError>), RestError> {
        let route = format!("/accounts/{account}/positions");
        let body = self.get(&route).await?;
        parse_positions(&body).map_err(|e| RestError::Body {
            route,
            message: e.to_string(),
        })
    }

    pub async fn quote_token(&self) -> Result<QuoteToken, RestError> {
        let route = "/api-quote-tokens";
        let body = self.get(route).await?;
        let token = parse_quote_token(&body).ok_or_else(|| RestError::Body {
            route: route.into(),
            message: "no data.token / data.dxlink-url".into(),
        })?;
        self.stats.quote_tokens.fetch_add(1, Relaxed);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_row_is_short_two() {
        let body: Value =
            serde_json::from_str(include_str!("../../testdata/tastytrade/positions.json")).unwrap();
        let (good, bad) = parse_positions(&body).unwrap();
        assert_eq!(good.len(), 3);
        assert_eq!(good[0].quantity, Decimal::from(-2));
        assert_eq!(good[0].multiplier, Decimal::ONE_HUNDRED);
        assert_eq!(good[0].streamer_symbol.as_deref(), Some(".SPY260619C500"));
        assert_eq!(
            good[1].quantity,
            Decimal::from(100),
            "Long, quantity as a number"
        );
        assert_eq!(good[2].quantity, Decimal::ZERO);
        assert_eq!(
            bad,
            vec![
                PositionError::BadRow {
                    index: 3,
                    what: "no quantity-direction"
                },
                PositionError::BadRow {
                    index: 4,
                    what: "negative quantity: the API sends it unsigned"
                },
            ]
        );
        assert_eq!(parse_positions(&Value::Null), Err(PositionError::NoItems));
        assert_eq!(good[0].expires_at, NaiveDate::from_ymd_opt(2026, 6, 19));
    }

    #[test]
    fn an_option_without_a_multiplier_is_refused_never_taken_as_one() {
        let row = |kind: &str, multiplier: Option<&str>| {
            let mut v = json!({"account-number": "5WT1", "symbol": "X", "instrument-type": kind,
                "underlying-symbol": "SPY", "quantity": "2", "quantity-direction": "Long"});
            if let Some(m) = multiplier {
                v["multiplier"] = json!(m);
            }
            parse_position(&v)
        };
        assert!(row("Equity Option", None).is_err());
        assert!(row("Future", None).is_err());
        assert!(row("Equity Option", Some("0")).is_err());
        assert_eq!(
            row("Equity Option", Some("100")).unwrap().multiplier,
            Decimal::ONE_HUNDRED
        );
        assert_eq!(row("Equity", None).unwrap().multiplier, Decimal::ONE);
    }

    #[test]
    fn accounts_quote_tokens_and_error_envelopes() {
        let body = json!({"data": {"items": [
            {"account": {"account-number": "5WT1", "is-closed": false}, "authority-level": "owner"},
            {"account": {"account-number": "5WT2", "is-closed": true}, "authority-level": "owner"},
            {"authority-level": "owner"}
        ]}});
        assert_eq!(parse_accounts(&body), Some(vec!["5WT1".to_owned()]));
        let body =
            json!({"data": {"token": "abc", "dxlink-url": "wss://x/realtime", "level": "api"}});
        let q = parse_quote_token(&body).unwrap();
        assert_eq!(q.dxlink_url, "wss://x/realtime");
        assert!(!format!("{q:?}").contains("abc"), "the token never prints");
        assert_eq!(
            error_text(&json!({"error": {"code": "invalid_grant", "message": "expired"}})),
            Some("invalid_grant: expired".into())
        );
        assert_eq!(
            error_text(&json!({"error": {"errors": [{"domain": "d", "reason": "r"}]}})),
            Some("r: d".into())
        );
        assert_eq!(error_text(&json!({"data": {}})), None);
    }
}
