//! The service: database (migrated, partitions ensured), metrics and control
//! listeners, the pipeline, and the sources. `App::start` returns once everything
//! listens; `App::shutdown` stops the sources and waits until what they sent is
//! written.

use std::net::SocketAddr;
use std::time::Duration;

use crate::bus::price_cache::{run_price_cache, PriceCacheConfig, CACHE_ERRORS};
use crate::bus::RedisLink;
use axum::routing::get;
use axum::Router;
use backoff::backoff::Backoff;
use database::partitions::{ensure_partitions, run_maintenance};
use metrics_exporter_prometheus::PrometheusHandle;
use simulators::binance::{BinanceSim, BinanceSimConfig};
use simulators::ibkr::{IbkrSim, IbkrSimConfig};
use simulators::tastytrade::{TastytradeSim, TastytradeSimConfig};
use sqlx::PgPool;
use std::sync::Arc;
use streaming::binance::{run_binance, BinanceConfig, BinanceStats};
use streaming::ibkr::{run_ibkr, IbkrConfig, IbkrStats};
use streaming::synthetic::{run_synthetic, SyntheticConfig};
use streaming::tastytrade::{run_tastytrade, TastytradeConfig, TastytradeStats};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::HealthMonitor;
use crate::pipeline::{Pipeline, PipelineAlive, PipelineReport};
use crate::supervisor::supervise;
use processor::pipeline::SourceActivity;
use processor::position_stream::PositionHub;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] database::DbError),
    #[error("cancelled before the database was reachable")]
    Cancelled,
    #[error(transparent)]
    Redis(#[from] crate::bus::InvalidRedisUrl),
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("metrics_addr", &self.metrics_addr)
            .field("control_addr", &self.control_addr)
            .finish_non_exhaustive()
    }
}

pub struct App {
    pub metrics_addr: SocketAddr,
    pub control_addr: SocketAddr,
    pub pool: PgPool,
    /// The in-process IBKR gateway simulator, when no gateway is configured.
    pub ibkr_sim: Option<IbkrSim>,
    pub ibkr_stats: Arc<IbkrStats>,
    /// The in-process Tastytrade simulator, when no credentials are configured.
    pub tastytrade_sim: Option<TastytradeSim>,
    pub tastytrade_stats: Arc<TastytradeStats>,
    /// The in-process Binance simulator, when no API keys are configured.
    pub binance_sim: Option<BinanceSim>,
    pub binance_stats: Arc<BinanceStats>,
    /// The unified position book and stream (what the read API serves).
    pub hub: PositionHub,
    cancel: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    pipeline: Pipeline,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Listen { addr, source })
}

/// Connects and migrates, retrying while the database is unreachable.
pub async fn connect_and_migrate(
    cfg: &Config,
    application_name: &str,
    max_connections: u32,
    cancel: &CancellationToken,
) -> Result<PgPool, AppError> {
    let opts = database::connect_options(cfg.database_url.expose(), application_name)?;
    let pool = database::lazy_pool(opts, max_connections);
    let mut backoff = streaming::retry::database_start();
    loop {
        match database::migrate(&pool).await {
            Ok(()) => {
                cfg.writer.health.committed();
                return Ok(pool);
            }
            Err(err) => {
                cfg.writer.health.failed();
                let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                tracing::warn!(url = %cfg.database_url, error = %err, retry_in_ms = wait.as_millis() as u64,
                    "database not ready");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Err(AppError::Cancelled),
                }
            }
        }
    }
}

