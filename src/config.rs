//! Typed configuration from the environment (and `.env`), validated at start-up.
//! Every variable is listed in `.env.example` and `docs/configuration.md`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use database::partitions::PartitionConfig;
use database::{FlushPolicy, SessionLimits, WriterConfig};
use processor::model_greeks::ModelSettings;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// A URL whose password must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (user info or query parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        streaming::secret::redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone)]
pub struct SyntheticSettings {
    pub enabled: bool,
    /// `/health` reports the source once it has sent nothing for this long.
    pub silence: Duration,
    /// Events per second.
    pub rate: f64,
    pub seed: u64,
    pub accounts: usize,
}

/// IBKR Client Portal. With no gateway URL the service streams from the built-in
/// gateway simulator, so it works out of the box.
#[derive(Debug, Clone)]
pub struct IbkrSettings {
    pub enabled: bool,
    /// `/health` reports the source once it has sent nothing for this long.
    pub silence: Duration,
    /// `https://localhost:5000` for a local gateway. The URL can carry nothing
    /// secret today, but it is kept redacted like every other URL.
    pub gateway_url: Option<SecretUrl>,
    pub accept_invalid_certs: bool,
    pub sim_seed: u64,
    pub positions_refresh: Duration,
}

/// Tastytrade. With no OAuth credentials the service streams from the built-in
/// simulator; with both the client secret and the refresh token, from `api_url`.
#[derive(Debug, Clone)]
pub struct TastytradeSettings {
    pub enabled: bool,
    /// `/health` reports the source once it has sent nothing for this long.
    pub silence: Duration,
    pub credentials: Option<streaming::tastytrade::rest::Credentials>,
    pub api_url: SecretUrl,
    pub streamer_url: SecretUrl,
    pub accept_invalid_certs: bool,
    pub sim_seed: u64,
    pub positions_refresh: Duration,
}

/// Binance USDⓈ-M futures. With no API key and secret the service streams from the
/// built-in simulator; with both, from `rest_url` / `ws_url`.
#[derive(Debug, Clone)]
pub struct BinanceSettings {
    pub enabled: bool,
    /// `/health` reports the source once it has sent nothing for this long.
    pub silence: Duration,
    pub keys: Option<streaming::binance::rest::Keys>,
    pub rest_url: SecretUrl,
    pub ws_url: SecretUrl,
    /// Read option positions (eapi) as well as futures.
    pub options: bool,
    pub options_rest_url: SecretUrl,
    /// The account label rows carry (the API has no account number).
    pub account: String,
    /// Symbols streamed (and cached in Redis) besides those held.
    pub symbols: Vec<String>,
    pub accept_invalid_certs: bool,
    pub sim_seed: u64,
    pub positions_refresh: Duration,
    /// Redis price cache (`pms:price:SYMBOL`); off when false.
    pub price_cache: bool,
    pub price_ttl: Duration,
    pub redis_prefix: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Updates a position-stream subscriber may fall behind before it resyncs.
    pub position_stream_capacity: usize,
    /// Publish position updates to Redis `<prefix>greeks:position_update`.
    pub position_events: bool,
    /// Run the trading engine's risk loop: value every sub-account as marks move and
    /// publish `pnl_update`, `margin_update`, `margin_warning` and `<prefix>risk:{id}`.
    pub risk_loop: bool,
    /// Run the order executor (placing, booking fills, reconciling) on the Binance
    /// account, when the Binance source runs.
    pub engine: bool,
    /// Positions on the shared exchange account that belong to no sub-account
    /// (`GS_HOUSE_POSITIONS=BTCUSDT:0.5,ETHUSDT:-4`); on the built-in simulator, its
    /// own starting positions.
    pub house_positions: std::collections::HashMap<String, rust_decimal::Decimal>,
    /// The local model's rate, and its cross-check of venue Greeks.
    pub model: ModelSettings,
    pub database_url: SecretUrl,
    pub redis_url: SecretUrl,
    /// The bearer token the gateway sends on `POST /v1/cmd/{type}`
    /// (`GS_CONTROL_TOKEN`); without it, commands over HTTP are off.
    pub control_token: Option<streaming::secret::Secret>,
    /// The gateway's JWT secret (`GS_JWT_SECRET`, HS256): users' own tokens are then
    /// accepted on the control API, their identity taken from the token.
    pub jwt_secret: Option<streaming::secret::Secret>,
    /// Names this engine's in-flight command list (`GS_ENGINE_ID`, default `main`):
    /// engines sharing one Redis need different names.
    pub engine_id: String,
    /// Where orders are made durable before they are sent (`GS_ORDER_JOURNAL_DIR`,
    /// default `var/journal`): local disk, kept across restarts, shared by the
    /// service and `greekstream order` runs on the same database.
    pub order_journal_dir: std::path::PathBuf,
    /// `GS_ORDER_JOURNAL_SYNC`: `always` (default; each order is on disk before it
    /// is sent) or `background` (in the kernel before it is sent, on disk a flush
    /// later): see `engine::journal::JournalSync`.
    pub order_journal_sync: engine::journal::JournalSync,
    pub metrics_addr: SocketAddr,
    pub control_addr: SocketAddr,
    pub channel_capacity: usize,
    pub writer: WriterConfig,
    /// Server-side limits on the writer's sessions.
    pub db_limits: SessionLimits,
    /// `/health` reports the writer once every attempt has failed for this long.
    pub health_writer_window: Duration,
    pub partitions: PartitionConfig,
    pub synthetic: SyntheticSettings,
    pub ibkr: IbkrSettings,
    pub tastytrade: TastytradeSettings,
    pub binance: BinanceSettings,
}

