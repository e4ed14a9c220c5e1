//! The hourly portfolio snapshots (`portfolio_snapshots`): every account as it stands
//! now, or as it stood at a past hour rebuilt from the ledger, and the rows written
//! once per (account, hour).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use trading::evaluate::{Account, OpenPosition};
use trading::position::{apply_fill, Fill, Position};
use trading::risk::RiskRules;

use crate::ledger::{self, LedgerError};
use trading::position::OrderSide;

/// The balance reasons that are trading results (what the daily-loss check counts).
const TRADING: &str = "('TRADE_PNL', 'FEE', 'LIQUIDATION', 'ADL', 'DESYNC_CLOSE', 'RECONCILE')";

/// An account with what it has realized: in all, and since 00:00 UTC of the day.
#[derive(Debug, Clone)]
pub struct Standing {
    pub account: Account,
    pub realized: Decimal,
    pub realized_today: Decimal,
}

/// One `portfolio_snapshots` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub account: String,
    pub hour: DateTime<Utc>,
    pub balance: Decimal,
    pub equity: Decimal,
    pub unrealized: Decimal,
    pub realized: Decimal,
    pub realized_today: Decimal,
    pub exposure: Decimal,
    pub margin_ratio: Decimal,
    pub positions: serde_json::Value,
    /// `LIVE` or `LAST_FILL`.
    pub marks: &'static str,
}

/// Every account as it stands now, with its realized totals: three reads whatever the
/// number of accounts (the per-day totals are `realized_daily`'s, kept by a trigger).
pub async fn standings_now(pool: &PgPool) -> Result<Vec<Standing>, LedgerError> {
    let rows: Vec<(String, Decimal, Decimal, String, String, Decimal, Decimal)> = sqlx::query_as(
        "SELECT s.id::text, s.current_balance, s.maintenance_rate, s.status, s.liquidation_mode,
                coalesce((SELECT sum(d.amount) FROM realized_daily d WHERE d.sub_account_id = s.id), 0),
                coalesce((SELECT d.amount FROM realized_daily d WHERE d.sub_account_id = s.id
                           AND d.day = (now() AT TIME ZONE 'UTC')::date), 0)
           FROM sub_accounts s ORDER BY s.id",
    )
    .fetch_all(pool)
    .await?;
    let mut held: HashMap<String, Vec<OpenPosition>> = HashMap::new();
    for p in ledger::open_positions(pool, None).await? {
        held.entry(p.sub_account_id.clone())
            .or_default()
            .push(OpenPosition {
                id: p.id.into(),
                symbol: p.symbol.into(),
                position: p.position,
                babysitter_excluded: p.babysitter_excluded,
                opened_at: p.opened_at.timestamp_millis(),
            });
    }
    rows.into_iter()
        .map(|(id, balance, rate, status, mode, realized, today)| {
            let positions = held.remove(&id).unwrap_or_default();
            Ok(Standing {
                account: account(id, balance, rate, &status, &mode, positions)?,
                realized,
                realized_today: today,
            })
        })
        .collect()
}

fn account(
    id: String,
    balance: Decimal,
    maintenance_rate: Decimal,
    status: &str,
    mode: &str,
    positions: Vec<OpenPosition>,
) -> Result<Account, LedgerError> {
    Ok(Account {
        id: id.into(),
        status: ledger::status(status)?,
        liquidation_mode: trading::evaluate::LiquidationMode::parse(mode)
            .ok_or_else(|| ledger::corrupt("liquidation_mode", mode))?,
        balance,
        maintenance_rate,
        threshold: RiskRules::default().liquidation_threshold,
        positions,
    })
}

