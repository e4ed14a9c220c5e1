//! Shared by the integration tests: realistic snapshots from the synthetic source.
#![allow(dead_code)]

pub mod bus;
pub mod schema;

use std::time::Duration;

use chrono::{DateTime, Utc};
use model::GreekSnapshot;
use processor::normalize::Normalizer;
use sqlx::PgPool;
use streaming::synthetic::{Generator, SyntheticConfig};
use streaming::{Broker, BrokerEvent, BrokerPayload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` normalized snapshots, all stamped `at`, with distinct `source_seq` 0..n.
pub fn snapshots(n: usize, at: DateTime<Utc>) -> Vec<GreekSnapshot> {
    let mut g = Generator::new(&SyntheticConfig::default());
    let mut norm = Normalizer::new();
    (0..n)
        .map(|_| {
            let (account, tick) = g.next_tick(at);
            let ev = BrokerEvent {
                broker: Broker::Synthetic,
                account,
                received_at: Utc::now(),
                payload: BrokerPayload::Synthetic(tick),
            };
            norm.normalize(ev)
                .expect("generator emits valid ticks")
                .snapshot
        })
        .collect()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Polls `sql` (a count) until it equals `want` or `limit` passes; returns the last value.
pub async fn wait_for_count(pool: &PgPool, sql: &str, want: i64, limit: Duration) -> i64 {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let n = count(pool, sql).await;
        if n == want || tokio::time::Instant::now() >= until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One plain HTTP/1.1 GET: the status and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// One plain HTTP/1.1 POST of `body` with extra `headers`: the status and the body.
pub async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    http_request(addr, "POST", path, headers, body).await
}

/// One plain HTTP/1.1 request of any method.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    http(
        addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

async fn http(addr: std::net::SocketAddr, request: String) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
