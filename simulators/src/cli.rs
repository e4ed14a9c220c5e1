//! `greekstream sim <venue>`: one simulator on its own, for a client (ours or a third
//! party's). The flags live here with the simulators; the binary only parses and waits
//! for its shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;

use crate::ibkr::{IbkrSim, IbkrSimConfig};

#[derive(Debug, thiserror::Error)]
pub enum SimCliError {
    #[error("{0}")]
    Flag(&'static str),
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// The IBKR Client Portal gateway: REST under /v1/api, WebSocket at /v1/api/ws,
    /// faults by `POST /sim/fault/{drop|silent|expire_session|auth_loss|malformed}`.
    Ibkr {
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Option positions per underlying (3 underlyings, 2 accounts).
        #[arg(long, default_value_t = 6)]
        options: usize,
        /// Seconds after its last `smd` command a market-data stream stops.
        #[arg(long, default_value_t = 600)]
        smd_expiry: u64,
        /// Seconds between `system` heartbeats.
        #[arg(long, default_value_t = 10)]
        heartbeat: u64,
        /// Serve HTTPS/WSS with a fresh self-signed certificate, like the real gateway.
        #[arg(long)]
        tls: bool,
    },
    /// Tastytrade: REST (POST /oauth/token, /customers/me/accounts,
    /// /accounts/{n}/positions, /api-quote-tokens), DXLink at /dxlink, the account
    /// streamer at /streamer; faults by `POST /sim/fault/{drop|silent|reject_auth|
    /// accept_auth|expire_tokens|nan|malformed|error}`, position changes by
    /// `POST /sim/position/{account}` with `{"symbol":..., "quantity":...}`.
    Tastytrade {
        #[arg(long, default_value = "127.0.0.1:5100")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        /// Option positions per underlying (3 underlyings, 2 accounts).
        #[arg(long, default_value_t = 6)]
        options: usize,
        /// Lifetime of access tokens, seconds (the real API: 900).
        #[arg(long, default_value_t = 900)]
        access_token_ttl: u64,
        /// Serve HTTPS/WSS with a fresh self-signed certificate.
        #[arg(long)]
        tls: bool,
    },
    /// Binance USDⓈ-M futures: REST under /fapi (signed with --api-key/--secret),
    /// WebSockets at /ws, /stream, /public|market|private/{ws,stream}; faults by
    /// `POST /sim/fault/{drop|silent|resume|depth_gap|expire_listen_key|rate_limit|
    /// maintenance|maintenance_off|malformed}`.
    Binance {
        #[arg(long, default_value = "127.0.0.1:5200")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 17)]
        seed: u64,
        #[arg(long, default_value = "sim-api-key")]
        api_key: String,
        #[arg(long, default_value = "sim-secret")]
        secret: String,
        /// Milliseconds between book moves.
        #[arg(long, default_value_t = 100)]
        tick_ms: u64,
        /// Serve HTTPS/WSS with a fresh self-signed certificate.
        #[arg(long)]
        tls: bool,
    },
}

pub async fn run(cmd: SimCommand, shutdown: impl Future<Output = ()>) -> Result<(), SimCliError> {
    match cmd {
        SimCommand::Ibkr {
            listen,
            seed,
            options,
            smd_expiry,
            heartbeat,
            tls,
        } => {
            if smd_expiry == 0 || heartbeat == 0 {
                return Err(SimCliError::Flag(
                    "--smd-expiry and --heartbeat must be positive",
                ));
            }
            let cfg = IbkrSimConfig {
                seed,
                options_per_underlying: options,
                smd_expiry: Duration::from_secs(smd_expiry),
                heartbeat_interval: Duration::from_secs(heartbeat),
                tls,
                ..IbkrSimConfig::default()
            };
            let sim = IbkrSim::bind(cfg, listen)
                .await
                .map_err(|source| SimCliError::Listen { listen, source })?;
            // One machine-readable line on stdout, for scripts that started us on port 0.
            println!("{}", serde_json::json!({ "gateway_url": sim.url() }));
            tracing::info!(
                rest = %format!("{}/v1/api/", sim.url()),
                ws = %format!("{}/v1/api/ws", sim.url().replacen("http", "ws", 1)),
                "IBKR gateway simulator ready (GS_IBKR_GATEWAY_URL={})", sim.url()
            );
            shutdown.await;
            sim.stop();
        }
        SimCommand::Tastytrade {
            listen,
            seed,
            options,
            access_token_ttl,
            tls,
        } => {
            use crate::tastytrade::{TastytradeSim, TastytradeSimConfig};
            if access_token_ttl == 0 {
                return Err(SimCliError::Flag("--access-token-ttl must be positive"));
            }
            let cfg = TastytradeSimConfig {
                seed,
                options_per_underlying: options,
                access_token_ttl: Duration::from_secs(access_token_ttl),
                tls,
                ..TastytradeSimConfig::default()
            };
            let sim = TastytradeSim::bind(cfg, listen)
                .await
                .map_err(|source| SimCliError::Listen { listen, source })?;
            println!(
                "{}",
                serde_json::json!({ "api_url": sim.api_url(), "streamer_url": sim.streamer_url() })
            );
            tracing::info!(
                api = %sim.api_url(),
                streamer = %sim.streamer_url(),
                "Tastytrade simulator ready (GS_TASTYTRADE_API_URL, GS_TASTYTRADE_STREAMER_URL)"
            );
            shutdown.await;
            sim.stop();
        }
        SimCommand::Binance {
            listen,
            seed,
            api_key,
            secret,
            tick_ms,
            tls,
        } => {
            use crate::binance::{BinanceSim, BinanceSimConfig};
            if tick_ms == 0 {
                return Err(SimCliError::Flag("--tick-ms must be positive"));
            }
            let cfg = BinanceSimConfig {
                seed,
                api_key,
                secret,
                tick_interval: Duration::from_millis(tick_ms),
                tls,
                ..BinanceSimConfig::default()
            };
            let sim = BinanceSim::bind(cfg, listen)
                .await
                .map_err(|source| SimCliError::Listen { listen, source })?;
            println!(
                "{}",
                serde_json::json!({ "rest_url": sim.rest_url(), "ws_url": sim.ws_url() })
            );
            tracing::info!(
                rest = %sim.rest_url(),
                ws = %sim.ws_url(),
                "Binance simulator ready (GS_BINANCE_REST_URL, GS_BINANCE_WS_URL)"
            );
            shutdown.await;
            sim.stop();
        }
    }
    Ok(())
}
