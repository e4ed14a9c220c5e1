//! The running service on the built-in Binance simulator, driven as the JS gateway
//! drives it: commands pushed on the Redis bus (or posted over HTTP), results read
//! back from `pms:result:{requestId}`. Shared by the gateway and trading-edge tests.

use std::time::Duration;

use database::ledger::{self, AccountKind, NewAccount};
use database::testing::TestDb;
use greekstream::app::App;
use greekstream::config::Config;
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use simulators::testkit::unique_prefix;
use trading::evaluate::LiquidationMode;

pub const TOKEN: &str = "test-control-token-5f2c";
pub const JWT_SECRET: &str = "test-jwt-secret-77a1";
pub const USER: &str = "9a0d3c1e-0000-4000-8000-000000000001";
pub const OTHER_USER: &str = "9a0d3c1e-0000-4000-8000-000000000002";

pub struct Engine {
    pub app: App,
    pub db: TestDb,
    pub prefix: String,
    pub redis: redis::aio::MultiplexedConnection,
    pub account: String,
}

/// The service on `db_url` under `prefix`, its Redis at `redis_url`, recovered.
pub async fn start(db_url: String, prefix: String, redis_url: String) -> App {
    let app = try_start(db_url, prefix, redis_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.executor.get().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app
}

/// The service started (not yet recovered), or why it would not start.
pub async fn try_start(
    db_url: String,
    prefix: String,
    redis_url: String,
) -> Result<App, greekstream::app::AppError> {
    let cfg = Config::from_lookup(&move |k| match k {
        "DATABASE_URL" => Some(db_url.clone()),
        "REDIS_URL" => Some(redis_url.clone()),
        "METRICS_ADDR" | "CONTROL_ADDR" => Some("127.0.0.1:0".into()),
        "GS_SYNTHETIC" | "GS_IBKR" | "GS_TASTYTRADE" => Some("false".into()),
        "GS_REDIS_PREFIX" => Some(prefix.clone()),
        "GS_CONTROL_TOKEN" => Some(TOKEN.into()),
        "GS_JWT_SECRET" => Some(JWT_SECRET.into()),
        _ => None,
    })
    .unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    App::start(cfg, recorder).await
}

/// A sub-account of USER's with 10 000 USDT.
pub async fn user_account(db: &TestDb, name: &str) -> String {
    ledger::create_account(
        &db.pool,
        &NewAccount {
            name: name.into(),
            kind: AccountKind::User,
            user_id: Some(USER.into()),
            initial_balance: Decimal::from(10_000),
            liquidation_mode: LiquidationMode::Adl30,
            maintenance_rate: "0.005".parse().unwrap(),
        },
    )
    .await
    .unwrap()
    .id
}

pub async fn engine() -> Engine {
    engine_via("redis://127.0.0.1:6379".into()).await
}

pub async fn engine_via(redis_url: String) -> Engine {
    let db = TestDb::new().await;
    let prefix = unique_prefix("gw");
    let app = start(db.url(), prefix.clone(), redis_url).await;
    let account = user_account(&db, "gw").await;
    let redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis (README set-up)");
    Engine {
        app,
        db,
        prefix,
        redis,
        account,
    }
}

pub static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn request_id() -> String {
    format!(
        "req-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Deletes every Redis key under `prefix` (the events log among them).
pub async fn forget_keys(prefix: &str) {
    let mut c = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = c.del(keys).await.unwrap();
    }
}

impl Engine {
    pub async fn finish(self) {
        self.app.shutdown().await;
        forget_keys(&self.prefix).await;
    }

    pub fn envelope(&self, kind: &str, body: Value) -> Value {
        let mut v = json!({"v": 1, "type": kind, "requestId": request_id(),
                           "subAccountId": self.account, "userId": USER, "role": "USER",
                           "source": "http", "ts": now(), "deadlineTs": now() + 15_000});
        if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
            m.extend(b);
        }
        v
    }

    pub async fn push(&mut self, kind: &str, env: &Value) {
        let _: i64 = self
            .redis
            .rpush(format!("{}cmd:{kind}", self.prefix), env.to_string())
            .await
            .unwrap();
    }

    pub async fn result(&mut self, request_id: &str) -> Value {
        let key = format!("{}result:{request_id}", self.prefix);
        let mut c = redis::Client::open("redis://127.0.0.1:6379")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&key)
            .arg(30)
            .query_async(&mut c)
            .await
            .unwrap();
        serde_json::from_str(&got.expect("a result within 30 s").1).unwrap()
    }

    /// Sends `env` on the bus and waits for its result.
    pub async fn send(&mut self, kind: &str, env: Value) -> Value {
        self.push(kind, &env).await;
        self.result(env["requestId"].as_str().unwrap()).await
    }

    pub async fn orders(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn market(q: &str) -> Value {
    json!({"symbol": "BTC/USDT:USDT", "side": "LONG", "quantity": q, "leverage": 10})
}

impl Engine {
    /// The built-in Binance simulator the engine trades on.
    pub fn sim(&self) -> &simulators::binance::BinanceSim {
        self.app
            .binance_sim
            .as_ref()
            .expect("the built-in simulator")
    }

    /// The venue's net position in `symbol` (the house's included).
    pub fn venue(&self, symbol: &str) -> Decimal {
        self.sim()
            .positions()
            .get(symbol)
            .copied()
            .unwrap_or_default()
    }

    /// `env` sent with the ADMIN role.
    pub async fn admin(&mut self, kind: &str, body: Value) -> Value {
        let mut env = self.envelope(kind, body);
        env["role"] = "ADMIN".into();
        self.send(kind, env).await
    }

    /// Every event in the capped log so far: (channel's last part, data).
    pub async fn events(&mut self) -> Vec<(String, Value)> {
        let log: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{}events:log", self.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis)
            .await
            .unwrap();
        log.into_iter()
            .map(|(_, fields)| {
                let field = |k: &str| {
                    fields
                        .iter()
                        .find(|(f, _)| f == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let channel = field("channel");
                let kind = channel.rsplit(':').next().unwrap_or_default().to_owned();
                (
                    kind,
                    serde_json::from_str(&field("data")).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// Waits (≤ 30 s) until `sql` (a count) is `want`; returns the last count.
    pub async fn count_until(&self, sql: &str, want: i64) -> i64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            if n == want || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `q` of `symbol` on `side` at 10x.
pub fn order(symbol: &str, side: &str, q: &str) -> Value {
    json!({"symbol": symbol, "side": side, "quantity": q, "leverage": 10})
}
