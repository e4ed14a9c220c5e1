//! The JS gateway's contract (js-gateway §2): commands in — from the Redis bus
//! ([`consumer`]) or over HTTP ([`http`]) — through one pipeline ([`Gateway::execute`]):
//!
//! parse (pure, `trading::command`) → the sub-account and its owner → the
//! idempotency gate (PostgreSQL) → the account's lane (one command at a time per
//! sub-account, kill switches first) → the deadline → the handler → the result,
//! stored with its audit line, and returned.
//!
//! Every command that can be answered is answered, with the HTTP status and body
//! the JS route returns and a stable `code` when it failed.

pub mod auth;
pub mod consumer;
mod handlers;
pub mod http;
mod lanes;
pub mod lease;
mod reply;
pub mod schema;
mod services;

pub use reply::{result_json, storage, Reply};
use services::Services;

use std::sync::Arc;
use std::time::Instant;

use database::commands::{self, Audit, Gate, Request};
use database::ledger;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use trading::command::{self, Command, Envelope, Rejected, Role};

use bus::outbox::Outbox;
use engine::execution::{now_ms, Executor};

pub const COMMANDS: &str = "greekstream_gateway_commands_total";
pub const REJECTED: &str = "greekstream_gateway_rejected_total";
pub const UNDECODABLE: &str = "greekstream_gateway_undecodable_total";
pub const DURATION: &str = "greekstream_gateway_command_seconds";

/// The pipeline every command goes through. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) services: Services,
    pub(crate) executor: Arc<OnceCell<Executor>>,
    lanes: lanes::Lanes,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// Says what a dead engine's running commands became.
fn restarted_body() -> Value {
    json!({"error": "The engine restarted while this command ran; its orders were reconciled with the venue and the events tell what happened",
           "errors": [{"code": "ENGINE_RESTARTED", "message": "The engine restarted while this command ran"}]})
}

