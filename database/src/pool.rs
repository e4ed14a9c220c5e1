//! Connecting, and applying the migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    InvalidUrl(sqlx::Error),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub fn connect_options(url: &str, application_name: &str) -> Result<PgConnectOptions, DbError> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(DbError::InvalidUrl)?
        .application_name(application_name))
}

/// A pool that connects on demand, so a database that is down at start-up or goes
/// away later is retried by its users instead of failing construction.
pub fn lazy_pool(opts: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(opts)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Server-side limits on every writer connection, so that neither a half-open
/// connection nor a lock held by someone else can stall ingest for ever: the server
/// ends a statement, a lock wait or an abandoned transaction by itself, which also
/// releases the ledger row a retry of the same batch must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// `statement_timeout`: one statement (including a COPY waiting for its data).
    pub statement: Duration,
    /// `lock_timeout`: waiting for a lock (e.g. behind partition maintenance).
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`: a transaction whose client went silent.
    pub idle_in_transaction: Duration,
    /// `tcp_keepalives_idle` (the probes' interval is a third of it, 3 probes): the
    /// server notices a peer that vanished from the network.
    pub keepalive_idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(15),
            lock: Duration::from_secs(5),
            idle_in_transaction: Duration::from_secs(15),
            keepalive_idle: Duration::from_secs(10),
        }
    }
}

impl SessionLimits {
    /// `opts` with these limits set at connection start-up (`-c name=value`).
    pub fn apply(&self, opts: PgConnectOptions) -> PgConnectOptions {
        let ms = |d: Duration| d.as_millis().max(1).to_string();
        let secs = |d: Duration| d.as_secs().max(1).to_string();
        opts.options([
            ("statement_timeout", ms(self.statement)),
            ("lock_timeout", ms(self.lock)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction),
            ),
            ("tcp_keepalives_idle", secs(self.keepalive_idle)),
            ("tcp_keepalives_interval", secs(self.keepalive_idle / 3)),
            ("tcp_keepalives_count", "3".to_owned()),
        ])
    }
}
