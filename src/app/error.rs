//! Why the service could not start.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] database::DbError),
    #[error("cancelled before the database was reachable")]
    Cancelled,
    #[error(transparent)]
    Redis(#[from] bus::InvalidRedisUrl),
    #[error("the command gateway cannot start: {0}")]
    Gateway(String),
}
