//! The risk loop: keeps every sub-account valued as marks move and books change,
//! and tells the gateway — `pnl_update` per position and `margin_update` per account
//! on each valuation, `margin_warning` once per entry into the warning zone, and the
//! `pms:risk:{subAccountId}` snapshot (js-gateway §5.1, §8). The decisions (what to
//! value, when, whether to warn) are `trading::monitor`'s; this task feeds it time,
//! marks and books, and turns its reports into Redis writes through the [`Outbox`].
//!
//! Marks come from the in-process Binance prices ([`Prices`]), read for the symbols
//! the watched accounts hold as soon as a price changes (the newer of the mark price
//! and the book mid, as the JS system did), or are sent in as [`RiskInput::Mark`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use streaming::binance::prices::{PriceEntry, Prices};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trading::evaluate::{Account, Evaluation};
use trading::monitor::{Config, Monitor, Report};
use trading::risk::AccountStatus;

use bus::outbox::Outbox;

pub const VALUATIONS: &str = "greekstream_risk_valuations_total";
pub const WARNINGS: &str = "greekstream_risk_margin_warnings_total";

/// How long a risk snapshot lives in Redis without being rewritten.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub enum RiskInput {
    /// The account as it now is, after a fill, a close, a balance or rules change.
    Book(Account),
    /// The account no longer exists.
    Remove(String),
    Mark {
        symbol: String,
        price: Decimal,
    },
}

/// The risk loop's request: value this account again and act. `marks`: the loop's,
/// by symbol (the executor's own stream is read for a symbol missing here).
#[derive(Debug, Clone)]
pub struct Liquidate {
    pub account: Arc<str>,
    pub marks: Vec<(Arc<str>, Decimal)>,
}

