//! The trading engine's IO around the pure `trading` crate: the risk loop
//! ([`risk_loop`]) and the price an order is checked at ([`prices`]). Storage is
//! `database::ledger`; the gateway's Redis is written through `bus::outbox`.

pub mod closing;
pub mod execution;
pub mod prices;
pub mod reconcile;
pub mod risk_loop;

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use sqlx::PgPool;
use streaming::binance::prices::Prices;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::outbox::Outbox;
use risk_loop::{run_risk_loop, RiskInput, RiskLoopConfig};

/// Loads every sub-account from the ledger (retrying until the database answers: the
/// loop never runs on a partial book), then runs the risk loop.
pub async fn run_engine_risk_loop(
    pool: PgPool,
    prices: Option<Arc<Prices>>,
    inputs: mpsc::Receiver<RiskInput>,
    out: Outbox,
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
        cancel,
    )
    .await;
}
