//! An account as the order path and the risk loop watch it: its book, rules,
//! pending orders and what it realized today, in one read.

use chrono::DateTime;
use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use trading::evaluate::{Account, OpenPosition};
use trading::position::{OrderSide, Position};
use trading::risk::RiskRules;

use super::accounts::rules_for;
use super::positions::open_positions;
use super::rows::{
    account_row, corrupt, is_uuid, side, AccountRow, LedgerError, PositionRow, ACCOUNT_COLUMNS,
};

/// The account as the risk loop watches it; `None` when it does not exist.
pub async fn watched(pool: &PgPool, id: &str) -> Result<Option<Account>, LedgerError> {
    Ok(watched_with_rules(pool, id, None, &[])
        .await?
        .map(|w| w.account))
}

/// An account as the order path checks it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub account: Account,
    pub rules: RiskRules,
    /// Realized since 00:00 UTC.
    pub realized_today: Decimal,
    /// Its orders not yet final that can open a position.
    pub pending: Vec<PendingRow>,
    /// Of the orders asked about (`ours`), what the book as read has booked of each
    /// (those with fills): read in the same statement as the positions.
    pub booked: Vec<(String, Decimal)>,
}

/// An order not yet final that can open a position, with its client order id.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub client_order_id: String,
    pub order: trading::risk::PendingOrder,
}

