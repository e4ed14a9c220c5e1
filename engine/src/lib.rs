//! The trading engine's IO around the pure `trading` crate: the risk loop
//! ([`risk_loop`]) and the price an order is checked at ([`prices`]). Storage is
//! `database::ledger`; the gateway's Redis is written through `bus::outbox`.

pub mod batch;
mod book;
mod book_cache;
mod booking;
pub mod closing;
mod config;
pub mod execution;
mod feed;
pub mod journal;
pub mod liquidator;
pub mod portfolio;
pub mod prices;
pub mod reads;
pub mod reconcile;
mod replies;
mod request;
pub mod risk_loop;
mod stats;
pub mod venue_closes;
mod write_ahead;

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use sqlx::PgPool;
use streaming::binance::prices::Prices;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use bus::outbox::Outbox;
use risk_loop::{run_risk_loop, RiskInput, RiskLoopConfig};

/// Loads every sub-account from the ledger (retrying until the database answers: the
/// loop never runs on a partial book), then runs the risk loop.
pub async fn run_engine_risk_loop(
    pool: PgPool,
    prices: Option<Arc<Prices>>,
    inputs: mpsc::Receiver<RiskInput>,
    out: Outbox,
    liquidations: Option<mpsc::Sender<risk_loop::Liquidate>>,
    cancel: CancellationToken,
) {
    let mut retry = streaming::retry::database_start();
    let accounts = loop {
        match database::ledger::all_watched(&pool).await {
            Ok(a) => break a,
            Err(e) => {
                let wait = retry.next_backoff().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, code = e.code(), retry_in_ms = wait.as_millis() as u64,
                    "risk loop cannot load the sub-accounts yet");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    };
    tracing::info!(accounts = accounts.len(), "risk loop watching");
    run_risk_loop(
        RiskLoopConfig::default(),
        accounts,
        prices,
        inputs,
        out,
        liquidations,
        cancel,
    )
    .await;
}

/// Starts the risk side: the risk loop (its input returned), the hourly portfolio
/// snapshots, and — given the executor (trading on) — the liquidator the loop asks
/// when an account is past its threshold.
pub fn start_risk(
    pool: PgPool,
    prices: Arc<Prices>,
    out: Outbox,
    executor: Option<Arc<tokio::sync::OnceCell<execution::Executor>>>,
    cancel: &CancellationToken,
) -> (mpsc::Sender<RiskInput>, Vec<tokio::task::JoinHandle<()>>) {
    let mut tasks = Vec::new();
    let (tx, rx) = mpsc::channel(1024);
    let liquidations = executor.map(|ready| {
        let (ask, asks) = mpsc::channel(256);
        tasks.push(tokio::spawn(liquidator::run_liquidator(
            ready,
            asks,
            cancel.clone(),
        )));
        ask
    });
    tasks.push(tokio::spawn(portfolio::run_hourly(
        pool.clone(),
        Some(prices.clone()),
        Arc::new(chrono::Utc::now),
        cancel.clone(),
    )));
    tasks.push(tokio::spawn(run_engine_risk_loop(
        pool,
        Some(prices),
        rx,
        out,
        liquidations,
        cancel.clone(),
    )));
    (tx, tasks)
}

/// What the service hands the executor task.
pub struct ExecutorSetup {
    pub pool: PgPool,
    pub rest_url: String,
    pub keys: streaming::binance::rest::Keys,
    pub redis_url: String,
    pub prefix: String,
    pub house: std::collections::HashMap<String, rust_decimal::Decimal>,
    pub prices: Arc<Prices>,
    pub outbox: Outbox,
    pub risk: Option<mpsc::Sender<RiskInput>>,
    pub feed: mpsc::Receiver<streaming::binance::OrderFeed>,
    /// Set once the executor is up (it has read the venue and reconciled).
    pub ready: Arc<tokio::sync::OnceCell<execution::Executor>>,
    /// Told when recovery is over (`/health` says RECOVERING until then).
    pub status: Arc<EngineStatus>,
    pub journal_dir: std::path::PathBuf,
    pub journal_sync: journal::JournalSync,
}

impl std::fmt::Debug for ExecutorSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys or the Redis URL.
        f.debug_struct("ExecutorSetup")
            .field("rest_url", &self.rest_url)
            .field("house", &self.house)
            .finish()
    }
}

