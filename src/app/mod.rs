//! The service: database (migrated, partitions ensured), metrics and control
//! listeners, the pipeline, and the sources ([`sources`]). `App::start` returns once
//! everything listens; `App::shutdown` stops the sources and waits until what they
//! sent is written.

mod error;
mod sources;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use backoff::backoff::Backoff;
use bus::outbox::{outbox, run_writer, ERRORS as outbox_errors};
use bus::RedisLink;
use database::partitions::{ensure_partitions, run_maintenance};
use engine::risk_loop::RiskInput;
use metrics_exporter_prometheus::PrometheusHandle;
use simulators::binance::BinanceSim;
use simulators::ibkr::IbkrSim;
use simulators::tastytrade::TastytradeSim;
use sqlx::PgPool;
use std::sync::Arc;
use streaming::binance::BinanceStats;
use streaming::ibkr::IbkrStats;
use streaming::tastytrade::TastytradeStats;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::HealthMonitor;
use crate::pipeline::{Pipeline, PipelineAlive, PipelineReport};
use processor::pipeline::SourceActivity;
use processor::position_stream::PositionHub;
use sources::{configured_sources, Sources};

pub use error::AppError;

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
    /// Book changes for the risk loop (when it runs).
    pub risk_inputs: Option<mpsc::Sender<RiskInput>>,
    /// The order executor, once it has read the venue's symbols and reconciled.
    pub executor: Arc<tokio::sync::OnceCell<engine::execution::Executor>>,
    cancel: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    pipeline: Pipeline,
}

/// Binds `addr` and says which address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AppError> {
    let listen = |source| AppError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    Ok((listener, local))
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
        let (metrics_listener, metrics_addr) = bind(cfg.metrics_addr).await?;
        let (control_listener, control_addr) = bind(cfg.control_addr).await?;
        let hub = PositionHub::new(cfg.position_stream_capacity);
        let activity = Arc::new(SourceActivity::default());
        let alive = Arc::new(PipelineAlive::default());
        let trading = cfg.engine && cfg.binance.enabled;
        // One engine per stack: a second one refuses to start (gateway::lease).
        let lease = if trading {
            gateway::lease::EngineLease::take(
                cfg.redis_url.expose(),
                &cfg.binance.redis_prefix,
                &cfg.engine_id,
            )
            .await
            .map_err(|e| AppError::Gateway(e.to_string()))?
        } else {
            None
        };
        let engine_status = Arc::new(engine::EngineStatus::new(trading));
        let monitor = HealthMonitor::new(
            cfg.writer.health.clone(),
            cfg.health_writer_window,
            activity.clone(),
            alive.clone(),
            configured_sources(&cfg),
            engine_status.clone(),
        );
        let metrics_app = Router::new().route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        );
        let gateway = Arc::new(tokio::sync::OnceCell::new());
        let control_app = crate::api::router(hub.clone())
            .merge(crate::health::router(monitor.clone()))
            .merge(gateway::http::router(
                gateway.clone(),
                cfg.control_token.clone(),
                cfg.jwt_secret.clone(),
            ))
            .fallback(gateway::http::not_found);
        let mut servers = vec![
            serve("metrics", metrics_listener, metrics_app),
            serve("control", control_listener, control_app),
            tokio::spawn(monitor.run_gauges()),
        ];
        tracing::info!(%metrics_addr, %control_addr, "listening");

        let pool = open_database(&cfg, &cancel, &mut servers).await?;
        if cfg.position_events {
            servers.push(tokio::spawn(crate::position_events::run_publisher(
                RedisLink::open(
                    cfg.redis_url.expose(),
                    "position events",
                    crate::position_events::PUBLISH_ERRORS,
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
        let (feed_tx, feed_rx) = mpsc::channel(4096);
        let sources = Sources::start(&cfg, &pipeline, &cancel, trading.then_some(feed_tx)).await?;
        let boot_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let (out, bus_rx) = outbox(&cfg.binance.redis_prefix, 10_000, boot_ms);
        if cfg.risk_loop || trading {
            let link = RedisLink::open(cfg.redis_url.expose(), "engine bus", outbox_errors)?;
            servers.push(tokio::spawn(run_writer(link, bus_rx, cancel.clone())));
        }
        let executor = Arc::new(tokio::sync::OnceCell::new());
        let risk_inputs = cfg.risk_loop.then(|| {
            let (tx, tasks) = engine::start_risk(
                pool.clone(),
                sources.binance_stats.prices.clone(),
                out.clone(),
                trading.then(|| executor.clone()),
                &cancel,
            );
            servers.extend(tasks);
            tx
        });
        if let (true, Some((rest_url, keys))) = (trading, sources.binance_rest.clone()) {
            // On the built-in simulator, its starting positions are the house's.
            let house = match &sources.binance_sim {
                Some(sim) => sim
                    .positions()
                    .into_iter()
                    .filter(|(s, _)| !s.contains('-'))
                    .collect(),
                None => cfg.house_positions.clone(),
            };
            servers.push(tokio::spawn(engine::run_executor(
                engine::ExecutorSetup {
                    pool: pool.clone(),
                    rest_url,
                    keys,
                    redis_url: cfg.redis_url.expose().to_owned(),
                    prefix: cfg.binance.redis_prefix.clone(),
                    house,
                    prices: sources.binance_stats.prices.clone(),
                    outbox: out.clone(),
                    risk: risk_inputs.clone(),
                    feed: feed_rx,
                    ready: executor.clone(),
                    status: engine_status.clone(),
                    journal_dir: cfg.order_journal_dir.clone(),
                    journal_sync: cfg.order_journal_sync,
                },
                cancel.clone(),
            )));
        }
        if let Some(lease) = lease {
            servers.push(tokio::spawn(lease.keep(cancel.clone())));
        }
        if trading {
            let g = gateway::Gateway::new(pool.clone(), executor.clone(), out.clone())
                .await
                .map_err(|e| AppError::Gateway(e.to_string()))?;
            let _ = gateway.set(g.clone());
            let engine_id = cfg.engine_id.clone();
            let (url, prefix, c) = (
                cfg.redis_url.expose().to_owned(),
                cfg.binance.redis_prefix.clone(),
                cancel.clone(),
            );
            servers.push(tokio::spawn(async move {
                if let Err(e) =
                    gateway::consumer::run_consumer(g, &url, prefix, &engine_id, c).await
                {
                    tracing::error!(error = %e, "the command bus cannot start");
                }
            }));
        }
        Ok(Self {
            metrics_addr,
            control_addr,
            pool,
            ibkr_sim: sources.ibkr_sim,
            ibkr_stats: sources.ibkr_stats,
            tastytrade_sim: sources.tastytrade_sim,
            tastytrade_stats: sources.tastytrade_stats,
            binance_sim: sources.binance_sim,
            binance_stats: sources.binance_stats,
            hub,
            risk_inputs,
            executor,
            cancel,
            sources: sources.tasks,
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

/// Migrates (on its own short-lived session), then opens the writer's pool and the
/// partition maintainer's, and starts the maintainer.
async fn open_database(
    cfg: &Config,
    cancel: &CancellationToken,
    servers: &mut Vec<JoinHandle<()>>,
) -> Result<PgPool, AppError> {
    let writer_conns = cfg.writer.policy.max_in_flight as u32;
    connect_and_migrate(cfg, "greekstream-migrate", 1, cancel)
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
    Ok(pool)
}

fn serve(name: &'static str, listener: TcpListener, app: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, listener = name, "listener stopped");
        }
    })
}