impl App {
    pub async fn start(cfg: Config, metrics: PrometheusHandle) -> Result<Self, AppError> {
        let cancel = CancellationToken::new();
        let metrics_listener = bind(cfg.metrics_addr).await?;
        let control_listener = bind(cfg.control_addr).await?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| AppError::Listen {
                addr: cfg.metrics_addr,
                source,
            })?;
        let control_addr = control_listener
            .local_addr()
            .map_err(|source| AppError::Listen {
                addr: cfg.control_addr,
                source,
            })?;
        let hub = PositionHub::new(cfg.position_stream_capacity);
        let api_hub = hub.clone();
        let activity = Arc::new(SourceActivity::default());
        let alive = Arc::new(PipelineAlive::default());
        let monitor = HealthMonitor::new(
            cfg.writer.health.clone(),
            cfg.health_writer_window,
            activity.clone(),
            alive.clone(),
            configured_sources(&cfg),
        );
        let api_monitor = monitor.clone();
        let mut servers = vec![
            tokio::spawn(async move {
                let app = Router::new().route(
                    "/metrics",
                    get(move || std::future::ready(metrics.render())),
                );
                if let Err(err) = axum::serve(metrics_listener, app).await {
                    tracing::error!(error = %err, "metrics listener stopped");
                }
            }),
            tokio::spawn(async move {
                let app = crate::api::router(api_hub).merge(crate::health::router(api_monitor));
                if let Err(err) = axum::serve(control_listener, app).await {
                    tracing::error!(error = %err, "control listener stopped");
                }
            }),
        ];
        servers.push(tokio::spawn(monitor.run_gauges()));
        tracing::info!(%metrics_addr, %control_addr, "listening");

        let writer_conns = cfg.writer.policy.max_in_flight as u32;
        connect_and_migrate(&cfg, "greekstream-migrate", 1, &cancel)
            .await?
            .close()
            .await;
        // The writer's own sessions carry server-side limits, so a half-open
        // connection or a lock held elsewhere cannot stall ingest (migrations above
        // may legitimately take longer).
        let pool = database::lazy_pool(
            cfg.db_limits.apply(database::connect_options(
                cfg.database_url.expose(),
                "greekstream-writer",
            )?),
            writer_conns + 1,
        );
        let maint_pool = database::lazy_pool(
            database::connect_options(cfg.database_url.expose(), "greekstream-maintenance")?,
            1,
        );
        match ensure_partitions(&maint_pool, &cfg.partitions).await {
            Ok(n) => tracing::info!(created = n, "monthly partitions ready"),
            Err(err) => {
                tracing::warn!(error = %err, "partition maintenance failed at start-up; rows go to the default partition until it succeeds")
            }
        }
        servers.push(tokio::spawn(run_maintenance(
            maint_pool,
            cfg.partitions,
            cancel.clone(),
        )));

