//! The sources: each venue's client on the real endpoints when configured, else on
//! its in-process simulator (kept alive as long as the app), under the supervisor;
//! and the synthetic load generator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use simulators::binance::{BinanceSim, BinanceSimConfig};
use simulators::ibkr::{IbkrSim, IbkrSimConfig};
use simulators::tastytrade::{TastytradeSim, TastytradeSimConfig};
use streaming::binance::{run_binance, BinanceConfig, BinanceStats, OrderFeed};
use streaming::ibkr::{run_ibkr, IbkrConfig, IbkrStats};
use streaming::synthetic::{run_synthetic, SyntheticConfig};
use streaming::tastytrade::{run_tastytrade, TastytradeConfig, TastytradeStats};
use streaming::BrokerEvent;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::AppError;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::supervisor::supervise;
use bus::price_cache::{run_price_cache, PriceCacheConfig, CACHE_ERRORS};
use bus::RedisLink;

/// The running sources, their statistics and the simulators standing in for venues.
pub(super) struct Sources {
    pub tasks: Vec<JoinHandle<()>>,
    pub ibkr_sim: Option<IbkrSim>,
    pub ibkr_stats: Arc<IbkrStats>,
    pub tastytrade_sim: Option<TastytradeSim>,
    pub tastytrade_stats: Arc<TastytradeStats>,
    pub binance_sim: Option<BinanceSim>,
    pub binance_stats: Arc<BinanceStats>,
    /// The Binance REST root and keys the source uses (the engine trades there).
    pub binance_rest: Option<(String, streaming::binance::rest::Keys)>,
}

impl Sources {
    /// `orders`: where the Binance user stream's order updates go (the engine).
    pub async fn start(
        cfg: &Config,
        pipeline: &Pipeline,
        cancel: &CancellationToken,
        orders: Option<Sender<OrderFeed>>,
    ) -> Result<Self, AppError> {
        let mut s = Sources {
            tasks: Vec::new(),
            ibkr_sim: None,
            ibkr_stats: Arc::default(),
            tastytrade_sim: None,
            tastytrade_stats: Arc::default(),
            binance_sim: None,
            binance_stats: Arc::default(),
            binance_rest: None,
        };
        if cfg.synthetic.enabled {
            s.tasks
                .push(start_synthetic(cfg, pipeline.sender(), cancel.clone()));
        }
        if cfg.ibkr.enabled {
            let (task, sim) =
                start_ibkr(cfg, pipeline.sender(), s.ibkr_stats.clone(), cancel.clone()).await?;
            s.tasks.push(task);
            s.ibkr_sim = sim;
        }
        if cfg.tastytrade.enabled {
            let (task, sim) = start_tastytrade(
                cfg,
                pipeline.sender(),
                s.tastytrade_stats.clone(),
                cancel.clone(),
            )
            .await?;
            s.tasks.push(task);
            s.tastytrade_sim = sim;
        }
        if cfg.binance.enabled {
            let (task, sim, rest) = start_binance(
                cfg,
                pipeline.sender(),
                s.binance_stats.clone(),
                cancel.clone(),
                orders,
            )
            .await?;
            s.tasks.push(task);
            s.binance_sim = sim;
            s.binance_rest = Some(rest);
        }
        Ok(s)
    }
}

fn start_synthetic(
    cfg: &Config,
    tx: Sender<BrokerEvent>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let s = cfg.synthetic.clone();
    tracing::info!(
        rate = s.rate,
        accounts = s.accounts,
        seed = s.seed,
        "starting the synthetic source"
    );
    let token = cancel.clone();
    tokio::spawn(supervise("synthetic", cancel, move || {
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
    }))
}

/// The IBKR source: the configured Client Portal gateway, else the in-process
/// simulator (returned so it lives as long as the app).
async fn start_ibkr(
    cfg: &Config,
    tx: Sender<BrokerEvent>,
    stats: Arc<IbkrStats>,
    cancel: CancellationToken,
) -> Result<(JoinHandle<()>, Option<IbkrSim>), AppError> {
    let (url, sim) = match &cfg.ibkr.gateway_url {
        Some(url) => {
            tracing::info!(gateway = %url, "streaming from the IBKR Client Portal gateway");
            (url.expose().to_owned(), None)
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
            (sim.url(), Some(sim))
        }
    };
    let mut ibkr = IbkrConfig::new(url);
    ibkr.accept_invalid_certs = cfg.ibkr.accept_invalid_certs;
    ibkr.positions_refresh = cfg.ibkr.positions_refresh;
    let token = cancel.clone();
    let task = tokio::spawn(supervise("ibkr", cancel, move || {
        let (ibkr, tx, token, stats) = (ibkr.clone(), tx.clone(), token.clone(), stats.clone());
        async move {
            if let Err(err) = run_ibkr(ibkr, tx, stats, token).await {
                tracing::error!(error = %err, "IBKR source failed");
            }
        }
    }));
    Ok((task, sim))
}

/// The Tastytrade source: the real endpoints with credentials, else the in-process
/// simulator (returned so it lives as long as the app).
async fn start_tastytrade(
    cfg: &Config,
    tx: Sender<BrokerEvent>,
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
    tx: Sender<BrokerEvent>,
    stats: Arc<BinanceStats>,
    cancel: CancellationToken,
    orders: Option<Sender<OrderFeed>>,
) -> Result<
    (
        JoinHandle<()>,
        Option<BinanceSim>,
        (String, streaming::binance::rest::Keys),
    ),
    AppError,
> {
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
    client.orders = orders;
    let rest = (client.rest_url.clone(), client.keys.clone());
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
    Ok((task, sim, rest))
}

/// The sources this configuration runs, with their silence windows.
pub(super) fn configured_sources(cfg: &Config) -> Vec<(streaming::Broker, Duration)> {
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