/// Every account that existed at `hour`, as it stood then, rebuilt from the ledger:
/// its balance (initial + Σ changes before the hour), what it had realized, and its
/// positions alive at the hour with their quantity and entry replayed from their
/// bookings before it. With each symbol's last fill price before the hour (the marks a
/// back-fill values at).
pub async fn standings_at(
    pool: &PgPool,
    hour: DateTime<Utc>,
) -> Result<(Vec<Standing>, HashMap<String, Decimal>), LedgerError> {
    let rows: Vec<(String, Decimal, Decimal, String, String, Decimal, Decimal)> =
        sqlx::query_as(&format!(
            "SELECT s.id::text,
                    s.initial_balance + coalesce((SELECT sum(b.change_amount + b.absorbed)
                        FROM balance_logs b WHERE b.sub_account_id = s.id AND b.timestamp < $1), 0),
                    s.maintenance_rate, s.status, s.liquidation_mode,
                    coalesce((SELECT sum(b.change_amount) FROM balance_logs b
                               WHERE b.sub_account_id = s.id AND b.timestamp < $1
                                 AND b.reason IN {TRADING}), 0),
                    coalesce((SELECT sum(b.change_amount) FROM balance_logs b
                               WHERE b.sub_account_id = s.id AND b.timestamp < $1
                                 AND b.timestamp >= date_trunc('day', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                 AND b.reason IN {TRADING}), 0)
               FROM sub_accounts s WHERE s.created_at < $1 ORDER BY s.id"
        ))
        .bind(hour)
        .fetch_all(pool)
        .await?;
    // The positions alive at the hour and their bookings before it, in order.
    #[allow(clippy::type_complexity)]
    let bookings: Vec<(String, String, String, Decimal, String, Decimal, Decimal)> =
        sqlx::query_as(
            "SELECT p.id::text, p.sub_account_id::text, p.symbol, p.leverage,
                    t.side, t.quantity, t.price
               FROM virtual_positions p
               JOIN trade_executions t ON t.position_id = p.id AND t.timestamp < $1
              WHERE p.opened_at < $1 AND (p.closed_at IS NULL OR p.closed_at >= $1)
              ORDER BY p.id, t.timestamp, t.id",
        )
        .bind(hour)
        .fetch_all(pool)
        .await?;
    let mut held: HashMap<String, Vec<OpenPosition>> = HashMap::new();
    let mut current: Option<(String, String, String, Decimal, Option<Position>)> = None;
    let mut flush = |c: Option<(String, String, String, Decimal, Option<Position>)>| {
        if let Some((id, owner, symbol, _, Some(position))) = c {
            held.entry(owner).or_default().push(OpenPosition {
                id: id.into(),
                symbol: symbol.into(),
                position,
                babysitter_excluded: false,
                opened_at: 0,
            });
        }
    };
    for (id, owner, symbol, leverage, order_side, quantity, price) in bookings {
        if current.as_ref().is_none_or(|c| c.0 != id) {
            flush(current.take());
            current = Some((id, owner, symbol, leverage, None));
        }
        let c = current.as_mut().expect("set above");
        let fill = Fill {
            side: match order_side.as_str() {
                "BUY" => OrderSide::Buy,
                "SELL" => OrderSide::Sell,
                other => return Err(ledger::corrupt("side", other)),
            },
            quantity,
            price,
            leverage: c.3.max(Decimal::ONE),
        };
        c.4 = apply_fill(c.4.as_ref(), &fill)
            .map_err(|e| ledger::corrupt("booking", &e.to_string()))?
            .after;
    }
    flush(current.take());
    let marks: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT DISTINCT ON (symbol) symbol, price FROM trade_executions
          WHERE timestamp < $1 ORDER BY symbol, timestamp DESC, id",
    )
    .bind(hour)
    .fetch_all(pool)
    .await?;
    let standings = rows
        .into_iter()
        .map(|(id, balance, rate, status, mode, realized, today)| {
            let positions = held.remove(&id).unwrap_or_default();
            Ok(Standing {
                account: account(id, balance, rate, &status, &mode, positions)?,
                realized,
                realized_today: today,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok((standings, marks.into_iter().collect()))
}

/// Writes the rows; an (account, hour) already written is left as it is. How many
/// were new. One statement for all of them.
pub async fn write(pool: &PgPool, rows: &[Snapshot]) -> Result<u64, LedgerError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&Snapshot) -> Decimal| rows.iter().map(f).collect::<Vec<_>>();
    let r = sqlx::query(
        "INSERT INTO portfolio_snapshots (sub_account_id, hour, balance, equity, unrealized_pnl,
                realized_pnl, realized_today, exposure, margin_ratio, positions, marks)
         SELECT a::uuid, h, b, e, u, r, t, x, m, p::jsonb, k
           FROM UNNEST($1::text[], $2::timestamptz[], $3::numeric[], $4::numeric[], $5::numeric[],
                       $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[], $10::text[],
                       $11::text[]) AS v(a, h, b, e, u, r, t, x, m, p, k)
         ON CONFLICT (sub_account_id, hour) DO NOTHING",
    )
    .bind(rows.iter().map(|s| s.account.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.hour).collect::<Vec<_>>())
    .bind(col(|s| s.balance))
    .bind(col(|s| s.equity))
    .bind(col(|s| s.unrealized))
    .bind(col(|s| s.realized))
    .bind(col(|s| s.realized_today))
    .bind(col(|s| s.exposure))
    .bind(col(|s| s.margin_ratio))
    .bind(
        rows.iter()
            .map(|s| s.positions.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|s| s.marks).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// The latest hour written for any account.
pub async fn last_hour(pool: &PgPool) -> Result<Option<DateTime<Utc>>, LedgerError> {
    Ok(
        sqlx::query_scalar("SELECT max(hour) FROM portfolio_snapshots")
            .fetch_one(pool)
            .await?,
    )
}

/// One hourly (or daily: the last hour of each UTC day) point of an account's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub hour: DateTime<Utc>,
    pub balance: Decimal,
    pub equity: Decimal,
    pub unrealized: Decimal,
    pub realized: Decimal,
    pub realized_today: Decimal,
    pub exposure: Decimal,
    pub margin_ratio: Decimal,
    pub drawdown: Decimal,
    pub marks: String,
}

/// `account`'s snapshots in [from, to) through `pnl_history`, hourly or one a day.
pub async fn history(
    pool: &PgPool,
    account: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    daily: bool,
) -> Result<Vec<Point>, LedgerError> {
    if !ledger::is_uuid(account) {
        return Ok(Vec::new());
    }
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        DateTime<Utc>,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        String,
    )> = sqlx::query_as(
        "SELECT h.hour, h.balance, h.equity, h.unrealized_pnl, h.realized_pnl, h.realized_today,
                h.exposure, h.margin_ratio, h.drawdown, h.marks
           FROM pnl_history($1::uuid, $2, $3) h
          WHERE NOT $4 OR h.hour = (SELECT max(k.hour) FROM pnl_history($1::uuid, $2, $3) k
                                     WHERE (k.hour AT TIME ZONE 'UTC')::date = (h.hour AT TIME ZONE 'UTC')::date)
          ORDER BY h.hour",
    )
    .bind(account)
    .bind(from)
    .bind(to)
    .bind(daily)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Point {
            hour: r.0,
            balance: r.1,
            equity: r.2,
            unrealized: r.3,
            realized: r.4,
            realized_today: r.5,
            exposure: r.6,
            margin_ratio: r.7,
            drawdown: r.8,
            marks: r.9,
        })
        .collect())
}