        if cfg.position_events {
            servers.push(tokio::spawn(crate::bus::positions::run_publisher(
                RedisLink::open(
                    cfg.redis_url.expose(),
                    "position events",
                    crate::bus::positions::PUBLISH_ERRORS,
                )?,
                cfg.binance.redis_prefix.clone(),
                hub.clone(),
                cancel.clone(),
            )));
        }
        let pipeline = Pipeline::start(
            pool.clone(),
            cfg.channel_capacity,
            cfg.writer.clone(),
            hub.clone(),
            cfg.model,
            activity,
            alive,
        );
        let mut sources = Vec::new();
        if cfg.synthetic.enabled {
            let s = cfg.synthetic.clone();
            tracing::info!(
                rate = s.rate,
                accounts = s.accounts,
                seed = s.seed,
                "starting the synthetic source"
            );
            let tx = pipeline.sender();
            let token = cancel.clone();
            sources.push(tokio::spawn(supervise(
                "synthetic",
                cancel.clone(),
                move || {
                    let synthetic = SyntheticConfig {
                        seed: s.seed,
                        accounts: s.accounts,
                        rate: Some(s.rate),
                        ..SyntheticConfig::default()
                    };
                    let (tx, token) = (tx.clone(), token.clone());
                    async move {
                        run_synthetic(synthetic, tx, token).await;
                    }
                },
            )));
        }
        let ibkr_stats = Arc::new(IbkrStats::default());
        let mut ibkr_sim = None;
        if cfg.ibkr.enabled {
            let url = match &cfg.ibkr.gateway_url {
                Some(url) => {
                    tracing::info!(gateway = %url, "streaming from the IBKR Client Portal gateway");
                    url.expose().to_owned()
                }
                None => {
                    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
                    let sim = IbkrSim::bind(
                        IbkrSimConfig {
                            seed: cfg.ibkr.sim_seed,
                            ..IbkrSimConfig::default()
                        },
                        addr,
                    )
                    .await
                    .map_err(|source| AppError::Listen { addr, source })?;
                    tracing::info!(url = %sim.url(), "no IBKR gateway configured (GS_IBKR_GATEWAY_URL); streaming from the in-process simulator");
                    let url = sim.url();
                    ibkr_sim = Some(sim);
                    url
                }
            };
            let mut ibkr = IbkrConfig::new(url);
            ibkr.accept_invalid_certs = cfg.ibkr.accept_invalid_certs;
            ibkr.positions_refresh = cfg.ibkr.positions_refresh;
            let (tx, token, stats) = (pipeline.sender(), cancel.clone(), ibkr_stats.clone());
            sources.push(tokio::spawn(supervise("ibkr", cancel.clone(), move || {
                let (ibkr, tx, token, stats) =
                    (ibkr.clone(), tx.clone(), token.clone(), stats.clone());
                async move {
                    if let Err(err) = run_ibkr(ibkr, tx, stats, token).await {
                        tracing::error!(error = %err, "IBKR source failed");
                    }
                }
            })));
        }
        let tastytrade_stats = Arc::new(TastytradeStats::default());
        let mut tastytrade_sim = None;
        if cfg.tastytrade.enabled {
            let (source, sim) = start_tastytrade(
                &cfg,
                pipeline.sender(),
                tastytrade_stats.clone(),
                cancel.clone(),
            )
            .await?;
            sources.push(source);
            tastytrade_sim = sim;
        }
        let binance_stats = Arc::new(BinanceStats::default());
        let mut binance_sim = None;
        if cfg.binance.enabled {
            let (source, sim) = start_binance(
                &cfg,
                pipeline.sender(),
                binance_stats.clone(),
                cancel.clone(),
            )
            .await?;
            sources.push(source);
            binance_sim = sim;
        }
        Ok(Self {
            metrics_addr,
            control_addr,
            pool,
            ibkr_sim,
            ibkr_stats,
            tastytrade_sim,
            tastytrade_stats,
            binance_sim,
            binance_stats,
            hub,
            cancel,
            sources,
            servers,
            pipeline,
        })
    }

    /// Stops the sources, writes everything they sent, and stops the listeners.
    pub async fn shutdown(self) -> PipelineReport {
        self.cancel.cancel();
        for s in self.sources {
            let _ = s.await;
        }
        let report = self.pipeline.finish().await;
        if let Some(sim) = self.ibkr_sim {
            sim.stop();
        }
        if let Some(sim) = self.tastytrade_sim {
            sim.stop();
        }
        if let Some(sim) = self.binance_sim {
            sim.stop();
        }
        for s in self.servers {
            s.abort();
        }
        report
    }
}

/// The Tastytrade source: the real endpoints with credentials, else the in-process
/// simulator (returned so it lives as long as the app).
async fn start_tastytrade(
    cfg: &Config,
    tx: tokio::sync::mpsc::Sender<streaming::BrokerEvent>,
    stats: Arc<TastytradeStats>,
    cancel: CancellationToken,
) -> Result<(JoinHandle<()>, Option<TastytradeSim>), AppError> {
    use streaming::secret::Secret;
    use streaming::tastytrade::rest::Credentials;
    let t = &cfg.tastytrade;
    let (client, sim) = match &t.credentials {
        Some(credentials) => {
            tracing::info!(api = %t.api_url, streamer = %t.streamer_url, "streaming from Tastytrade");
            let mut c = TastytradeConfig::new(
                t.api_url.expose(),
                t.streamer_url.expose(),
                credentials.clone(),
            );
            c.accept_invalid_certs = t.accept_invalid_certs;
            (c, None)
        }
        None => {
            let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
            let sim = TastytradeSim::bind(
                TastytradeSimConfig {
                    seed: t.sim_seed,
                    ..TastytradeSimConfig::default()
                },
                addr,
            )
            .await
            .map_err(|source| AppError::Listen { addr, source })?;
            tracing::info!(url = %sim.api_url(), "no Tastytrade credentials (GS_TASTYTRADE_CLIENT_SECRET, GS_TASTYTRADE_REFRESH_TOKEN); streaming from the in-process simulator");
            let simulated = Credentials {
                client_secret: Secret::new("simulator"),
                refresh_token: Secret::new("simulator"),
            };
            let c = TastytradeConfig::new(sim.api_url(), sim.streamer_url(), simulated);
            (c, Some(sim))
        }
    };
    let mut client = client;
    client.positions_refresh = t.positions_refresh;
    let supervisor_cancel = cancel.clone();
    let task = tokio::spawn(supervise("tastytrade", supervisor_cancel, move || {
        let (client, tx, token, stats) =
            (client.clone(), tx.clone(), cancel.clone(), stats.clone());
        async move {
            if let Err(err) = run_tastytrade(client, tx, stats, token).await {
                tracing::error!(error = %err, "Tastytrade source failed");
            }
        }
    }));
    Ok((task, sim))
}

