//! The `greekstream` command line. `anyhow` lives here and nowhere else.

use anyhow::Context;
use clap::{Parser, Subcommand};
use greekstream::app::{connect_and_migrate, App};
use greekstream::config::Config;
use greekstream::{bench, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "greekstream",
    version,
    about = "Streams option Greeks and positions into partitioned PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default): sources → processor → writer → PostgreSQL.
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Benchmarks against a scratch database `<DATABASE_URL name>_bench`.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a venue simulator on its own, for a client (ours or a third party's).
    #[command(subcommand)]
    Sim(SimCommand),
    /// Price an option and its Greeks with the local model (or solve its implied
    /// volatility with --premium); prints one JSON object.
    Price(greekstream::price::PriceArgs),
    /// The trading core's checks, offline.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// The executor against the configured Binance account: place one order, or
    /// reconcile the book with the venue once (prints one JSON object).
    #[command(subcommand)]
    Order(greekstream::order_cli::OrderCommand),
}

#[derive(Subcommand)]
enum RiskCommand {
    /// Runs the pre-trade checks on a balance, positions and an order given as JSON;
    /// prints the verdict and the numbers behind it as one JSON object.
    WhatIf(greekstream::what_if::WhatIfArgs),
}

#[derive(Subcommand)]
enum SimCommand {
    /// The IBKR Client Portal gateway: REST under /v1/api, WebSocket at /v1/api/ws,
    /// faults by `POST /sim/fault/{drop|silent|expire_session|auth_loss|malformed}`.
    Ibkr {
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: std::net::SocketAddr,
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
        listen: std::net::SocketAddr,
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
        listen: std::net::SocketAddr,
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

#[derive(Subcommand)]
enum BenchCommand {
    /// The whole pipeline at a paced rate (or `max`); prints one JSON line.
    Ingest {
        /// Events per second, or `max`.
        #[arg(long, default_value = "1000")]
        rate: String,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Raw binary COPY of the same rows into the same table; prints one JSON line.
    Copy {
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sim(sim)) => return run_sim(sim).await,
        Some(Command::Risk(RiskCommand::WhatIf(args))) => {
            match trading::what_if::run(&(&args).into()) {
                Ok(out) => println!("{out}"),
                Err(e) => {
                    eprintln!("{}", serde_json::json!({ "error": e.to_string() }));
                    std::process::exit(2);
                }
            }
            return Ok(());
        }
        Some(Command::Price(args)) => {
            // Machine-readable either way: a JSON result, or a JSON error and exit 2.
            match greekstream::price::run(&args) {
                Ok(out) => println!("{out}"),
                Err(e) => {
                    eprintln!("{}", serde_json::json!({ "error": e.to_string() }));
                    std::process::exit(2);
                }
            }
            return Ok(());
        }
        _ => {}
    }
    let cfg = Config::from_env().context("invalid configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            telemetry::init_logging("info");
            tracing::info!(database = %cfg.database_url, "greekstream starting");
            let metrics = telemetry::install_recorder().context("metrics recorder")?;
            let app = tokio::select! {
                app = App::start(cfg, metrics) => app.context("start-up")?,
                _ = shutdown_signal() => return Ok(()),
            };
            shutdown_signal().await;
            tracing::info!("shutting down: draining the pipeline");
            let report = app.shutdown().await;
            tracing::info!(?report, "stopped");
        }
        Command::Migrate => {
            telemetry::init_logging("info");
            let cancel = CancellationToken::new();
            let pool = tokio::select! {
                pool = connect_and_migrate(&cfg, "greekstream-migrate", 1, &cancel) => pool?,
                _ = shutdown_signal() => return Ok(()),
            };
            pool.close().await;
            tracing::info!("migrations applied");
        }
        Command::Bench(b) => {
            telemetry::init_logging("warn");
            let out = match b {
                BenchCommand::Ingest {
                    rate,
                    seconds,
                    seed,
                } => {
                    let rate = match rate.as_str() {
                        "max" => None,
                        r => Some(
                            r.parse::<f64>()
                                .ok()
                                .filter(|r| *r > 0.0)
                                .context("--rate takes events/s (> 0) or max")?,
                        ),
                    };
                    anyhow::ensure!(seconds > 0.0, "--seconds must be positive");
                    bench::ingest(&cfg, rate, seconds, seed).await?
                }
                BenchCommand::Copy { rows, seed } => bench::copy(&cfg, rows, seed).await?,
            };
            println!("{out}");
        }
        Command::Order(cmd) => {
            telemetry::init_logging("warn");
            match greekstream::order_cli::run(&cfg, &cmd).await {
                Ok(out) => println!("{out}"),
                Err(e) => {
                    eprintln!(
                        "{}",
                        serde_json::json!({ "error": e.message, "code": e.code })
                    );
                    std::process::exit(2);
                }
            }
        }
        Command::Sim(_) | Command::Price(_) | Command::Risk(_) => {
            unreachable!("handled before the configuration is read")
        }
    }
    Ok(())
}

async fn run_sim(cmd: SimCommand) -> anyhow::Result<()> {
    use simulators::ibkr::{IbkrSim, IbkrSimConfig};
    use std::time::Duration;
    telemetry::init_logging("info");
    match cmd {
        SimCommand::Ibkr {
            listen,
            seed,
            options,
            smd_expiry,
            heartbeat,
            tls,
        } => {
            anyhow::ensure!(
                smd_expiry > 0 && heartbeat > 0,
                "intervals must be positive"
            );
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
                .with_context(|| format!("cannot listen on {listen}"))?;
            // One machine-readable line on stdout, for scripts that started us on port 0.
            println!("{}", serde_json::json!({ "gateway_url": sim.url() }));
            tracing::info!(
                rest = %format!("{}/v1/api/", sim.url()),
                ws = %format!("{}/v1/api/ws", sim.url().replacen("http", "ws", 1)),
                "IBKR gateway simulator ready (GS_IBKR_GATEWAY_URL={})", sim.url()
            );
            shutdown_signal().await;
            sim.stop();
        }
        SimCommand::Tastytrade {
            listen,
            seed,
            options,
            access_token_ttl,
            tls,
        } => {
            use simulators::tastytrade::{TastytradeSim, TastytradeSimConfig};
            anyhow::ensure!(access_token_ttl > 0, "the token lifetime must be positive");
            let cfg = TastytradeSimConfig {
                seed,
                options_per_underlying: options,
                access_token_ttl: Duration::from_secs(access_token_ttl),
                tls,
                ..TastytradeSimConfig::default()
            };
            let sim = TastytradeSim::bind(cfg, listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "{}",
                serde_json::json!({ "api_url": sim.api_url(), "streamer_url": sim.streamer_url() })
            );
            tracing::info!(
                api = %sim.api_url(),
                streamer = %sim.streamer_url(),
                "Tastytrade simulator ready (GS_TASTYTRADE_API_URL, GS_TASTYTRADE_STREAMER_URL)"
            );
            shutdown_signal().await;
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
            use simulators::binance::{BinanceSim, BinanceSimConfig};
            anyhow::ensure!(tick_ms > 0, "--tick-ms must be positive");
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
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "{}",
                serde_json::json!({ "rest_url": sim.rest_url(), "ws_url": sim.ws_url() })
            );
            tracing::info!(
                rest = %sim.rest_url(),
                ws = %sim.ws_url(),
                "Binance simulator ready (GS_BINANCE_REST_URL, GS_BINANCE_WS_URL)"
            );
            shutdown_signal().await;
            sim.stop();
        }
    }
    Ok(())
}
