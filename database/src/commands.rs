//! The gateway's commands in the database: the idempotency gate (`command_requests`:
//! a request id or an idempotency key starts its command once; every later delivery
//! gets the first result) and the append-only `audit_log`.

use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::ledger::LedgerError;

/// How long a request id or idempotency key is remembered.
pub const REMEMBERED_HOURS: i64 = 24;

#[derive(Debug, Clone, PartialEq)]
pub struct Request<'a> {
    pub request_id: &'a str,
    pub kind: &'a str,
    pub sub_account_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// The route's body (for a key: the same key must come with the same type and
    /// body).
    pub body: &'a Value,
}

/// What the gate says about a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// First time: it is the caller's to run (and to [`finish`]).
    Start,
    /// Already answered: the stored status and body.
    Done { status: u16, body: Value },
    /// Another delivery of it is running now.
    Running,
    /// The key was used with another command type or body.
    KeyReused,
}

/// Claims `r` for the caller, or says why not. Atomic: of two concurrent deliveries
/// with the same request id or key, exactly one gets [`Gate::Start`].
pub async fn gate(pool: &PgPool, r: &Request<'_>) -> Result<Gate, LedgerError> {
    for _ in 0..3 {
        let inserted = sqlx::query(
            "INSERT INTO command_requests (request_id, kind, sub_account_id, idempotency_key, body, state)
             VALUES ($1, $2, $3, $4, $5, 'RUNNING') ON CONFLICT DO NOTHING",
        )
        .bind(r.request_id)
        .bind(r.kind)
        .bind(r.sub_account_id)
        .bind(r.idempotency_key)
        .bind(r.body)
        .execute(pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Gate::Start);
        }
        let found = sqlx::query(
            "SELECT request_id, state, http_status, result, body = $4 AND kind = $6 AS same,
                    created_at < now() - make_interval(hours => $5) AS stale
               FROM command_requests
              WHERE request_id = $1
                 OR (idempotency_key = $3 AND coalesce(sub_account_id, '') = coalesce($2, ''))
              ORDER BY request_id = $1 DESC
              LIMIT 1",
        )
        .bind(r.request_id)
        .bind(r.sub_account_id)
        .bind(r.idempotency_key)
        .bind(r.body)
        .bind(REMEMBERED_HOURS as i32)
        .bind(r.kind)
        .fetch_optional(pool)
        .await?;
        let Some(row) = found else {
            // Swept between the two statements: claim it again.
            continue;
        };
        let id: String = row.try_get(0)?;
        if row.try_get::<bool, _>(5)? {
            sqlx::query("DELETE FROM command_requests WHERE request_id = $1")
                .bind(&id)
                .execute(pool)
                .await?;
            continue;
        }
        let same_request = id == r.request_id;
        if !same_request && !row.try_get::<bool, _>(4)? {
            return Ok(Gate::KeyReused);
        }
        let state: String = row.try_get(1)?;
        return Ok(match state.as_str() {
            "DONE" => Gate::Done {
                status: row.try_get::<Option<i32>, _>(2)?.unwrap_or(500) as u16,
                body: row.try_get::<Option<Value>, _>(3)?.unwrap_or(Value::Null),
            },
            _ => Gate::Running,
        });
    }
    Ok(Gate::Running)
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit<'a> {
    pub request_id: &'a str,
    pub kind: &'a str,
    pub sub_account_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub role: &'a str,
    pub source: &'a str,
    pub status: u16,
    pub code: Option<&'a str>,
    pub command: &'a Value,
    pub result: &'a Value,
}

async fn append(tx: &mut sqlx::PgConnection, a: &Audit<'_>) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO audit_log (request_id, kind, sub_account_id, user_id, role, source, http_status,
                                code, command, result)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(a.request_id)
    .bind(a.kind)
    .bind(a.sub_account_id)
    .bind(a.user_id)
    .bind(a.role)
    .bind(a.source)
    .bind(a.status as i32)
    .bind(a.code)
    .bind(a.command)
    .bind(a.result)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Stores a started command's result and its audit line, together. `gated`: whether
/// it went through [`gate`] (a command refused before it has no request row).
pub async fn finish(pool: &PgPool, gated: bool, a: &Audit<'_>) -> Result<(), LedgerError> {
    let mut tx = pool.begin().await?;
    if gated {
        sqlx::query(
            "UPDATE command_requests SET state = 'DONE', http_status = $2, result = $3, finished_at = now()
              WHERE request_id = $1",
        )
        .bind(a.request_id)
        .bind(a.status as i32)
        .bind(a.result)
        .execute(&mut *tx)
        .await?;
    }
    append(&mut tx, a).await?;
    tx.commit().await?;
    Ok(())
}

/// At start-up: commands a dead engine left running get a result saying so (their
/// orders are reconciled; the events tell what happened). Returns how many.
pub async fn abandon_running(pool: &PgPool, body: &Value) -> Result<u64, LedgerError> {
    Ok(sqlx::query(
        "UPDATE command_requests SET state = 'DONE', http_status = 503, result = $1, finished_at = now()
          WHERE state = 'RUNNING'",
    )
    .bind(body)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Forgets requests older than [`REMEMBERED_HOURS`]. Returns how many.
pub async fn sweep(pool: &PgPool) -> Result<u64, LedgerError> {
    Ok(sqlx::query(
        "DELETE FROM command_requests WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(REMEMBERED_HOURS as i32)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The sub-account a position belongs to, and whether it is still open.
pub async fn position_owner(
    pool: &PgPool,
    id: &str,
) -> Result<Option<(String, bool)>, LedgerError> {
    if !crate::ledger::is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT sub_account_id::text, status = 'OPEN' FROM virtual_positions WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// The sub-account an order (by our id) belongs to.
pub async fn order_owner(pool: &PgPool, id: &str) -> Result<Option<String>, LedgerError> {
    if !crate::ledger::is_uuid(id) {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("SELECT sub_account_id::text FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The fills booked for an order (one row per position each touched), as JSON.
pub async fn trades_of_order(pool: &PgPool, client_order_id: &str) -> Result<Value, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'id', id, 'subAccountId', sub_account_id, 'positionId', position_id, 'symbol', symbol,
                    'side', side, 'type', type, 'price', price, 'quantity', quantity, 'notional', notional,
                    'fee', fee, 'realizedPnl', realized_pnl, 'action', action, 'exchangeOrderId', exchange_order_id,
                    'clientOrderId', client_order_id, 'status', status, 'timestamp', timestamp)
                    ORDER BY timestamp), '[]'::jsonb)
           FROM trade_executions WHERE client_order_id = $1",
    )
    .bind(client_order_id)
    .fetch_one(pool)
    .await?)
}

/// A position, open or not, as the JS `VirtualPosition` row (numbers as JSON numbers).
pub async fn position_row_json(pool: &PgPool, id: &str) -> Result<Option<Value>, LedgerError> {
    if !crate::ledger::is_uuid(id) {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "SELECT jsonb_build_object(
                    'id', id, 'subAccountId', sub_account_id, 'symbol', symbol, 'side', side,
                    'entryPrice', entry_price, 'quantity', quantity, 'notional', notional,
                    'leverage', leverage, 'margin', margin, 'liquidationPrice', liquidation_price,
                    'status', status, 'realizedPnl', realized_pnl,
                    'babysitterExcluded', babysitter_excluded, 'openedAt', opened_at, 'closedAt', closed_at)
           FROM virtual_positions WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