/// The account as the risk loop watches it, its rules, its pending orders, and what it has realized since
/// 00:00 UTC (trading PnL, fees, forced and virtual closes: what the daily-loss check
/// counts; deposits and adjustments are not trading), in one round trip (the order
/// path reads them before every order). `not_sent_by`: an engine that counts its own
/// orders from memory, whose orders are left out of `pending`.
pub async fn watched_with_rules(
    pool: &PgPool,
    id: &str,
    not_sent_by: Option<&str>,
    ours: &[String],
) -> Result<Option<Watched>, LedgerError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS}, r.max_leverage, r.max_notional_per_trade, r.max_total_exposure,
                r.max_symbol_exposure, r.max_daily_loss, r.liquidation_threshold,
                coalesce((SELECT json_agg(json_build_object(
                            'id', p.id::text, 'symbol', p.symbol, 'side', p.side,
                            'quantity', p.quantity::text, 'entry', p.entry_price::text,
                            'leverage', p.leverage::text, 'excluded', p.babysitter_excluded,
                            'opened', (extract(epoch FROM p.opened_at) * 1000)::bigint)
                          ORDER BY p.opened_at, p.id)
                            FROM virtual_positions p
                           WHERE p.sub_account_id = s.id AND p.status = 'OPEN'), '[]'::json)::text,
                coalesce((SELECT d.amount FROM realized_daily d
                           WHERE d.sub_account_id = s.id
                             AND d.day = (now() AT TIME ZONE 'UTC')::date), 0),
                o.ids, o.symbols, o.sides, o.remaining, o.prices, o.leverages,
                (SELECT array_agg(f.client_order_id) FROM orders f
                  WHERE f.client_order_id = ANY($3) AND f.filled > 0),
                (SELECT array_agg(f.filled) FROM orders f
                  WHERE f.client_order_id = ANY($3) AND f.filled > 0)
           FROM sub_accounts s
           LEFT JOIN LATERAL (SELECT * FROM risk_rules
                               WHERE sub_account_id = s.id OR is_global
                               ORDER BY is_global LIMIT 1) r ON true
           -- One array per field, not a JSON object per order: while orders stream in,
           -- hundreds are pending and this read runs after each burst of fills (a JSON
           -- object each cost 3.5 times the arrays' time).
           CROSS JOIN LATERAL (
                SELECT array_agg(o.client_order_id) AS ids, array_agg(o.symbol) AS symbols,
                       array_agg(o.side) AS sides, array_agg(o.quantity - o.filled) AS remaining,
                       array_agg(o.price) AS prices, array_agg(o.leverage) AS leverages
                  FROM orders o
                 WHERE o.sub_account_id = s.id AND NOT o.reduce_only
                   AND o.state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')
                   AND ($2::uuid IS NULL OR o.sent_by IS DISTINCT FROM $2::uuid)) o
          WHERE s.id = $1::uuid"
    ))
    .bind(id)
    .bind(not_sent_by)
    .bind(ours)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let a = account_row(&r)?;
    let rules = match r.try_get::<Option<Decimal>, _>(9)? {
        None => RiskRules::default(),
        Some(max_leverage) => RiskRules {
            max_leverage,
            max_notional_per_trade: r.try_get(10)?,
            max_total_exposure: r.try_get(11)?,
            max_symbol_exposure: r.try_get(12)?,
            max_daily_loss: r.try_get(13)?,
            liquidation_threshold: r.try_get(14)?,
        },
    };
    #[derive(serde::Deserialize)]
    struct Open {
        id: String,
        symbol: String,
        side: String,
        quantity: String,
        entry: String,
        leverage: String,
        excluded: bool,
        opened: i64,
    }
    let text: String = r.try_get(15)?;
    let open: Vec<Open> =
        serde_json::from_str(&text).map_err(|e| corrupt("open positions", &e.to_string()))?;
    let dec = |what: &'static str, v: &str| v.parse::<Decimal>().map_err(|_| corrupt(what, v));
    let positions = open
        .into_iter()
        .map(|p| {
            Ok(PositionRow {
                sub_account_id: a.id.clone(),
                position: Position {
                    side: side(&p.side)?,
                    quantity: dec("quantity", &p.quantity)?,
                    entry_price: dec("entry_price", &p.entry)?,
                    leverage: dec("leverage", &p.leverage)?,
                },
                babysitter_excluded: p.excluded,
                opened_at: DateTime::from_timestamp_millis(p.opened).unwrap_or_default(),
                id: p.id,
                symbol: p.symbol,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    let realized_today: Decimal = r.try_get(16)?;
    let ids: Vec<String> = r.try_get::<Option<_>, _>(17)?.unwrap_or_default();
    let symbols: Vec<String> = r.try_get::<Option<_>, _>(18)?.unwrap_or_default();
    let sides: Vec<String> = r.try_get::<Option<_>, _>(19)?.unwrap_or_default();
    let remaining: Vec<Decimal> = r.try_get::<Option<_>, _>(20)?.unwrap_or_default();
    let prices: Vec<Option<Decimal>> = r.try_get::<Option<_>, _>(21)?.unwrap_or_default();
    let leverages: Vec<Decimal> = r.try_get::<Option<_>, _>(22)?.unwrap_or_default();
    let booked_ids: Vec<String> = r.try_get::<Option<_>, _>(23)?.unwrap_or_default();
    let booked: Vec<Decimal> = r.try_get::<Option<_>, _>(24)?.unwrap_or_default();
    if booked_ids.len() != booked.len() {
        return Err(corrupt("booked orders", "arrays of unequal length"));
    }
    let n = ids.len();
    if [
        symbols.len(),
        sides.len(),
        remaining.len(),
        prices.len(),
        leverages.len(),
    ] != [n; 5]
    {
        return Err(corrupt("pending orders", "arrays of unequal length"));
    }
    let pending = ids
        .into_iter()
        .zip(symbols)
        .zip(sides)
        .zip(remaining.into_iter().zip(prices).zip(leverages))
        .map(|(((id, symbol), side), ((remaining, price), leverage))| {
            Ok(PendingRow {
                client_order_id: id,
                order: trading::risk::PendingOrder {
                    side: match side.as_str() {
                        "BUY" => OrderSide::Buy,
                        "SELL" => OrderSide::Sell,
                        other => return Err(corrupt("order side", other)),
                    },
                    remaining,
                    price,
                    leverage,
                    symbol,
                },
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok(Some(Watched {
        account: to_watched(a, &rules, positions),
        rules,
        realized_today,
        pending,
        booked: booked_ids.into_iter().zip(booked).collect(),
    }))
}

/// Every account, as the risk loop watches it (start-up).
pub async fn all_watched(pool: &PgPool) -> Result<Vec<Account>, LedgerError> {
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM sub_accounts s ORDER BY s.id"
    ))
    .fetch_all(pool)
    .await?;
    let mut positions = open_positions(pool, None).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let a = account_row(r)?;
        let rules = rules_for(pool, &a.id).await?;
        let (mine, rest) = positions
            .into_iter()
            .partition(|p: &PositionRow| p.sub_account_id == a.id);
        positions = rest;
        out.push(to_watched(a, &rules, mine));
    }
    Ok(out)
}

pub(super) fn to_watched(a: AccountRow, rules: &RiskRules, positions: Vec<PositionRow>) -> Account {
    Account {
        id: a.id.into(),
        status: a.status,
        liquidation_mode: a.liquidation_mode,
        balance: a.current_balance,
        maintenance_rate: a.maintenance_rate,
        threshold: rules.liquidation_threshold,
        positions: positions
            .into_iter()
            .map(|p| OpenPosition {
                id: p.id.into(),
                symbol: p.symbol.into(),
                position: p.position,
                babysitter_excluded: p.babysitter_excluded,
                opened_at: p.opened_at.timestamp_millis(),
            })
            .collect(),
    }
}
