//! What a command's handler works with besides the engine: the database and the
//! events' outbox.

use bus::outbox::Outbox;
use sqlx::PgPool;

#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub outbox: Outbox,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}
