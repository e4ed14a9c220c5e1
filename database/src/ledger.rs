//! The trading tables' repository: sub-accounts, their rules, open virtual positions,
//! and the two writes that change money — a balance delta ([`change_balance`]) and a
//! venue fill booked against an account ([`book_fill`]). Each runs in one transaction
//! with the account row locked, so concurrent writers to one account serialize and
//! every balance change lands together with its `balance_logs` row. The arithmetic is
//! `trading`'s; this module only reads and writes rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};
use trading::balance::{self, BalanceChange, Reason};
use trading::evaluate::{Account, LiquidationMode, OpenPosition};
use trading::position::{apply_fill, Change, Fill, FillError, OrderSide, Outcome, Position, Side};
use trading::risk::{AccountStatus, RiskRules};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("Sub-account not found")]
    AccountNotFound(String),
    #[error(transparent)]
    Fill(#[from] FillError),
    #[error("invalid {what} in the database: {value}")]
    Corrupt { what: &'static str, value: String },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

impl LedgerError {
    pub const fn code(&self) -> &'static str {
        match self {
            LedgerError::AccountNotFound(_) => "ACCOUNT_NOT_FOUND",
            LedgerError::Fill(_) => "INVALID_FILL",
            LedgerError::Corrupt { .. } => "CORRUPT_ROW",
            LedgerError::Sql(_) => "DATABASE_ERROR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Bot,
}

impl AccountKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "USER",
            AccountKind::Bot => "BOT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub name: String,
    pub kind: AccountKind,
    pub user_id: Option<String>,
    pub initial_balance: Decimal,
    pub liquidation_mode: LiquidationMode,
    pub maintenance_rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub user_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub initial_balance: Decimal,
    pub current_balance: Decimal,
    pub status: AccountStatus,
    pub liquidation_mode: LiquidationMode,
    pub maintenance_rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRow {
    pub id: String,
    pub sub_account_id: String,
    pub symbol: String,
    pub position: Position,
    pub babysitter_excluded: bool,
    pub opened_at: DateTime<Utc>,
}

fn corrupt(what: &'static str, value: &str) -> LedgerError {
    LedgerError::Corrupt {
        what,
        value: value.to_owned(),
    }
}

fn status(s: &str) -> Result<AccountStatus, LedgerError> {
    match s {
        "ACTIVE" => Ok(AccountStatus::Active),
        "FROZEN" => Ok(AccountStatus::Frozen),
        "LIQUIDATED" => Ok(AccountStatus::Liquidated),
        _ => Err(corrupt("status", s)),
    }
}

fn side(s: &str) -> Result<Side, LedgerError> {
    match s {
        "LONG" => Ok(Side::Long),
        "SHORT" => Ok(Side::Short),
        _ => Err(corrupt("side", s)),
    }
}

const ACCOUNT_COLUMNS: &str = "s.id::text, s.user_id::text, s.name, s.type, s.initial_balance, \
     s.current_balance, s.status, s.liquidation_mode, s.maintenance_rate";

fn account_row(r: &sqlx::postgres::PgRow) -> Result<AccountRow, LedgerError> {
    let mode: String = r.try_get(7)?;
    Ok(AccountRow {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        name: r.try_get(2)?,
        kind: r.try_get(3)?,
        initial_balance: r.try_get(4)?,
        current_balance: r.try_get(5)?,
        status: status(r.try_get(6)?)?,
        liquidation_mode: LiquidationMode::parse(&mode)
            .ok_or_else(|| corrupt("liquidation_mode", &mode))?,
        maintenance_rate: r.try_get(8)?,
    })
}

pub async fn create_account(pool: &PgPool, new: &NewAccount) -> Result<AccountRow, LedgerError> {
    let row = sqlx::query(&format!(
        "INSERT INTO sub_accounts AS s (name, type, user_id, initial_balance, current_balance, liquidation_mode, maintenance_rate)
         VALUES ($1, $2, $3::uuid, $4, $4, $5, $6) RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(&new.name)
    .bind(new.kind.as_str())
    .bind(&new.user_id)
    .bind(new.initial_balance)
    .bind(new.liquidation_mode.as_str())
    .bind(new.maintenance_rate)
    .fetch_one(pool)
    .await?;
    account_row(&row)
}

/// Sets an account's status (freeze, unfreeze); `None` when there is no such account.
pub async fn set_status(
    pool: &PgPool,
    id: &str,
    status: AccountStatus,
) -> Result<Option<AccountRow>, LedgerError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "UPDATE sub_accounts s SET status = $2, updated_at = now() WHERE id = $1::uuid
         RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(id)
    .bind(status.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(account_row).transpose()
}

/// Changes what is given of an account's name, liquidation mode and maintenance rate.
pub async fn update_account(
    pool: &PgPool,
    id: &str,
    name: Option<&str>,
    mode: Option<LiquidationMode>,
    maintenance_rate: Option<Decimal>,
) -> Result<Option<AccountRow>, LedgerError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "UPDATE sub_accounts s
            SET name = coalesce($2, name), liquidation_mode = coalesce($3, liquidation_mode),
                maintenance_rate = coalesce($4, maintenance_rate), updated_at = now()
          WHERE id = $1::uuid
         RETURNING {ACCOUNT_COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(mode.map(LiquidationMode::as_str))
    .bind(maintenance_rate)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(account_row).transpose()
}

/// Sets what is given of an account's rules (`account: None`: the global rules),
/// creating its row from the defaults; returns the rules as they now stand.
pub async fn set_rules(
    pool: &PgPool,
    account: Option<&str>,
    patch: &trading::command::RulesPatch,
) -> Result<RiskRules, LedgerError> {
    if account.is_some_and(|a| !is_uuid(a)) {
        return Err(LedgerError::AccountNotFound(
            account.unwrap_or_default().to_owned(),
        ));
    }
    let conflict = match account {
        Some(_) => "(sub_account_id)",
        None => "(is_global) WHERE is_global",
    };
    let r = sqlx::query(&format!(
        "INSERT INTO risk_rules AS r (sub_account_id, is_global, max_leverage, max_notional_per_trade,
                max_total_exposure, max_symbol_exposure, max_daily_loss, liquidation_threshold)
         SELECT $1::uuid, $1 IS NULL, coalesce($2, g.max_leverage, 100),
                coalesce($3, g.max_notional_per_trade, 200), coalesce($4, g.max_total_exposure, 500),
                coalesce($5, g.max_symbol_exposure), coalesce($6, g.max_daily_loss),
                coalesce($7, g.liquidation_threshold, 0.90)
           -- A new account row starts from the global row's values (then the
           -- defaults) for the fields the patch does not set.
           FROM (SELECT 1) one
           LEFT JOIN risk_rules g ON g.is_global AND $1 IS NOT NULL
         ON CONFLICT {conflict} DO UPDATE SET
                max_leverage = coalesce($2, r.max_leverage),
                max_notional_per_trade = coalesce($3, r.max_notional_per_trade),
                max_total_exposure = coalesce($4, r.max_total_exposure),
                max_symbol_exposure = coalesce($5, r.max_symbol_exposure),
                max_daily_loss = coalesce($6, r.max_daily_loss),
                liquidation_threshold = coalesce($7, r.liquidation_threshold)
         RETURNING max_leverage, max_notional_per_trade, max_total_exposure, max_symbol_exposure,
                   max_daily_loss, liquidation_threshold"
    ))
    .bind(account)
    .bind(patch.max_leverage)
    .bind(patch.max_notional_per_trade)
    .bind(patch.max_total_exposure)
    .bind(patch.max_symbol_exposure)
    .bind(patch.max_daily_loss)
    .bind(patch.liquidation_threshold)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            LedgerError::AccountNotFound(account.unwrap_or_default().to_owned())
        }
        _ => e.into(),
    })?;
    Ok(RiskRules {
        max_leverage: r.try_get(0)?,
        max_notional_per_trade: r.try_get(1)?,
        max_total_exposure: r.try_get(2)?,
        max_symbol_exposure: r.try_get(3)?,
        max_daily_loss: r.try_get(4)?,
        liquidation_threshold: r.try_get(5)?,
    })
}