/// One symbol's realized PnL of an account, from its fills: in [from, to) and since
/// 00:00 UTC. Gross is the positions' PnL before fees; fees are every fill's (opening
/// ones too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolPnl {
    pub symbol: String,
    pub gross: Decimal,
    pub fees: Decimal,
    pub gross_today: Decimal,
    pub fees_today: Decimal,
}

/// `account`'s realized PnL per symbol it ever traded (symbol order).
pub async fn by_symbol(
    pool: &PgPool,
    account: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SymbolPnl>, LedgerError> {
    if !ledger::is_uuid(account) {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, Decimal, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT symbol,
                coalesce(sum(realized_pnl) FILTER (WHERE timestamp >= $2 AND timestamp < $3), 0),
                coalesce(sum(fee) FILTER (WHERE timestamp >= $2 AND timestamp < $3), 0),
                coalesce(sum(realized_pnl) FILTER (WHERE timestamp >= date_trunc('day', now(), 'UTC')), 0),
                coalesce(sum(fee) FILTER (WHERE timestamp >= date_trunc('day', now(), 'UTC')), 0)
           FROM trade_executions WHERE sub_account_id = $1::uuid
          GROUP BY symbol ORDER BY symbol",
    )
    .bind(account)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SymbolPnl {
            symbol: r.0,
            gross: r.1,
            fees: r.2,
            gross_today: r.3,
            fees_today: r.4,
        })
        .collect())
}