/// `SYMBOL:quantity` pairs, comma-separated; quantities signed (short negative).
fn parse_house(
    v: &str,
) -> Result<std::collections::HashMap<String, rust_decimal::Decimal>, String> {
    v.split(',')
        .map(|pair| {
            let (symbol, q) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{pair:?} is not SYMBOL:quantity"))?;
            let symbol = symbol.trim().to_ascii_uppercase();
            if symbol.is_empty()
                || !symbol
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!("{symbol:?} is not a symbol"));
            }
            let q = q
                .trim()
                .parse()
                .map_err(|_| format!("{q:?} is not a quantity"))?;
            Ok((symbol, q))
        })
        .collect()
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/greekstream";

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn raw(&self, var: &'static str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError {
                var,
                message: format!("cannot parse {v:?}: {e}"),
            }),
        }
    }

    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default + fmt::Display,
        T::Err: fmt::Display,
    {
        let v = self.parse(var, default)?;
        if v <= T::default() {
            return Err(ConfigError {
                var,
                message: format!("must be positive, got {v}"),
            });
        }
        Ok(v)
    }

    fn millis(&self, var: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.positive(var, default_ms)?))
    }

    fn url(
        &self,
        var: &'static str,
        default: &str,
        schemes: &[&str],
    ) -> Result<SecretUrl, ConfigError> {
        let v = self.raw(var).unwrap_or_else(|| default.to_owned());
        if !schemes.iter().any(|s| v.starts_with(&format!("{s}://"))) {
            return Err(ConfigError {
                var,
                message: format!(
                    "expected a {} URL, got {}",
                    schemes.join(" or "),
                    SecretUrl(v.clone()).redacted()
                ),
            });
        }
        Ok(SecretUrl(v))
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        let policy = FlushPolicy {
            batch_size: env.positive("GS_WRITER_BATCH_SIZE", 50)?,
            max_wait: env.millis("GS_WRITER_MAX_WAIT_MS", 1000)?,
            eager: env.parse("GS_WRITER_EAGER", true)?,
            max_batch_rows: env.positive("GS_WRITER_MAX_BATCH_ROWS", 20_000)?,
            max_in_flight: env.positive("GS_WRITER_CONNECTIONS", 2)?,
        };
        let writer = WriterConfig {
            policy,
            max_buffer: env.positive("GS_WRITER_MAX_BUFFER", 100_000)?,
            positions_interval: env.millis("GS_POSITIONS_INTERVAL_MS", 1000)?,
            shutdown_grace: env.millis("GS_SHUTDOWN_GRACE_MS", 30_000)?,
            flush_timeout: env.millis("GS_WRITER_FLUSH_TIMEOUT_MS", 15_000)?,
            ..WriterConfig::default()
        };
        let db_limits = SessionLimits {
            statement: env.millis("GS_DB_STATEMENT_TIMEOUT_MS", 15_000)?,
            lock: env.millis("GS_DB_LOCK_TIMEOUT_MS", 5_000)?,
            idle_in_transaction: env.millis("GS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 15_000)?,
            ..SessionLimits::default()
        };
        let partitions = PartitionConfig {
            months_back: env.parse("GS_PARTITION_MONTHS_BACK", 1)?,
            months_ahead: env.parse("GS_PARTITION_MONTHS_AHEAD", 3)?,
            retention_months: match env.parse("GS_RETENTION_MONTHS", 0)? {
                0 => None,
                n if n < 0 => {
                    return Err(ConfigError {
                        var: "GS_RETENTION_MONTHS",
                        message: "must be 0 (keep everything) or a number of months".into(),
                    })
                }
                n => Some(n),
            },
            lock_timeout: env.millis("GS_PARTITION_LOCK_TIMEOUT_MS", 200)?,
            ..PartitionConfig::default()
        };
        if partitions.months_back < 0 || partitions.months_ahead < 0 {
            return Err(ConfigError {
                var: "GS_PARTITION_MONTHS_AHEAD",
                message: "months must not be negative".into(),
            });
        }
        let model_rate: f64 = env.parse("GS_MODEL_RATE", 0.04)?;
        if !model_rate.is_finite() || model_rate.abs() > 1.0 {
            return Err(ConfigError {
                var: "GS_MODEL_RATE",
                message: "must be a rate as a fraction, e.g. 0.04".into(),
            });
        }
        let cross_check_delta: f64 = env.parse("GS_MODEL_CROSS_CHECK_DELTA", 0.1)?;
        if !(0.0..=2.0).contains(&cross_check_delta) {
            return Err(ConfigError {
                var: "GS_MODEL_CROSS_CHECK_DELTA",
                message: "must be a delta difference from 0 (off) to 2".into(),
            });
        }
        Self {
            position_stream_capacity: env.positive("GS_POSITION_STREAM_CAPACITY", 4096)?,
            position_events: env.parse("GS_POSITION_EVENTS", true)?,
            risk_loop: env.parse("GS_RISK_LOOP", true)?,
            engine: env.parse("GS_ENGINE", true)?,
            house_positions: match env.raw("GS_HOUSE_POSITIONS") {
                None => Default::default(),
                Some(v) => parse_house(&v).map_err(|message| ConfigError {
                    var: "GS_HOUSE_POSITIONS",
                    message,
                })?,
            },
            model: ModelSettings {
                rate: model_rate,
                cross_check_delta,
            },
            database_url: env.url(
                "DATABASE_URL",
                DEFAULT_DATABASE_URL,
                &["postgres", "postgresql"],
            )?,
            redis_url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            control_token: env
                .raw("GS_CONTROL_TOKEN")
                .filter(|t| !t.is_empty())
                .map(streaming::secret::Secret::new),
            engine_id: env
                .raw("GS_ENGINE_ID")
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "main".into()),
            order_journal_dir: env
                .raw("GS_ORDER_JOURNAL_DIR")
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| engine::execution::DEFAULT_JOURNAL_DIR.into())
                .into(),
            order_journal_sync: env.parse("GS_ORDER_JOURNAL_SYNC", Default::default())?,
            jwt_secret: env
                .raw("GS_JWT_SECRET")
                .filter(|t| !t.is_empty())
                .map(streaming::secret::Secret::new),
            metrics_addr: env.parse("METRICS_ADDR", "127.0.0.1:9464".parse().expect("literal"))?,
            control_addr: env.parse("CONTROL_ADDR", "127.0.0.1:8888".parse().expect("literal"))?,
            channel_capacity: env.positive("GS_CHANNEL_CAPACITY", 10_000)?,
            writer,
            db_limits,
            health_writer_window: env.millis("GS_HEALTH_WRITER_WINDOW_MS", 10_000)?,
            partitions,
            synthetic: SyntheticSettings {
                enabled: false,
                silence: env.millis("GS_SYNTHETIC_SILENCE_MS", 60_000)?,
                rate: env.positive("GS_SYNTHETIC_RATE", 50.0)?,
                seed: env.parse("GS_SYNTHETIC_SEED", 1)?,
                accounts: env.positive("GS_SYNTHETIC_ACCOUNTS", 4)?,
            },
            ibkr: IbkrSettings {
                enabled: false,
                silence: env.millis("GS_IBKR_SILENCE_MS", 60_000)?,
                gateway_url: match env.raw("GS_IBKR_GATEWAY_URL") {
                    None => None,
                    Some(_) => Some(env.url("GS_IBKR_GATEWAY_URL", "", &["https", "http"])?),
                },
                accept_invalid_certs: env.parse("GS_IBKR_ACCEPT_INVALID_CERTS", false)?,
                sim_seed: env.parse("GS_IBKR_SIM_SEED", 7)?,
                positions_refresh: env.millis("GS_IBKR_POSITIONS_REFRESH_MS", 60_000)?,
            },
            tastytrade: TastytradeSettings {
                enabled: false,
                silence: env.millis("GS_TASTYTRADE_SILENCE_MS", 60_000)?,
                credentials: tastytrade_credentials(&env)?,
                api_url: env.url(
                    "GS_TASTYTRADE_API_URL",
                    "https://api.tastyworks.com",
                    &["https", "http"],
                )?,
                streamer_url: env.url(
                    "GS_TASTYTRADE_STREAMER_URL",
                    "wss://streamer.tastyworks.com",
                    &["wss", "ws"],
                )?,
                accept_invalid_certs: env.parse("GS_TASTYTRADE_ACCEPT_INVALID_CERTS", false)?,
                sim_seed: env.parse("GS_TASTYTRADE_SIM_SEED", 11)?,
                positions_refresh: env.millis("GS_TASTYTRADE_POSITIONS_REFRESH_MS", 60_000)?,
            },
            binance: BinanceSettings {
                enabled: false,
                silence: env.millis("GS_BINANCE_SILENCE_MS", 60_000)?,
                keys: binance_keys(&env)?,
                rest_url: env.url(
                    "GS_BINANCE_REST_URL",
                    "https://fapi.binance.com",
                    &["https", "http"],
                )?,
                ws_url: env.url(
                    "GS_BINANCE_WS_URL",
                    "wss://fstream.binance.com",
                    &["wss", "ws"],
                )?,
                options: env.parse("GS_BINANCE_OPTIONS", true)?,
                options_rest_url: env.url(
                    "GS_BINANCE_OPTIONS_REST_URL",
                    "https://eapi.binance.com",
                    &["https", "http"],
                )?,
                account: env
                    .raw("GS_BINANCE_ACCOUNT")
                    .unwrap_or_else(|| "binance".into()),
                symbols: binance_symbols(&env)?,
                accept_invalid_certs: env.parse("GS_BINANCE_ACCEPT_INVALID_CERTS", false)?,
                sim_seed: env.parse("GS_BINANCE_SIM_SEED", 17)?,
                positions_refresh: env.millis("GS_BINANCE_POSITIONS_REFRESH_MS", 60_000)?,
                price_cache: env.parse("GS_PRICE_CACHE", true)?,
                price_ttl: env.millis("GS_PRICE_TTL_MS", 60_000)?,
                redis_prefix: env.raw("GS_REDIS_PREFIX").unwrap_or_else(|| "pms:".into()),
            },
        }
        .with_sources(&env)
    }

    /// Which sources run. A venue configured (IBKR gateway URL, Tastytrade OAuth
    /// values, Binance keys) means real data only: a source left unconfigured stays
    /// off, and so does the synthetic portfolio, unless asked for explicitly
    /// (`GS_<SOURCE>=sim`, `GS_SYNTHETIC=true`). With nothing configured every source
    /// runs on its simulator, the zero-config demo.
    fn with_sources(mut self, env: &Env<'_>) -> Result<Self, ConfigError> {
        let configured = [
            self.ibkr.gateway_url.is_some(),
            self.tastytrade.credentials.is_some(),
            self.binance.keys.is_some(),
        ];
        let any_venue = configured.contains(&true);
        self.ibkr.enabled = SourceMode::parse(env, "GS_IBKR")?.resolve(
            "GS_IBKR",
            "GS_IBKR_GATEWAY_URL",
            configured[0],
            any_venue,
        )?;
        self.tastytrade.enabled = SourceMode::parse(env, "GS_TASTYTRADE")?.resolve(
            "GS_TASTYTRADE",
            "GS_TASTYTRADE_CLIENT_SECRET and GS_TASTYTRADE_REFRESH_TOKEN",
            configured[1],
            any_venue,
        )?;
        self.binance.enabled = SourceMode::parse(env, "GS_BINANCE")?.resolve(
            "GS_BINANCE",
            "GS_BINANCE_API_KEY and GS_BINANCE_API_SECRET",
            configured[2],
            any_venue,
        )?;
        self.synthetic.enabled = match SourceMode::parse(env, "GS_SYNTHETIC")? {
            SourceMode::Auto => !any_venue,
            SourceMode::On => true,
            SourceMode::Off => false,
            SourceMode::Simulator => {
                return Err(ConfigError {
                    var: "GS_SYNTHETIC",
                    message: "expected auto, true or false".into(),
                })
            }
        };
        Ok(self)
    }
}

