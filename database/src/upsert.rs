//! The small side tables the writer keeps current: `contracts` (first sight of each
//! contract) and `positions_current` (latest snapshot per position). One statement
//! each, with arrays unnested server-side.

use std::sync::Arc;

use model::{Contract, GreekSnapshot};
use rust_decimal::Decimal;
use sqlx::{PgConnection, Postgres, Transaction};

pub async fn contracts(
    tx: &mut Transaction<'_, Postgres>,
    contracts: &[Arc<Contract>],
) -> Result<(), sqlx::Error> {
    let conn: &mut PgConnection = tx;
    sqlx::query(
        "INSERT INTO contracts (contract_key, underlying, asset_class, expiry, strike, option_right, multiplier)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::date[], $5::numeric[], $6::text[], $7::numeric[])
         ON CONFLICT (contract_key) DO NOTHING",
    )
    .bind(contracts.iter().map(|c| c.key().to_string()).collect::<Vec<_>>())
    .bind(contracts.iter().map(|c| c.underlying().to_owned()).collect::<Vec<_>>())
    .bind(contracts.iter().map(|c| c.asset_class().as_str()).collect::<Vec<_>>())
    .bind(contracts.iter().map(|c| c.expiry()).collect::<Vec<_>>())
    .bind(contracts.iter().map(|c| c.strike()).collect::<Vec<_>>())
    .bind(
        contracts
            .iter()
            .map(|c| c.right().map(|r| r.as_char().to_string()))
            .collect::<Vec<_>>(),
    )
    .bind(contracts.iter().map(|c| c.multiplier()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn positions(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[GreekSnapshot],
) -> Result<(), sqlx::Error> {
    let conn: &mut PgConnection = tx;
    let f = |get: &dyn Fn(&GreekSnapshot) -> Option<f64>| rows.iter().map(get).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO positions_current (broker, account_id, contract_key, underlying, quantity, multiplier,
             mark_price, underlying_price, implied_vol, delta, gamma, theta, vega, rho,
             position_delta, position_gamma, position_theta, position_vega, position_rho,
             greeks_source, event_time, position_side)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[],
             $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[],
             $13::float8[], $14::float8[], $15::float8[], $16::float8[], $17::float8[], $18::float8[],
             $19::float8[], $20::text[], $21::timestamptz[], $22::text[])
         ON CONFLICT (broker, account_id, contract_key, position_side) DO UPDATE SET
             underlying = EXCLUDED.underlying, quantity = EXCLUDED.quantity,
             multiplier = EXCLUDED.multiplier, mark_price = EXCLUDED.mark_price,
             underlying_price = EXCLUDED.underlying_price, implied_vol = EXCLUDED.implied_vol,
             delta = EXCLUDED.delta, gamma = EXCLUDED.gamma, theta = EXCLUDED.theta,
             vega = EXCLUDED.vega, rho = EXCLUDED.rho,
             position_delta = EXCLUDED.position_delta, position_gamma = EXCLUDED.position_gamma,
             position_theta = EXCLUDED.position_theta, position_vega = EXCLUDED.position_vega,
             position_rho = EXCLUDED.position_rho, greeks_source = EXCLUDED.greeks_source,
             event_time = EXCLUDED.event_time, updated_at = clock_timestamp()
         WHERE positions_current.event_time <= EXCLUDED.event_time",
    )
    .bind(rows.iter().map(|r| r.broker().as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position.account_id.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.contract().key().to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.contract().underlying().to_owned()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position.quantity).collect::<Vec<Decimal>>())
    .bind(rows.iter().map(|r| r.contract().multiplier()).collect::<Vec<Decimal>>())
    .bind(f(&|r| r.mark_price))
    .bind(f(&|r| r.underlying_price))
    .bind(f(&|r| r.implied_vol))
    .bind(f(&|r| r.unit.delta))
    .bind(f(&|r| r.unit.gamma))
    .bind(f(&|r| r.unit.theta))
    .bind(f(&|r| r.unit.vega))
    .bind(f(&|r| r.unit.rho))
    .bind(f(&|r| r.total.delta))
    .bind(f(&|r| r.total.gamma))
    .bind(f(&|r| r.total.theta))
    .bind(f(&|r| r.total.vega))
    .bind(f(&|r| r.total.rho))
    .bind(
        rows.iter()
            .map(|r| r.greeks_source.map(|s| s.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.event_time).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.position.side.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