/// The Binance source: the real endpoints with API keys, else the in-process
/// simulator (returned so it lives as long as the app).
async fn start_binance(
    cfg: &Config,
    tx: tokio::sync::mpsc::Sender<streaming::BrokerEvent>,
    stats: Arc<BinanceStats>,
    cancel: CancellationToken,
) -> Result<(JoinHandle<()>, Option<BinanceSim>), AppError> {
    use streaming::binance::rest::Keys;
    use streaming::secret::Secret;
    let b = &cfg.binance;
    let (mut client, sim) = match &b.keys {
        Some(keys) => {
            tracing::info!(rest = %b.rest_url, ws = %b.ws_url, "streaming from Binance");
            let mut c = BinanceConfig::new(b.rest_url.expose(), b.ws_url.expose(), keys.clone());
            c.accept_invalid_certs = b.accept_invalid_certs;
            c.options_rest_url = Some(b.options_rest_url.expose().to_owned());
            (c, None)
        }
        None => {
            let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
            let sim_cfg = BinanceSimConfig {
                seed: b.sim_seed,
                ..BinanceSimConfig::default()
            };
            let keys = Keys {
                api_key: Secret::new(sim_cfg.api_key.clone()),
                secret: Secret::new(sim_cfg.secret.clone()),
            };
            let sim = BinanceSim::bind(sim_cfg, addr)
                .await
                .map_err(|source| AppError::Listen { addr, source })?;
            tracing::info!(url = %sim.rest_url(), "no Binance keys (GS_BINANCE_API_KEY, GS_BINANCE_API_SECRET); streaming from the in-process simulator");
            let mut c = BinanceConfig::new(sim.rest_url(), sim.ws_url(), keys);
            // The simulator serves the options API on the same host.
            c.options_rest_url = Some(sim.rest_url());
            (c, Some(sim))
        }
    };
    if !b.options {
        client.options_rest_url = None;
    }
    client.account = b.account.clone();
    client.symbols = b.symbols.clone();
    client.positions_refresh = b.positions_refresh;
    let price_cache = if b.price_cache {
        let pc = PriceCacheConfig {
            prefix: b.redis_prefix.clone(),
            ttl: b.price_ttl,
            ..PriceCacheConfig::default()
        };
        let link = RedisLink::open(cfg.redis_url.expose(), "price cache", CACHE_ERRORS)?;
        Some(tokio::spawn(run_price_cache(
            link,
            pc,
            stats.prices.clone(),
            Arc::default(),
            cancel.clone(),
        )))
    } else {
        None
    };
    let supervisor_cancel = cancel.clone();
    let source = tokio::spawn(supervise("binance", supervisor_cancel, move || {
        let (client, tx, token, stats) =
            (client.clone(), tx.clone(), cancel.clone(), stats.clone());
        async move {
            if let Err(err) = run_binance(client, tx, stats, token).await {
                tracing::error!(error = %err, "Binance source failed");
            }
        }
    }));
    // One handle for the source and its price cache: both stop on `cancel`.
    let task = tokio::spawn(async move {
        let _ = source.await;
        if let Some(pc) = price_cache {
            let _ = pc.await;
        }
    });
    Ok((task, sim))
}

/// The sources this configuration runs, with their silence windows.
fn configured_sources(cfg: &Config) -> Vec<(streaming::Broker, Duration)> {
    use streaming::Broker;
    [
        (Broker::Ibkr, cfg.ibkr.enabled, cfg.ibkr.silence),
        (
            Broker::Tastytrade,
            cfg.tastytrade.enabled,
            cfg.tastytrade.silence,
        ),
        (Broker::Binance, cfg.binance.enabled, cfg.binance.silence),
        (
            Broker::Synthetic,
            cfg.synthetic.enabled,
            cfg.synthetic.silence,
        ),
    ]
    .into_iter()
    .filter(|&(_, enabled, _)| enabled)
    .map(|(b, _, window)| (b, window))
    .collect()
}