impl Gateway {
    /// A gateway over `executor` (set once the engine has recovered; until then
    /// commands are answered 503). Commands a previous engine left running are
    /// answered first (`ENGINE_RESTARTED`), and forgotten after 24 h.
    pub async fn new(
        pool: PgPool,
        executor: Arc<OnceCell<Executor>>,
        outbox: Outbox,
    ) -> Result<Self, ledger::LedgerError> {
        for k in command::Kind::ALL {
            metrics::counter!(COMMANDS, "type" => k.name()).increment(0);
        }
        metrics::counter!(UNDECODABLE).increment(0);
        let abandoned = commands::abandon_running(&pool, &restarted_body()).await?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "commands a previous engine left running are answered ENGINE_RESTARTED"
            );
        }
        commands::sweep(&pool).await?;
        Ok(Self {
            services: Services { pool, outbox },
            executor,
            lanes: lanes::Lanes::default(),
        })
    }

    pub fn ready(&self) -> bool {
        self.executor.get().is_some()
    }

    /// Runs one command to its answer.
    pub async fn execute(&self, env: Envelope) -> Reply {
        let started = Instant::now();
        let kind = command::Kind::parse(&env.kind).map_or("unknown", |k| k.name());
        metrics::counter!(COMMANDS, "type" => kind).increment(1);
        let (reply, gated, account) = self.run(&env).await;
        if let Some(code) = reply.code {
            metrics::counter!(REJECTED, "type" => kind, "code" => code).increment(1);
        }
        metrics::histogram!(DURATION, "type" => kind).record(started.elapsed().as_secs_f64());
        let audit = Audit {
            request_id: &env.request_id,
            kind: &env.kind,
            sub_account_id: account.as_deref().or(env.sub_account_id.as_deref()),
            user_id: env.user_id.as_deref(),
            role: env.role.as_str(),
            source: &env.source,
            status: reply.status,
            code: reply.code,
            command: &env.body(),
            result: &reply.body,
        };
        if let Err(e) = commands::finish(&self.services.pool, gated, &audit).await {
            tracing::error!(request = %env.request_id, error = %e, "command result not stored");
        }
        reply
    }

    /// The answer, whether the idempotency gate was passed, and the account.
    async fn run(&self, env: &Envelope) -> (Reply, bool, Option<String>) {
        let cmd = match command::parse(env) {
            Ok(c) => c,
            Err(r) => return (r.into(), false, None),
        };
        let Some(exec) = self.executor.get().cloned() else {
            return (
                Reply::error("ENGINE_RECOVERING", "Trading engine unavailable"),
                false,
                None,
            );
        };
        let account = match self.account_of(env, &cmd).await {
            Ok(a) => a,
            Err(r) => return (r, false, None),
        };
        let body = env.body();
        let gate = commands::gate(
            &self.services.pool,
            &Request {
                request_id: &env.request_id,
                kind: &env.kind,
                sub_account_id: account.as_deref(),
                idempotency_key: env.idempotency_key.as_deref(),
                body: &body,
            },
        )
        .await;
        match gate {
            Ok(Gate::Start) => {}
            Ok(Gate::Done { status, body }) => {
                let code = body["errors"][0]["code"].as_str().map(code_of);
                let reply = Reply {
                    status,
                    code,
                    body,
                    headers: None,
                };
                return (reply, false, account);
            }
            Ok(Gate::Running) => {
                return (
                    Reply::error("IDEMPOTENCY_IN_PROGRESS", "Request already in progress"),
                    false,
                    account,
                )
            }
            Ok(Gate::KeyReused) => {
                return (
                    Reply::error(
                        "IDEMPOTENCY_KEY_REUSED",
                        "Idempotency-Key was already used with a different body",
                    ),
                    false,
                    account,
                )
            }
            Err(e) => return (storage(e), false, account),
        }
        let lane_key = account.clone().unwrap_or_default();
        let kill = command::Kind::parse(&env.kind).is_some_and(|k| k.kill_switch());
        let (env2, account2) = (env.clone(), account.clone());
        let this = self.clone();
        let job = async move {
            if env2.expired(now_ms()) {
                return lanes::Step::Done(Reply::error(
                    "COMMAND_EXPIRED",
                    "The command's deadline passed before it could start",
                ));
            }
            handlers::run(&this.services, &exec, &env2, account2.as_deref(), cmd).await
        };
        let reply = self.lanes.run(&lane_key, kill, job).await;
        (reply, true, account)
    }

    /// The sub-account the command acts on, checked: it exists, and the sender owns
    /// it (or is an admin); a position or order named belongs to it.
    async fn account_of(&self, env: &Envelope, cmd: &Command) -> Result<Option<String>, Reply> {
        let named = match cmd {
            Command::Close { position_id }
            | Command::LimitClose { position_id, .. }
            | Command::AdminTakeover { position_id }
            | Command::BabysitterClose { position_id, .. } => {
                match commands::position_owner(&self.services.pool, position_id).await {
                    Ok(Some((owner, _))) => Some(owner),
                    Ok(None) => {
                        return Err(Reply::error("POSITION_NOT_FOUND", "Position not found"))
                    }
                    Err(e) => return Err(storage(e)),
                }
            }
            Command::CancelOrder { order_id } => {
                match commands::order_owner(&self.services.pool, order_id).await {
                    Ok(Some(owner)) => Some(owner),
                    Ok(None) => return Err(Reply::error("ORDER_NOT_FOUND", "Order not found")),
                    Err(e) => return Err(storage(e)),
                }
            }
            _ => None,
        };
        let account = match (&named, &env.sub_account_id) {
            (Some(owner), Some(given)) if owner != given => {
                let what = if matches!(cmd, Command::CancelOrder { .. }) {
                    "order"
                } else {
                    "position"
                };
                return Err(Reply::error(
                    "FORBIDDEN",
                    format!("You do not own this {what}"),
                ));
            }
            (Some(owner), _) => owner.clone(),
            (None, Some(given)) if cmd.needs_account() => given.clone(),
            (None, _) => return Ok(None),
        };
        let row = self.account_row(&account).await?;
        owns(&row, env.user_id.as_deref(), env.role)?;
        Ok(Some(account))
    }
}

impl Gateway {
    /// The account, or the refusal to answer with.
    pub(crate) async fn account_row(&self, id: &str) -> Result<ledger::AccountRow, Reply> {
        match ledger::account(&self.services.pool, id).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Rejected::account_not_found().into()),
            Err(e) => Err(storage(e)),
        }
    }
}

/// Whether `user` (with `role`) may act on `row`: admins on any, users on their own.
pub(crate) fn owns(row: &ledger::AccountRow, user: Option<&str>, role: Role) -> Result<(), Reply> {
    if role == Role::Admin || (user.is_some() && row.user_id.as_deref() == user) {
        return Ok(());
    }
    Err(Reply::error("FORBIDDEN", "You do not own this sub-account"))
}

/// A stored code read back as the contract's own (a `'static` one, from the one list).
fn code_of(s: &str) -> &'static str {
    schema::ERROR_CODES
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("REPLAYED_ERROR")
}
