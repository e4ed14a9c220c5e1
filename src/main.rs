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
    Sim(simulators::cli::SimCommand),
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
    /// Values an account given as JSON (balance, positions, marks, rules, mode) with the
    /// risk loop's code: margin numbers, each position's PnL and liquidation prices,
    /// the tier, and what would be closed and the ratio after.
    Value(greekstream::what_if::ValueArgs),
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

/// An offline command's answer: one JSON object on stdout, or `{"error"}` on stderr and
/// exit 2.
fn offline(out: Result<serde_json::Value, String>) -> ! {
    match out {
        Ok(out) => {
            println!("{out}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{}", serde_json::json!({ "error": e }));
            std::process::exit(2)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sim(sim)) => {
            telemetry::init_logging("info");
            return Ok(simulators::cli::run(sim, shutdown_signal()).await?);
        }
        Some(Command::Risk(RiskCommand::WhatIf(args))) => {
            offline(trading::what_if::run(&(&args).into()).map_err(|e| e.to_string()))
        }
        Some(Command::Risk(RiskCommand::Value(args))) => offline(
            args.input()
                .and_then(|input| trading::risk_value::run(&input).map_err(|e| e.to_string())),
        ),
        // Machine-readable either way: a JSON result, or a JSON error and exit 2.
        Some(Command::Price(args)) => {
            offline(greekstream::price::run(&args).map_err(|e| e.to_string()))
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
