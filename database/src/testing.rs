//! Helpers for tests that need PostgreSQL: a fresh, migrated database per test
//! (dropped again when the handle goes, even if the test panicked), and a TCP proxy
//! that can make the server unreachable on demand.
//!
//! The server is `TEST_DATABASE_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/postgres`);
//! the user must be allowed to create databases.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::pool::{connect_options, lazy_pool, migrate};

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A database of one's own, migrated; dropped on `Drop`.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
    pub pool: PgPool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// A database with no schema, for testing the migrations themselves.
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!(
            "gs_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let admin = connect_options(&admin_url(), "greekstream-tests").expect("TEST_DATABASE_URL");
        let mut conn = admin.connect().await.expect("connect to the test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        let pool = lazy_pool(options.clone(), 8);
        if migrated {
            migrate(&pool).await.expect("migrations apply");
        }
        Self {
            name,
            options,
            pool,
        }
    }

    /// A URL for this database (the admin URL with the database name replaced).
    pub fn url(&self) -> String {
        let admin = admin_url();
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        match query {
            Some(q) => format!("{server}/{}?{q}", self.name),
            None => format!("{server}/{}", self.name),
        }
    }

    /// Connect options for this database through another address (e.g. a [`TcpProxy`]),
    /// in plain text so the proxy can see the protocol.
    pub fn options_via(&self, addr: SocketAddr) -> PgConnectOptions {
        self.options
            .clone()
            .host(&addr.ip().to_string())
            .port(addr.port())
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
    }

    /// The server's address, for a proxy in front of it.
    pub fn server_addr(&self) -> SocketAddr {
        let host = self.options.get_host();
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        };
        format!("{host}:{}", self.options.get_port())
            .parse()
            .expect("TEST_DATABASE_URL host must be an IP address or localhost")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime; do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let admin = connect_options(&admin_url(), "greekstream-tests").expect("url");
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A loopback TCP proxy that can be cut (every connection closed, new ones refused)
/// and restored: a database server that becomes unreachable for a while. It can
/// blackhole instead: every open connection goes half-open for good (both sockets
/// stay open, nothing is forwarded either way, as when a NAT or firewall forgets a
/// flow), and connections made meanwhile hang the same way, until `restore`. It can
/// also make the next COMMIT ambiguous: the COMMIT reaches the server and commits,
/// but the connection dies before the client sees the reply.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    swallow_commit: Arc<AtomicBool>,
    blackhole: Arc<Blackhole>,
}

/// `epoch` counts blackholes: a connection that saw an epoch other than its own
/// never forwards again.
#[derive(Default)]
struct Blackhole {
    active: AtomicBool,
    epoch: AtomicU32,
    /// Blackhole as soon as a client sends a message containing these bytes.
    trigger: std::sync::Mutex<Option<&'static [u8]>>,
}

impl Blackhole {
    fn start(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.active.store(true, Ordering::SeqCst);
    }

    /// Whether `chunk` sets off an armed trigger (which then blackholes).
    fn triggered_by(&self, chunk: &[u8]) -> bool {
        let mut trigger = self.trigger.lock().expect("trigger lock");
        let hit = trigger.is_some_and(|t| chunk.windows(t.len()).any(|w| w == t));
        if hit {
            *trigger = None;
            self.start();
        }
        hit
    }

    fn frozen(&self, since: u32) -> bool {
        self.active.load(Ordering::SeqCst) || self.epoch.load(Ordering::SeqCst) != since
    }
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (up, up_rx) = watch::channel(true);
        let swallow_commit = Arc::new(AtomicBool::new(false));
        let swallow = swallow_commit.clone();
        let blackhole = Arc::new(Blackhole::default());
        let hole = blackhole.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*up_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut rx = up_rx.clone();
                let (swallow, hole) = (swallow.clone(), hole.clone());
                tokio::spawn(async move {
                    let epoch = hole.epoch.load(Ordering::SeqCst);
                    if hole.active.load(Ordering::SeqCst) {
                        // Accepted, then never answered: the socket stays open.
                        let _held = inbound;
                        rx.wait_for(|up| !*up).await.ok();
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = pump(inbound, outbound, swallow, &hole, epoch) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            swallow_commit,
            blackhole,
        }
    }

    /// Every open connection goes half-open for good; new ones hang until
    /// [`restore`](Self::restore).
    pub fn blackhole(&self) {
        self.blackhole.start();
    }

    /// [`blackhole`](Self::blackhole) the moment a client sends a message containing
    /// `bytes` (that message is not forwarded): e.g. `b"COPY "` catches a writer in
    /// the middle of its transaction.
    pub fn blackhole_when_client_sends(&self, bytes: &'static [u8]) {
        *self.blackhole.trigger.lock().expect("trigger lock") = Some(bytes);
    }

    /// Whether an armed trigger is still waiting for its bytes.
    pub fn blackhole_trigger_pending(&self) -> bool {
        self.blackhole
            .trigger
            .lock()
            .expect("trigger lock")
            .is_some()
    }

    /// Closes every proxied connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// New connections go through again (half-open ones stay as they are).
    pub fn restore(&self) {
        self.blackhole.active.store(false, Ordering::SeqCst);
        self.up.send_replace(true);
    }

    /// The next COMMIT through the proxy commits on the server, but its reply is
    /// swallowed and the connection closed.
    pub fn make_next_commit_ambiguous(&self) {
        self.swallow_commit.store(true, Ordering::SeqCst);
    }

    pub fn commit_ambiguity_pending(&self) -> bool {
        self.swallow_commit.load(Ordering::SeqCst)
    }
}

async fn pump(
    inbound: TcpStream,
    outbound: TcpStream,
    swallow: Arc<AtomicBool>,
    hole: &Blackhole,
    epoch: u32,
) {
    let (mut cr, mut cw) = inbound.into_split();
    let (mut sr, mut sw) = outbound.into_split();
    let swallowing = AtomicBool::new(false);
    let to_server = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if hole.triggered_by(&buf[..n]) || hole.frozen(epoch) {
                std::future::pending::<()>().await;
            }
            let chunk = &buf[..n];
            let is_commit = chunk.windows(7).any(|w| w == b"COMMIT\0");
            if is_commit && swallow.swap(false, Ordering::SeqCst) {
                // Let the server commit and answer; the other direction then vanishes
                // instead of relaying the answer.
                swallowing.store(true, Ordering::SeqCst);
                if sw.write_all(chunk).await.is_err() {
                    return;
                }
                std::future::pending::<()>().await;
            }
            if sw.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                // A server that gives up behind the blackhole is not seen to go either.
                Ok(0) | Err(_) if hole.frozen(epoch) => std::future::pending().await,
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if swallowing.load(Ordering::SeqCst) {
                return;
            }
            if hole.frozen(epoch) {
                std::future::pending::<()>().await;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection.
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
    }
}