/// What `GS_<SOURCE>` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceMode {
    /// Unset or `auto`: the venue if configured; the simulator if no venue is.
    Auto,
    /// `true`: the venue, which must be configured.
    On,
    /// `sim`: the in-process simulator.
    Simulator,
    /// `false`: not at all.
    Off,
}

impl SourceMode {
    fn parse(env: &Env<'_>, var: &'static str) -> Result<Self, ConfigError> {
        match env.raw(var).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("auto") => Ok(Self::Auto),
            Some("true" | "on" | "1") => Ok(Self::On),
            Some("sim" | "simulator") => Ok(Self::Simulator),
            Some("false" | "off" | "0") => Ok(Self::Off),
            Some(other) => Err(ConfigError {
                var,
                message: format!("expected auto, true, sim or false, got {other:?}"),
            }),
        }
    }

    /// Whether the source runs.
    fn resolve(
        self,
        var: &'static str,
        needs: &str,
        configured: bool,
        any_venue: bool,
    ) -> Result<bool, ConfigError> {
        match (self, configured) {
            (Self::Off, _) => Ok(false),
            (Self::Auto | Self::On, true) => Ok(true),
            (Self::Auto, false) => Ok(!any_venue),
            (Self::On, false) => Err(ConfigError {
                var,
                message: format!(
                    "true, but the venue is not configured ({needs}); {var}=sim runs the simulator"
                ),
            }),
            (Self::Simulator, false) => Ok(true),
            (Self::Simulator, true) => Err(ConfigError {
                var,
                message: format!("sim, but {needs} configure the real venue too; unset one"),
            }),
        }
    }
}

