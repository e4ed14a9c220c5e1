//! Sub-accounts and their rules: created, changed, read.

use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use trading::evaluate::LiquidationMode;
use trading::risk::{AccountStatus, RiskRules};

use super::rows::{account_row, is_uuid, AccountRow, LedgerError, NewAccount, ACCOUNT_COLUMNS};

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
