//! The ledger's errors and rows, and reading them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;
use trading::evaluate::LiquidationMode;
use trading::position::{FillError, Position, Side};
use trading::risk::AccountStatus;

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

pub(crate) fn corrupt(what: &'static str, value: &str) -> LedgerError {
    LedgerError::Corrupt {
        what,
        value: value.to_owned(),
    }
}

pub(crate) fn status(s: &str) -> Result<AccountStatus, LedgerError> {
    match s {
        "ACTIVE" => Ok(AccountStatus::Active),
        "FROZEN" => Ok(AccountStatus::Frozen),
        "LIQUIDATED" => Ok(AccountStatus::Liquidated),
        _ => Err(corrupt("status", s)),
    }
}

pub(super) fn side(s: &str) -> Result<Side, LedgerError> {
    match s {
        "LONG" => Ok(Side::Long),
        "SHORT" => Ok(Side::Short),
        _ => Err(corrupt("side", s)),
    }
}

pub(super) const ACCOUNT_COLUMNS: &str =
    "s.id::text, s.user_id::text, s.name, s.type, s.initial_balance, \
     s.current_balance, s.status, s.liquidation_mode, s.maintenance_rate";

pub(super) fn account_row(r: &sqlx::postgres::PgRow) -> Result<AccountRow, LedgerError> {
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

/// Whether `id` is a uuid in its canonical text form: anything else cannot name an
/// account, and is "not found" rather than a database error.
pub fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}
