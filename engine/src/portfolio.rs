//! The hourly portfolio snapshots: every account valued on the hour (UTC) at the
//! engine's marks and written to `portfolio_snapshots`, and after downtime the hours
//! missed rebuilt from the ledger (balances and realized PnL exact, positions replayed
//! from their bookings, valued at each symbol's last fill before the hour). Writing an
//! hour twice changes nothing, so a restart in the middle of one is harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use database::ledger::LedgerError;
use database::portfolio::{self, Snapshot, Standing};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use streaming::binance::prices::Prices;
use tokio_util::sync::CancellationToken;
use trading::evaluate::evaluate;

use super::risk_loop::num;

pub const SNAPSHOTS: &str = "greekstream_portfolio_snapshots_total";
pub const SNAPSHOT_SECONDS: &str = "greekstream_portfolio_snapshot_seconds";

/// What time it is (the wall clock in service; a paused clock in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How far back a start-up back-fills at most.
pub const BACKFILL_LIMIT: TimeDelta = TimeDelta::days(7);

/// `s` valued at `mark_of` as the `hour`'s row (`marks`: `LIVE` or `LAST_FILL`).
pub fn snapshot(
    s: &Standing,
    hour: DateTime<Utc>,
    mark_of: impl Fn(&str) -> Option<Decimal>,
    marks: &'static str,
) -> Snapshot {
    let e = evaluate(&s.account, mark_of);
    let positions: Vec<_> = s
        .account
        .positions
        .iter()
        .zip(&e.positions)
        .map(|(p, v)| {
            json!({"id": &*p.id, "symbol": &*p.symbol, "side": p.position.side.as_str(),
                   "quantity": num(p.position.quantity), "entryPrice": num(p.position.entry_price),
                   "mark": num(v.mark), "unrealizedPnl": num(v.unrealized)})
        })
        .collect();
    Snapshot {
        account: s.account.id.to_string(),
        hour,
        balance: e.metrics.balance,
        equity: e.metrics.equity,
        unrealized: e.metrics.unrealized,
        realized: s.realized,
        realized_today: s.realized_today,
        exposure: e.metrics.notional,
        margin_ratio: e.metrics.margin_ratio,
        positions: serde_json::Value::Array(positions),
        marks,
    }
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Every account now, valued at `prices`' marks, as the `hour`'s rows; written.
pub async fn write_live(
    pool: &PgPool,
    prices: Option<&Prices>,
    hour: DateTime<Utc>,
) -> Result<u64, LedgerError> {
    let started = std::time::Instant::now();
    let standings = portfolio::standings_now(pool).await?;
    let mark_of = |s: &str| prices.and_then(|p| p.get(s)).and_then(|e| e.mark);
    let rows: Vec<Snapshot> = standings
        .iter()
        .map(|s| snapshot(s, hour, mark_of, "LIVE"))
        .collect();
    let n = portfolio::write(pool, &rows).await?;
    metrics::counter!(SNAPSHOTS, "marks" => "LIVE").increment(n);
    metrics::histogram!(SNAPSHOT_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(n)
}

/// The hour `hour` rebuilt from the ledger and written.
pub async fn write_backfill(pool: &PgPool, hour: DateTime<Utc>) -> Result<u64, LedgerError> {
    let (standings, marks) = portfolio::standings_at(pool, hour).await?;
    let rows: Vec<Snapshot> = standings
        .iter()
        .map(|s| snapshot(s, hour, |sym| marks.get(sym).copied(), "LAST_FILL"))
        .collect();
    let n = portfolio::write(pool, &rows).await?;
    metrics::counter!(SNAPSHOTS, "marks" => "LAST_FILL").increment(n);
    Ok(n)
}

/// How late after the hour a snapshot is still taken live; later, the hour is
/// rebuilt from the ledger instead (valued at the last fills before it).
pub const LIVE_GRACE: TimeDelta = TimeDelta::minutes(1);

/// Runs until `cancel`: first the hours missed since the last written one (at most
/// [`BACKFILL_LIMIT`] back; none on a database that never had one), then one
/// snapshot on every hour. A failed write is logged and retried a minute later.
pub async fn run_hourly(
    pool: PgPool,
    prices: Option<Arc<Prices>>,
    clock: Clock,
    cancel: CancellationToken,
) {
    metrics::counter!(SNAPSHOTS, "marks" => "LIVE").increment(0);
    metrics::counter!(SNAPSHOTS, "marks" => "LAST_FILL").increment(0);
    let mut started = false;
    let mut written: Option<DateTime<Utc>> = None;
    loop {
        let now = clock();
        let hour = floor_hour(now);
        if !started {
            match backfill(&pool, hour).await {
                Ok(last) => {
                    written = last;
                    started = true;
                }
                Err(e) => tracing::warn!(error = %e, "portfolio back-fill failed; retrying"),
            }
        }
        if started && written.is_none_or(|w| w < hour) {
            let r = if now - hour <= LIVE_GRACE {
                write_live(&pool, prices.as_deref(), hour).await
            } else if written.is_some() {
                write_backfill(&pool, hour).await
            } else {
                // A database that never had a snapshot starts at the next hour.
                Ok(0)
            };
            match r {
                Ok(n) => {
                    tracing::info!(hour = %hour, accounts = n, "portfolio snapshot written");
                    written = Some(hour);
                }
                Err(e) => {
                    tracing::warn!(error = %e, hour = %hour, "portfolio snapshot not written; retrying")
                }
            }
        }
        let next = match written {
            Some(w) if w >= hour => hour + TimeDelta::hours(1),
            _ => now + TimeDelta::minutes(1),
        };
        let wait = (next - clock()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Writes the hours after the last written one and before `current` from the ledger;
/// the last hour now written (`None`: nothing was ever written, nothing back-filled).
async fn backfill(
    pool: &PgPool,
    current: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, LedgerError> {
    let Some(last) = portfolio::last_hour(pool).await? else {
        return Ok(None);
    };
    let mut h = (last + TimeDelta::hours(1)).max(current - BACKFILL_LIMIT);
    let mut done = last;
    while h < current {
        let n = write_backfill(pool, h).await?;
        tracing::info!(hour = %h, accounts = n, "portfolio hour back-filled from the ledger");
        done = h;
        h += TimeDelta::hours(1);
    }
    Ok(Some(done))
}