/// Starts the executor (retrying until the venue answers), recovers — reconciles
/// the orders and positions a previous run left — and only then takes the user
/// stream's updates, measures the clock and reconciles every minute.
pub async fn run_executor(setup: ExecutorSetup, cancel: CancellationToken) {
    let ExecutorSetup {
        pool,
        rest_url,
        keys,
        redis_url,
        prefix,
        house,
        prices,
        outbox,
        risk,
        feed,
        ready,
        status,
        journal_dir,
        journal_sync,
    } = setup;
    let rest = match streaming::binance::rest::Rest::new(&rest_url, keys, Duration::from_secs(5)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the executor cannot build its REST client");
            return;
        }
    };
    let prefix_for_lock = prefix.clone();
    let mut chain = prices::PriceChain::new(prices::PriceChainConfig {
        prefix,
        ..Default::default()
    })
    .with_stream(prices.clone())
    .with_rest(reqwest::Client::new(), &rest_url);
    if let Ok(client) = redis::Client::open(redis_url.as_str()) {
        chain = chain.with_cache(client);
    }
    let lock =
        redis::Client::open(redis_url.as_str())
            .ok()
            .map(|client| reconcile::ReconcileLock {
                client,
                key: format!("{prefix_for_lock}lock:reconcile"),
                ttl: Duration::from_secs(30),
            });
    let config = execution::ExecutionConfig {
        house,
        lock,
        journal_dir,
        journal_sync,
        ..Default::default()
    };
    let mut retry = streaming::retry::task_restart();
    let mut chain = Some(chain);
    let executor = loop {
        let attempt = execution::Executor::start(
            config.clone(),
            pool.clone(),
            rest.clone(),
            chain.take().expect("kept until started"),
            Some(prices.clone()),
            outbox.clone(),
            risk.clone(),
            cancel.clone(),
        )
        .await;
        match attempt {
            Ok(e) => break e,
            Err((e, back)) => {
                chain = Some(back);
                let wait = retry.next_backoff().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the executor cannot read the venue yet");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    };
    if let Err(e) = executor.sync_clock().await {
        tracing::warn!(error = %e, "venue clock not measured at start-up");
    }
    // Commands wait (RECOVERING) until one reconciliation has run to its end: a lock
    // another engine holds, an unreachable Redis or venue are waited out, not skipped.
    let mut retry = streaming::retry::task_restart();
    loop {
        let why = match executor.reconcile().await {
            Ok(r) if !r.skipped => {
                tracing::info!(
                    checked = r.orders_checked,
                    changed = r.orders_changed,
                    orphans = r.orphans_cancelled,
                    desynced = r.desynced.len(),
                    "recovered: the book is reconciled with the venue"
                );
                break;
            }
            Ok(_) => "another holds the reconciliation lock, or Redis cannot be asked".to_owned(),
            Err(e) => e.to_string(),
        };
        let wait = retry.next_backoff().unwrap_or(Duration::from_secs(30));
        tracing::warn!(reason = %why, retry_in_ms = wait.as_millis() as u64,
            "start-up reconciliation not done yet: still RECOVERING");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
    let _ = ready.set(executor.clone());
    status.recovered();
    outbox.engine_event(
        "recovery_complete",
        serde_json::json!({"ts": chrono::Utc::now().timestamp_millis()}),
    );
    tokio::spawn(executor.clone().run_clock());
    tokio::spawn(executor.clone().run_reconciler());
    executor.run_feed(feed).await;
}

/// Whether the trading engine has finished recovering (set by the executor).
#[derive(Debug)]
pub struct EngineStatus {
    recovering: std::sync::atomic::AtomicBool,
}

impl EngineStatus {
    /// `recovering`: true when an engine runs and has yet to reconcile.
    pub fn new(recovering: bool) -> Self {
        Self {
            recovering: recovering.into(),
        }
    }

    pub fn recovered(&self) {
        self.recovering
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_recovering(&self) -> bool {
        self.recovering.load(std::sync::atomic::Ordering::Relaxed)
    }
}
