//! `greekstream order …`: the executor from the command line, against the configured
//! Binance account and database — one order placed (`place`), or one reconciliation
//! (`reconcile`) — printing one JSON object. For operators (put right what a dead
//! engine left: `reconcile`) and for the crash tests, which kill this process in the
//! middle of an order. Bad input or a refusal: `{"error", "code"}` and exit 2.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use database::orders::{OrderKind, OrderRow};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use trading::position::OrderSide;

use crate::app::connect_and_migrate;
use crate::config::Config;
use bus::outbox::outbox;
use engine::execution::{ExecutionConfig, Executor, PlaceOrder};
use engine::prices::{PriceChain, PriceChainConfig};

#[derive(Debug, Clone, Subcommand)]
pub enum OrderCommand {
    /// Places one order for a sub-account; prints the order as the venue left it.
    Place(PlaceArgs),
    /// Reconciles the book with the venue once; prints what it did.
    Reconcile,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SideArg {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Args)]
pub struct PlaceArgs {
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub symbol: String,
    #[arg(long, value_enum)]
    pub side: SideArg,
    #[arg(long)]
    pub quantity: Decimal,
    /// A limit price; without it, a market order.
    #[arg(long)]
    pub price: Option<Decimal>,
    #[arg(long, default_value = "10")]
    pub leverage: Decimal,
    #[arg(long)]
    pub reduce_only: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: &'static str,
    pub message: String,
}

fn fail(code: &'static str, message: impl ToString) -> CliError {
    CliError {
        code,
        message: message.to_string(),
    }
}

fn order_json(o: &OrderRow) -> Value {
    json!({
        "id": o.id, "clientOrderId": o.client_order_id, "symbol": o.symbol,
        "state": o.order.state.as_str(), "venueOrderId": o.order.venue_id,
        "filled": o.order.filled.to_string(), "rejectCode": o.order.reject_code,
        "rejectMessage": o.order.reject_message,
    })
}

pub async fn run(cfg: &Config, cmd: &OrderCommand) -> Result<Value, CliError> {
    let keys = cfg.binance.keys.clone().ok_or_else(|| {
        fail(
            "NO_VENUE",
            "no Binance keys (GS_BINANCE_API_KEY, GS_BINANCE_API_SECRET): nothing to trade on",
        )
    })?;
    let cancel = CancellationToken::new();
    let pool = connect_and_migrate(cfg, "greekstream-order", 2, &cancel)
        .await
        .map_err(|e| fail("DATABASE_ERROR", e))?;
    let rest_url = cfg.binance.rest_url.expose();
    let rest = streaming::binance::rest::Rest::new(rest_url, keys, Duration::from_secs(10))
        .map_err(|e| fail("EXCHANGE_ERROR", e))?;
    let prices =
        PriceChain::new(PriceChainConfig::default()).with_rest(reqwest::Client::new(), rest_url);
    // One-shot: the events of this run are not published (the service publishes its own).
    let (out, _events) = outbox(&cfg.binance.redis_prefix, 10_000, 0);
    let exec = Executor::start(
        ExecutionConfig {
            house: cfg.house_positions.clone(),
            journal_dir: cfg.order_journal_dir.clone(),
            journal_sync: cfg.order_journal_sync,
            // The service's lock: an operator's run never overlaps the engine's.
            lock: redis::Client::open(cfg.redis_url.expose())
                .ok()
                .map(|client| engine::reconcile::ReconcileLock {
                    client,
                    key: format!("{}lock:reconcile", cfg.binance.redis_prefix),
                    ttl: Duration::from_secs(30),
                }),
            ..ExecutionConfig::default()
        },
        pool,
        rest,
        prices,
        None,
        out,
        None,
        cancel,
    )
    .await
    .map_err(|(e, _)| fail(e.code(), e))?;
    exec.sync_clock()
        .await
        .map_err(|e| fail("EXCHANGE_ERROR", e))?;
    match cmd {
        OrderCommand::Place(a) => {
            let row = exec
                .place(PlaceOrder {
                    sub_account_id: a.account.clone(),
                    symbol: a.symbol.clone(),
                    side: match a.side {
                        SideArg::Buy => OrderSide::Buy,
                        SideArg::Sell => OrderSide::Sell,
                    },
                    kind: if a.price.is_some() {
                        OrderKind::Limit
                    } else {
                        OrderKind::Market
                    },
                    quantity: a.quantity,
                    price: a.price,
                    leverage: a.leverage,
                    reduce_only: a.reduce_only,
                    origin: "API".into(),
                    request_id: None,
                    position_id: None,
                    close_reason: None,
                })
                .await
                .map_err(|e| fail(e.code(), e))?;
            Ok(order_json(&row))
        }
        OrderCommand::Reconcile => {
            let r = exec.reconcile().await.map_err(|e| fail(e.code(), e))?;
            Ok(json!({
                "ordersJournaled": r.orders_journaled,
                "ordersChecked": r.orders_checked, "ordersChanged": r.orders_changed,
                "orphansCancelled": r.orphans_cancelled, "foreignOrders": r.foreign_orders,
                "virtualCloses": r.virtual_closes, "fillsRecovered": r.fills_recovered,
                "desynced": r.desynced.iter().map(|(s, e, b)| json!({"symbol": s, "exchange": e.to_string(), "book": b.to_string()})).collect::<Vec<_>>(),
            }))
        }
    }
}