/// Whether `id` is a uuid in its canonical text form: anything else cannot name an
/// account, and is "not found" rather than a database error.
pub fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub async fn account(pool: &PgPool, id: &str) -> Result<Option<AccountRow>, LedgerError> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM sub_accounts s
          WHERE id = $1::uuid"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(account_row).transpose()
}

/// The account's rules: its own row, else the global row, else the defaults.
pub async fn rules_for(pool: &PgPool, id: &str) -> Result<RiskRules, LedgerError> {
    let id = if is_uuid(id) { Some(id) } else { None };
    let row = sqlx::query(
        "SELECT max_leverage, max_notional_per_trade, max_total_exposure, max_symbol_exposure,
                max_daily_loss, liquidation_threshold
           FROM risk_rules
          WHERE sub_account_id = $1::uuid OR is_global
          ORDER BY is_global
          LIMIT 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(RiskRules::default());
    };
    Ok(RiskRules {
        max_leverage: r.try_get(0)?,
        max_notional_per_trade: r.try_get(1)?,
        max_total_exposure: r.try_get(2)?,
        max_symbol_exposure: r.try_get(3)?,
        max_daily_loss: r.try_get(4)?,
        liquidation_threshold: r.try_get(5)?,
    })
}

/// Open positions, of one account or of all.
pub async fn open_positions(
    pool: &PgPool,
    account: Option<&str>,
) -> Result<Vec<PositionRow>, LedgerError> {
    if account.is_some_and(|a| !is_uuid(a)) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT id::text, sub_account_id::text, symbol, side, quantity, entry_price, leverage,
                babysitter_excluded, opened_at
           FROM virtual_positions
          WHERE status = 'OPEN' AND ($1::uuid IS NULL OR sub_account_id = $1::uuid)
          ORDER BY opened_at, id",
    )
    .bind(account)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PositionRow {
                id: r.try_get(0)?,
                sub_account_id: r.try_get(1)?,
                symbol: r.try_get(2)?,
                position: Position {
                    side: side(r.try_get(3)?)?,
                    quantity: r.try_get(4)?,
                    entry_price: r.try_get(5)?,
                    leverage: r.try_get(6)?,
                },
                babysitter_excluded: r.try_get(7)?,
                opened_at: r.try_get(8)?,
            })
        })
        .collect()
}

