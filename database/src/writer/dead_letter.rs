//! Rows PostgreSQL refused are kept, not only counted: each goes to
//! `rejected_snapshots` as JSON with the server's SQLSTATE and message, so an
//! operator can see what was refused and why, and replay it after a fix.

use model::{Contract, GreekSnapshot};
use serde_json::{json, Value};
use sqlx::{Postgres, Transaction};

/// What was refused: a `greek_snapshots` row, a `contracts` row or a
/// `positions_current` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Contract,
    Position,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Contract => "contract",
            Kind::Position => "position",
        }
    }
}

/// One refused row, ready to be stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub kind: Kind,
    pub broker: Option<&'static str>,
    pub sqlstate: Option<String>,
    pub message: String,
    pub row: Value,
}

impl DeadLetter {
    pub fn snapshot(s: &GreekSnapshot, kind: Kind, err: &sqlx::Error) -> Self {
        Self::new(kind, Some(s.broker().as_str()), snapshot_json(s), err)
    }

    pub fn contract(c: &Contract, err: &sqlx::Error) -> Self {
        Self::new(Kind::Contract, None, contract_json(c), err)
    }

    fn new(kind: Kind, broker: Option<&'static str>, row: Value, err: &sqlx::Error) -> Self {
        let (sqlstate, message) = match err {
            sqlx::Error::Database(db) => {
                (db.code().map(|c| c.into_owned()), db.message().to_owned())
            }
            other => (None, other.to_string()),
        };
        Self {
            kind,
            broker,
            sqlstate,
            message,
            row,
        }
    }
}

/// The row with the columns and names of `greek_snapshots`.
pub fn snapshot_json(s: &GreekSnapshot) -> Value {
    let c = s.contract();
    json!({
        "event_time": s.event_time,
        "received_at": s.received_at,
        "broker": s.broker().as_str(),
        "account_id": &*s.position.account_id,
        "contract_key": c.key().as_str(),
        "underlying": c.underlying(),
        "quantity": s.position.quantity.to_string(),
        "multiplier": c.multiplier().to_string(),
        "mark_price": s.mark_price,
        "underlying_price": s.underlying_price,
        "implied_vol": s.implied_vol,
        "delta": s.unit.delta,
        "gamma": s.unit.gamma,
        "theta": s.unit.theta,
        "vega": s.unit.vega,
        "rho": s.unit.rho,
        "position_delta": s.total.delta,
        "position_gamma": s.total.gamma,
        "position_theta": s.total.theta,
        "position_vega": s.total.vega,
        "position_rho": s.total.rho,
        "greeks_source": s.greeks_source.map(|g| g.as_str()),
        "source_seq": s.source_seq,
        "position_side": s.position.side.as_str(),
    })
}

/// The row with the columns and names of `contracts`.
pub fn contract_json(c: &Contract) -> Value {
    json!({
        "contract_key": c.key().as_str(),
        "underlying": c.underlying(),
        "asset_class": c.asset_class().as_str(),
        "expiry": c.expiry(),
        "strike": c.strike().map(|s| s.to_string()),
        "option_right": c.right().map(|r| r.as_char().to_string()),
        "multiplier": c.multiplier().to_string(),
    })
}

pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    letters: &[DeadLetter],
) -> Result<(), sqlx::Error> {
    let conn: &mut sqlx::PgConnection = tx;
    sqlx::query(
        "INSERT INTO rejected_snapshots (kind, broker, sqlstate, message, row_json)
         SELECT k, b, s, m, r::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
             AS t(k, b, s, m, r)",
    )
    .bind(letters.iter().map(|l| l.kind.as_str()).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.broker).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.sqlstate.clone()).collect::<Vec<_>>())
    // A message can quote the refused value; keep it storable whatever it holds.
    .bind(letters.iter().map(|l| l.message.replace('\0', "\\0")).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| storable(&l.row).to_string()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// `row` with every NUL in its text spelled out as the six characters `\u0000`:
/// PostgreSQL's text (and jsonb) cannot hold a NUL, which is often why the row was
/// refused in the first place, and the dead letter must still be stored and queried.
fn storable(row: &Value) -> Value {
    match row {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\\u0000")),
        Value::Array(items) => Value::Array(items.iter().map(storable).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.replace('\0', "\\u0000"), storable(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_spelled_out_everywhere_and_nothing_else_changes() {
        let row = json!({"a": "x\u{0}y", "b": ["\u{0}"], "c": 1.5, "d": "back\\u0000slash"});
        let stored = storable(&row);
        assert_eq!(
            stored,
            json!({"a": "x\\u0000y", "b": ["\\u0000"], "c": 1.5, "d": "back\\u0000slash"})
        );
    }
}