/// Both the API key and the secret, or neither (the simulator).
fn binance_keys(env: &Env<'_>) -> Result<Option<streaming::binance::rest::Keys>, ConfigError> {
    use streaming::secret::Secret;
    match (
        env.raw("GS_BINANCE_API_KEY"),
        env.raw("GS_BINANCE_API_SECRET"),
    ) {
        (None, None) => Ok(None),
        (Some(key), Some(secret)) => Ok(Some(streaming::binance::rest::Keys {
            api_key: Secret::new(key),
            secret: Secret::new(secret),
        })),
        (Some(_), None) => Err(ConfigError {
            var: "GS_BINANCE_API_SECRET",
            message: "required when GS_BINANCE_API_KEY is set".into(),
        }),
        (None, Some(_)) => Err(ConfigError {
            var: "GS_BINANCE_API_KEY",
            message: "required when GS_BINANCE_API_SECRET is set".into(),
        }),
    }
}

/// `BTCUSDT,ETHUSDT`: Binance-native symbols, upper case, letters, digits and `_`.
fn binance_symbols(env: &Env<'_>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = env.raw("GS_BINANCE_SYMBOLS") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let upper = s.to_ascii_uppercase();
            if upper.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                Ok(upper)
            } else {
                Err(ConfigError {
                    var: "GS_BINANCE_SYMBOLS",
                    message: format!("invalid symbol {s:?}"),
                })
            }
        })
        .collect()
}

/// Both OAuth values, or neither (the simulator); one alone is a mistake.
fn tastytrade_credentials(
    env: &Env<'_>,
) -> Result<Option<streaming::tastytrade::rest::Credentials>, ConfigError> {
    use streaming::secret::Secret;
    match (
        env.raw("GS_TASTYTRADE_CLIENT_SECRET"),
        env.raw("GS_TASTYTRADE_REFRESH_TOKEN"),
    ) {
        (None, None) => Ok(None),
        (Some(secret), Some(refresh)) => Ok(Some(streaming::tastytrade::rest::Credentials {
            client_secret: Secret::new(secret),
            refresh_token: Secret::new(refresh),
        })),
        (Some(_), None) => Err(ConfigError {
            var: "GS_TASTYTRADE_REFRESH_TOKEN",
            message: "required when GS_TASTYTRADE_CLIENT_SECRET is set".into(),
        }),
        (None, Some(_)) => Err(ConfigError {
            var: "GS_TASTYTRADE_CLIENT_SECRET",
            message: "required when GS_TASTYTRADE_REFRESH_TOKEN is set".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