/// One open position, if it belongs to `account`.
pub async fn open_position_of(
    pool: &PgPool,
    account: &str,
    position_id: &str,
) -> Result<Option<PositionRow>, LedgerError> {
    if !is_uuid(position_id) {
        return Ok(None);
    }
    Ok(open_positions(pool, Some(account))
        .await?
        .into_iter()
        .find(|p| p.id == position_id))
}

/// Σ of every sub-account's open position in `symbol`, signed (long positive): what
/// the exchange's net position should be.
pub async fn book_net(pool: &PgPool, symbol: &str) -> Result<Decimal, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(CASE side WHEN 'LONG' THEN quantity ELSE -quantity END), 0)
           FROM virtual_positions WHERE symbol = $1 AND status = 'OPEN'",
    )
    .bind(symbol)
    .fetch_one(pool)
    .await?)
}

/// The symbols with open positions, and each one's open positions.
pub async fn open_symbols(pool: &PgPool) -> Result<Vec<String>, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT symbol FROM virtual_positions WHERE status = 'OPEN' ORDER BY symbol",
    )
    .fetch_all(pool)
    .await?)
}

/// The price of the latest venue fill in `symbol`, if any.
pub async fn last_fill_price(pool: &PgPool, symbol: &str) -> Result<Option<Decimal>, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT price FROM trade_executions
          WHERE symbol = $1 AND exchange_trade_id IS NOT NULL
          ORDER BY timestamp DESC LIMIT 1",
    )
    .bind(symbol)
    .fetch_optional(pool)
    .await?)
}