impl Liquidate {
    /// Whether the loop's valuation `e` calls for the liquidator: an ADL tier or
    /// insolvency, or an account marked liquidated that still holds positions.
    pub fn wanted(e: &Evaluation) -> Option<Self> {
        let a = &e.account;
        let stopped_half_way = a.status == AccountStatus::Liquidated && !a.positions.is_empty();
        if e.tier < trading::evaluate::Tier::Adl2 && !stopped_half_way {
            return None;
        }
        Some(Self {
            account: a.id.clone(),
            marks: a
                .positions
                .iter()
                .zip(&e.positions)
                .map(|(p, v)| (p.symbol.clone(), v.mark))
                .collect(),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RiskLoopConfig {
    pub monitor: Config,
}

/// A JSON number for the gateway (decision 7: numbers, not strings).
pub fn num(d: Decimal) -> Value {
    d.to_f64().map_or(Value::Null, Value::from)
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `pnl_update` for each position of the evaluation.
pub fn pnl_updates(e: &Evaluation) -> impl Iterator<Item = Value> + '_ {
    e.account
        .positions
        .iter()
        .zip(&e.positions)
        .map(move |(p, v)| {
            json!({
                "subAccountId": &*e.account.id,
                "positionId": &*p.id,
                "symbol": &*p.symbol,
                "side": p.position.side.as_str(),
                "entryPrice": num(p.position.entry_price),
                "markPrice": num(v.mark),
                "quantity": num(p.position.quantity),
                "unrealizedPnl": num(v.unrealized),
                "liquidationPrice": num(v.liquidation_price),
                "margin": num(p.position.margin()),
                "pnlPercent": num(v.pnl_percent),
            })
        })
}

/// The fields `margin_update` and the snapshot share. `equity` is floored at zero as
/// the JS reported it (`equityRaw` in the snapshot is not); `availableMargin` is the
/// one meaning the engine uses everywhere: equity − maintenance (docs/trading.md).
fn margin_fields(e: &Evaluation) -> serde_json::Map<String, Value> {
    let m = &e.metrics;
    let mut f = serde_json::Map::new();
    f.insert("subAccountId".into(), json!(&*e.account.id));
    f.insert("equity".into(), num(m.equity.max(Decimal::ZERO)));
    f.insert("balance".into(), num(m.balance));
    f.insert("unrealizedPnl".into(), num(m.unrealized));
    f.insert("marginUsed".into(), num(m.initial_margin));
    f.insert("availableMargin".into(), num(m.available));
    f.insert("totalExposure".into(), num(m.notional));
    f.insert("maintenanceMargin".into(), num(m.maintenance));
    f.insert("marginRatio".into(), num(m.margin_ratio));
    f.insert(
        "accountLiqPrice".into(),
        e.account_liquidation_price.map_or(Value::Null, num),
    );
    f.insert("positionCount".into(), json!(e.positions.len()));
    f
}

pub fn margin_update(e: &Evaluation) -> Value {
    Value::Object(margin_fields(e))
}

pub fn margin_warning(e: &Evaluation) -> Value {
    let pct = (e.metrics.margin_ratio * Decimal::ONE_HUNDRED).round_dp(1);
    json!({
        "subAccountId": &*e.account.id,
        "marginRatio": num(e.metrics.margin_ratio),
        "message": format!("Margin ratio {pct}% — approaching liquidation"),
    })
}

/// The `pms:risk:{id}` snapshot: the union of the JS writers' fields (§8). An account
/// without positions gets one too, with `positions: []`.
pub fn snapshot(e: &Evaluation, now_ms: i64) -> Value {
    let mut f = margin_fields(e);
    let a = &e.account;
    f.insert("timestamp".into(), json!(now_ms));
    f.insert("status".into(), json!(a.status.as_str()));
    f.insert("liquidationMode".into(), json!(a.liquidation_mode.as_str()));
    f.insert("liquidationThreshold".into(), num(a.threshold));
    f.insert("equityRaw".into(), num(e.metrics.equity));
    let positions: Vec<Value> = a
        .positions
        .iter()
        .zip(&e.positions)
        .map(|(p, v)| {
            json!({
                "id": &*p.id,
                "symbol": &*p.symbol,
                "side": p.position.side.as_str(),
                "entryPrice": num(p.position.entry_price),
                "markPrice": num(v.mark),
                "quantity": num(p.position.quantity),
                "notional": num(p.position.notional()),
                "leverage": num(p.position.leverage),
                "margin": num(p.position.margin()),
                "liquidationPrice": num(v.liquidation_price),
                "unrealizedPnl": num(v.unrealized),
                "pnlPercent": num(v.pnl_percent),
                "babysitterExcluded": p.babysitter_excluded,
                "openedAt": p.opened_at,
            })
        })
        .collect();
    f.insert("positions".into(), Value::Array(positions));
    Value::Object(f)
}

fn publish(out: &Outbox, r: &Report, liquidations: Option<&mpsc::Sender<Liquidate>>) {
    publish_all(out, std::slice::from_ref(r), liquidations);
}

/// One tick's reports: the liquidator is asked first for every account past its
/// threshold (it reads the book again and decides; a full queue drops the ask, the
/// next valuation asks again), then the events go out — a crossing waits for no
/// other account's events.
fn publish_all(out: &Outbox, reports: &[Report], liquidations: Option<&mpsc::Sender<Liquidate>>) {
    if let Some(tx) = liquidations {
        for ask in reports
            .iter()
            .filter_map(|r| Liquidate::wanted(&r.evaluation))
        {
            let _ = tx.try_send(ask);
        }
    }
    for r in reports {
        publish_events(out, r);
    }
}

fn publish_events(out: &Outbox, r: &Report) {
    let e = &r.evaluation;
    let now = wall_ms();
    if r.events {
        metrics::counter!(VALUATIONS).increment(1);
        for p in pnl_updates(e) {
            out.event("pnl_update", p, now);
        }
        out.event("margin_update", margin_update(e), now);
    }
    if r.warning {
        metrics::counter!(WARNINGS).increment(1);
        out.event("margin_warning", margin_warning(e), now);
    }
    if r.snapshot {
        out.set(
            &format!("risk:{}", e.account.id),
            &snapshot(e, now),
            SNAPSHOT_TTL,
        );
    }
}

/// The mark the JS system used: whichever of the mark price and the book mid
/// arrived last, with its venue time.
pub fn latest(entry: &PriceEntry) -> Option<(Decimal, i64)> {
    let mark = entry.mark.map(|m| (m, entry.mark_time));
    let mid = entry.mid().map(|m| (m, entry.book_time));
    match (mark, mid) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Runs until `cancel` or until every sender of `inputs` is gone.
pub async fn run_risk_loop(
    config: RiskLoopConfig,
    initial: Vec<Account>,
    prices: Option<Arc<Prices>>,
    mut inputs: mpsc::Receiver<RiskInput>,
    out: Outbox,
    liquidations: Option<mpsc::Sender<Liquidate>>,
    cancel: CancellationToken,
) {
    let ask = liquidations.as_ref();
    metrics::counter!(VALUATIONS).increment(0);
    metrics::counter!(WARNINGS).increment(0);
    let start = Instant::now();
    let now = || start.elapsed();
    let mut monitor = Monitor::new(config.monitor);
    for a in initial {
        publish(&out, &monitor.upsert(a, now()), ask);
    }
    // The venue time of the last mark taken from `prices`, per symbol.
    let mut seen: HashMap<String, i64> = HashMap::new();
    loop {
        let due = monitor.next_due().map(|d| start + d);
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { return };
                match input {
                    RiskInput::Book(a) => publish(&out, &monitor.upsert(a, now()), ask),
                    RiskInput::Remove(id) => {
                        monitor.remove(&id);
                    }
                    RiskInput::Mark { symbol, price } => {
                        publish_all(&out, &monitor.tick(&symbol, price, now()), ask);
                    }
                }
            }
            _ = async { prices.as_ref().expect("guarded").changed().await }, if prices.is_some() => {
                let prices = prices.as_ref().expect("guarded");
                let fresh: Vec<(String, Decimal, i64)> = monitor
                    .symbols()
                    .filter_map(|s| {
                        let (price, at) = latest(&prices.get(s)?)?;
                        (seen.get(s) != Some(&at)).then(|| (s.to_owned(), price, at))
                    })
                    .collect();
                for (symbol, price, at) in fresh {
                    publish_all(&out, &monitor.tick(&symbol, price, now()), ask);
                    seen.insert(symbol, at);
                }
            }
            _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                publish_all(&out, &monitor.due(now()), ask);
            }
            _ = cancel.cancelled() => return,
        }
    }
}