/// The account as the risk loop watches it; `None` when it does not exist.
pub async fn watched(pool: &PgPool, id: &str) -> Result<Option<Account>, LedgerError> {
    Ok(watched_with_rules(pool, id).await?.map(|w| w.account))
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
/// path reads them before every order).
pub async fn watched_with_rules(pool: &PgPool, id: &str) -> Result<Option<Watched>, LedgerError> {
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
                coalesce((SELECT json_agg(json_build_object(
                            'id', o.client_order_id, 'symbol', o.symbol, 'side', o.side, 'remaining', (o.quantity - o.filled)::text,
                            'price', o.price::text, 'leverage', o.leverage::text))
                            FROM orders o
                           WHERE o.sub_account_id = s.id AND NOT o.reduce_only
                             AND o.state IN ('NEW', 'SUBMITTED', 'UNKNOWN', 'PARTIALLY_FILLED')),
                         '[]'::json)::text
           FROM sub_accounts s
           LEFT JOIN LATERAL (SELECT * FROM risk_rules
                               WHERE sub_account_id = s.id OR is_global
                               ORDER BY is_global LIMIT 1) r ON true
          WHERE s.id = $1::uuid"
    ))
    .bind(id)
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
    #[derive(serde::Deserialize)]
    struct Resting {
        id: String,
        symbol: String,
        side: String,
        remaining: String,
        price: Option<String>,
        leverage: String,
    }
    let text: String = r.try_get(17)?;
    let resting: Vec<Resting> =
        serde_json::from_str(&text).map_err(|e| corrupt("pending orders", &e.to_string()))?;
    let pending = resting
        .into_iter()
        .map(|o| {
            Ok(PendingRow {
                client_order_id: o.id,
                order: trading::risk::PendingOrder {
                    side: match o.side.as_str() {
                        "BUY" => OrderSide::Buy,
                        "SELL" => OrderSide::Sell,
                        other => return Err(corrupt("order side", other)),
                    },
                    remaining: dec("remaining", &o.remaining)?,
                    price: o.price.as_deref().map(|p| dec("price", p)).transpose()?,
                    leverage: dec("leverage", &o.leverage)?,
                    symbol: o.symbol,
                },
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok(Some(Watched {
        account: to_watched(a, &rules, positions),
        rules,
        realized_today,
        pending,
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

fn to_watched(a: AccountRow, rules: &RiskRules, positions: Vec<PositionRow>) -> Account {
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

/// Locks the account row for the rest of the transaction and reads its balance.
async fn lock_balance(tx: &mut PgConnection, id: &str) -> Result<Decimal, LedgerError> {
    if !is_uuid(id) {
        return Err(LedgerError::AccountNotFound(id.to_owned()));
    }
    sqlx::query_scalar::<_, Decimal>(
        // NO KEY: bookings and balance changes of the account serialize here, while
        // rows that only reference it (a new order's foreign-key check takes FOR KEY
        // SHARE) are not held up.
        "SELECT current_balance FROM sub_accounts WHERE id = $1::uuid FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| LedgerError::AccountNotFound(id.to_owned()))
}

/// Applies one delta inside the caller's transaction (the account row already
/// locked by [`lock_balance`]) and writes its `balance_logs` row.
async fn apply_delta(
    tx: &mut PgConnection,
    id: &str,
    before: Decimal,
    delta: Decimal,
    reason: Reason,
    trade_id: Option<&str>,
) -> Result<BalanceChange, LedgerError> {
    let c = balance::apply(before, delta, reason);
    // One round trip: the balance and its log row (a fill books up to two of these).
    sqlx::query(
        "WITH u AS (UPDATE sub_accounts SET current_balance = $3, updated_at = now()
                     WHERE id = $1::uuid RETURNING id)
         INSERT INTO balance_logs (sub_account_id, balance_before, balance_after, change_amount, absorbed, reason, trade_id)
         SELECT u.id, $2, $3, $4, $5, $6, $7 FROM u",
    )
    .bind(id)
    .bind(c.before)
    .bind(c.after)
    .bind(c.change)
    .bind(c.absorbed)
    .bind(c.reason.as_str())
    .bind(trade_id)
    .execute(&mut *tx)
    .await?;
    Ok(c)
}

/// Changes an account's balance by `delta`, floored at zero, with its log row, in one
/// transaction.
pub async fn change_balance(
    pool: &PgPool,
    id: &str,
    delta: Decimal,
    reason: Reason,
    trade_id: Option<&str>,
) -> Result<BalanceChange, LedgerError> {
    let mut tx = pool.begin().await?;
    let before = lock_balance(&mut tx, id).await?;
    let c = apply_delta(&mut tx, id, before, delta, reason, trade_id).await?;
    tx.commit().await?;
    Ok(c)
}

/// The part `q` of a reduce-only fill past what its position held: the venue did
/// trade it, and no sub-account owns it, so the house does (once per venue trade).
async fn to_house(tx: &mut PgConnection, b: &FillBooking, q: Decimal) -> Result<(), LedgerError> {
    let signed = match b.fill.side {
        OrderSide::Buy => q,
        OrderSide::Sell => -q,
    };
    sqlx::query(
        "INSERT INTO house_log (symbol, quantity, reason, client_order_id, exchange_trade_id)
         VALUES ($1, $2, 'REDUCE_ONLY_EXCESS', $3, $4)
         ON CONFLICT (client_order_id, exchange_trade_id) DO NOTHING",
    )
    .bind(&b.symbol)
    .bind(signed)
    .bind(&b.client_order_id)
    .bind(&b.exchange_trade_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What the house took on beyond its configured positions, per symbol.
pub async fn house_taken(pool: &PgPool) -> Result<HashMap<String, Decimal>, LedgerError> {
    let rows: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT symbol, sum(quantity) FROM house_log GROUP BY symbol")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// What the house took on in `symbol` (Σ `house_log`).
pub async fn house_taken_in(pool: &PgPool, symbol: &str) -> Result<Decimal, LedgerError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(sum(quantity), 0) FROM house_log WHERE symbol = $1")
            .bind(symbol)
            .fetch_one(pool)
            .await?,
    )
}

/// A venue fill attributed to a sub-account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillBooking {
    pub sub_account_id: String,
    pub symbol: String,
    pub fill: Fill,
    /// Commission in USDT, never negative.
    pub fee: Decimal,
    pub exchange_order_id: Option<String>,
    pub client_order_id: Option<String>,
    /// The venue's trade id; a fill with one is booked at most once.
    pub exchange_trade_id: Option<String>,
    /// `MARKET`, `LIMIT`, …
    pub order_type: String,
    /// `MANUAL`, `BOT` or `API`.
    pub origin: String,
    /// The action of a closing part (`CLOSE`, `LIMIT_CLOSE`, `LIQUIDATE`, …).
    pub close_action: String,
    pub babysitter_excluded: bool,
    /// A close of this very position (a virtual close): booked only while it is
    /// still the open one, so a close racing another close cannot open a new one.
    pub closes: Option<String>,
    /// The fill of a reduce-only order: booked only up to what the position on the
    /// other side still holds, so it never opens one on this side.
    pub reduce_only: bool,
}

/// What booking a fill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booked {
    /// This venue trade was booked before (or the position to close is no longer
    /// the open one); nothing changed.
    Duplicate,
    Applied(Box<Applied>),
    /// A reduce-only fill with no position left to reduce: nothing booked (the venue
    /// filled what no sub-account holds; reconciliation sees it).
    NothingLeft,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// The position closed or reduced by the fill.
    pub closed_position: Option<String>,
    /// The position open after the fill (added to, reduced, or opened by it).
    pub open_position: Option<String>,
    /// `trade_executions` ids: the closing part first, then the opening part.
    pub executions: Vec<String>,
    pub balance_changes: Vec<BalanceChange>,
    pub balance: Decimal,
}

struct Execution<'a> {
    position_id: &'a str,
    quantity: Decimal,
    fee: Decimal,
    realized_net: Option<Decimal>,
    action: &'a str,
    /// The JS signature's middle: `{symbol}:{side}:{qty}` for opens, `{tag}:{positionId}` for closes.
    signed: String,
}

async fn insert_execution(
    tx: &mut PgConnection,
    b: &FillBooking,
    e: Execution<'_>,
) -> Result<String, LedgerError> {
    let side = match b.fill.side {
        OrderSide::Buy => "BUY",
        OrderSide::Sell => "SELL",
    };
    // The JS scheme: hex SHA-256 of `{subAccountId}:{…}:{ms}:{nonce}`, the nonce being
    // the venue trade id when there is one (so the signature is reproducible), else a
    // random uuid as in the JS.
    Ok(sqlx::query_scalar(
        "INSERT INTO trade_executions (sub_account_id, position_id, exchange_order_id, client_order_id,
                exchange_trade_id, symbol, side, type, price, quantity, notional, fee, realized_pnl,
                action, origin_type, signature)
         VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $9 * $10, $11, $12, $13, $14,
                encode(sha256(convert_to($1 || ':' || $15 || ':'
                    || (extract(epoch FROM now()) * 1000)::bigint || ':'
                    || coalesce($5, gen_random_uuid()::text), 'UTF8')), 'hex'))
         RETURNING id::text",
    )
    .bind(&b.sub_account_id)
    .bind(e.position_id)
    .bind(&b.exchange_order_id)
    .bind(&b.client_order_id)
    .bind(&b.exchange_trade_id)
    .bind(&b.symbol)
    .bind(side)
    .bind(&b.order_type)
    .bind(b.fill.price)
    .bind(e.quantity)
    .bind(e.fee)
    .bind(e.realized_net)
    .bind(e.action)
    .bind(&b.origin)
    .bind(e.signed)
    .fetch_one(&mut *tx)
    .await?)
}

async fn write_position(
    tx: &mut PgConnection,
    id: &str,
    p: &Position,
    realized: Decimal,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE virtual_positions
            SET side = $2, quantity = $3, entry_price = $4, notional = $4 * $3, leverage = $5,
                margin = $4 * $3 / $5, realized_pnl = coalesce(realized_pnl, 0) + $6
          WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(p.side.as_str())
    .bind(p.quantity)
    .bind(p.entry_price)
    .bind(p.leverage)
    .bind(realized)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_position(
    tx: &mut PgConnection,
    b: &FillBooking,
    p: &Position,
) -> Result<String, LedgerError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO virtual_positions (sub_account_id, symbol, side, entry_price, quantity, notional,
                leverage, margin, babysitter_excluded)
         VALUES ($1::uuid, $2, $3, $4, $5, $4 * $5, $6, $4 * $5 / $6, $7)
         RETURNING id::text",
    )
    .bind(&b.sub_account_id)
    .bind(&b.symbol)
    .bind(p.side.as_str())
    .bind(p.entry_price)
    .bind(p.quantity)
    .bind(p.leverage)
    .bind(b.babysitter_excluded)
    .fetch_one(&mut *tx)
    .await?)
}

/// Books one fill: the position opened, added to, reduced, closed or flipped; one
/// `trade_executions` row per position it touched; realized PnL and the fee as logged
/// balance deltas — all in one transaction, with the account row locked. A fill with
/// an `exchange_trade_id` already booked for this account is a [`Booked::Duplicate`].
/// Fills are booked whatever the account's status: the venue executed them.
pub async fn book_fill(pool: &PgPool, b: &FillBooking) -> Result<Booked, LedgerError> {
    let mut tx = pool.begin().await?;
    let booked = book_fill_in(&mut tx, b).await?;
    tx.commit().await?;
    Ok(booked)
}

/// [`book_fill`] inside the caller's transaction (which it must commit), so an order's
/// transition and its fill's booking land together.
pub async fn book_fill_in(tx: &mut PgConnection, b: &FillBooking) -> Result<Booked, LedgerError> {
    if b.fee < Decimal::ZERO {
        return Err(corrupt("fee", &b.fee.to_string()));
    }
    let mut balance = lock_balance(&mut *tx, &b.sub_account_id).await?;
    if let Some(t) = &b.exchange_trade_id {
        let seen: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM trade_executions
                             WHERE sub_account_id = $1::uuid AND symbol = $2 AND exchange_trade_id = $3)",
        )
        .bind(&b.sub_account_id)
        .bind(&b.symbol)
        .bind(t)
        .fetch_one(&mut *tx)
        .await?;
        if seen {
            return Ok(Booked::Duplicate);
        }
    }
    let current = sqlx::query(
        "SELECT id::text, side, quantity, entry_price, leverage FROM virtual_positions
          WHERE sub_account_id = $1::uuid AND symbol = $2 AND status = 'OPEN' FOR NO KEY UPDATE",
    )
    .bind(&b.sub_account_id)
    .bind(&b.symbol)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| -> Result<(String, Position), LedgerError> {
        Ok((
            r.try_get(0)?,
            Position {
                side: side(r.try_get(1)?)?,
                quantity: r.try_get(2)?,
                entry_price: r.try_get(3)?,
                leverage: r.try_get(4)?,
            },
        ))
    })
    .transpose()?;
    if let Some(target) = &b.closes {
        let still_open = current.as_ref().is_some_and(|(id, p)| {
            id == target && p.side != b.fill.side.opens() && p.quantity == b.fill.quantity
        });
        if !still_open {
            return Ok(Booked::Duplicate);
        }
    }
    let clamped;
    let b = match (b.reduce_only, &current) {
        (false, _) => b,
        (true, Some((_, p))) if p.side != b.fill.side.opens() => {
            if p.quantity >= b.fill.quantity {
                b
            } else {
                to_house(&mut *tx, b, b.fill.quantity - p.quantity).await?;
                clamped = FillBooking {
                    fill: Fill {
                        quantity: p.quantity,
                        ..b.fill
                    },
                    fee: b.fee * p.quantity / b.fill.quantity,
                    ..b.clone()
                };
                &clamped
            }
        }
        (true, _) => {
            to_house(&mut *tx, b, b.fill.quantity).await?;
            return Ok(Booked::NothingLeft);
        }
    };
    let outcome = apply_fill(current.as_ref().map(|(_, p)| p), &b.fill)?;
    let fee_closing = if outcome.closed.is_zero() {
        Decimal::ZERO
    } else {
        b.fee * outcome.closed / b.fill.quantity
    };
    let opened = b.fill.quantity - outcome.closed;
    let open_signed = |q: Decimal| {
        format!(
            "{}:{}:{}",
            b.symbol,
            b.fill.side.opens().as_str(),
            q.normalize()
        )
    };
    let mut executions = Vec::new();
    let (mut closed_position, mut open_position) = (None, None);
    match (&outcome.change, &current, &outcome.after) {
        (Change::Opened, None, Some(after)) => {
            let id = insert_position(&mut *tx, b, after).await?;
            executions.push(
                insert_execution(
                    &mut *tx,
                    b,
                    Execution {
                        position_id: &id,
                        quantity: b.fill.quantity,
                        fee: b.fee,
                        realized_net: None,
                        action: "OPEN",
                        signed: open_signed(b.fill.quantity),
                    },
                )
                .await?,
            );
            open_position = Some(id);
        }
        (Change::Added, Some((id, _)), Some(after)) => {
            write_position(&mut *tx, id, after, Decimal::ZERO).await?;
            executions.push(
                insert_execution(
                    &mut *tx,
                    b,
                    Execution {
                        position_id: id,
                        quantity: b.fill.quantity,
                        fee: b.fee,
                        realized_net: None,
                        action: "ADD",
                        signed: open_signed(b.fill.quantity),
                    },
                )
                .await?,
            );
            open_position = Some(id.clone());
        }
        (Change::Reduced | Change::Closed | Change::Flipped, Some((id, _)), after) => {
            let flipped = outcome.change == Change::Flipped;
            match (&outcome.change, after) {
                (Change::Reduced, Some(rest)) => {
                    write_position(&mut *tx, id, rest, outcome.realized).await?;
                    open_position = Some(id.clone());
                }
                _ => {
                    sqlx::query(
                        "UPDATE virtual_positions
                            SET status = 'CLOSED', closed_at = now(),
                                realized_pnl = coalesce(realized_pnl, 0) + $2
                          WHERE id = $1::uuid",
                    )
                    .bind(id)
                    .bind(outcome.realized)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let action = if flipped {
                "FLIP_CLOSE"
            } else {
                b.close_action.as_str()
            };
            executions.push(
                insert_execution(
                    &mut *tx,
                    b,
                    Execution {
                        position_id: id,
                        quantity: outcome.closed,
                        fee: fee_closing,
                        realized_net: Some(outcome.realized - fee_closing),
                        action,
                        signed: format!("{action}:{id}"),
                    },
                )
                .await?,
            );
            closed_position = Some(id.clone());
            if let (true, Some(fresh)) = (flipped, after) {
                let new_id = insert_position(&mut *tx, b, fresh).await?;
                executions.push(
                    insert_execution(
                        &mut *tx,
                        b,
                        Execution {
                            position_id: &new_id,
                            quantity: opened,
                            fee: b.fee - fee_closing,
                            realized_net: None,
                            action: "OPEN",
                            signed: open_signed(opened),
                        },
                    )
                    .await?,
                );
                open_position = Some(new_id);
            }
        }
        (change, current, after) => {
            return Err(corrupt(
                "fill outcome",
                &format!(
                    "{change:?} with a position {} and after {}",
                    current.is_some(),
                    after.is_some()
                ),
            ))
        }
    }
    let trade = executions.first().map(String::as_str);
    let mut balance_changes = Vec::new();
    if !outcome.realized.is_zero() {
        let c = apply_delta(
            &mut *tx,
            &b.sub_account_id,
            balance,
            outcome.realized,
            Reason::TradePnl,
            trade,
        )
        .await?;
        balance = c.after;
        balance_changes.push(c);
    }
    if !b.fee.is_zero() {
        let c = apply_delta(
            &mut *tx,
            &b.sub_account_id,
            balance,
            -b.fee,
            Reason::Fee,
            trade,
        )
        .await?;
        balance = c.after;
        balance_changes.push(c);
    }
    Ok(Booked::Applied(Box::new(Applied {
        outcome,
        closed_position,
        open_position,
        executions,
        balance_changes,
        balance,
    })))
}
