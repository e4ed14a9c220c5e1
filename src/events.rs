//! Publishes every unified position update to Redis `<prefix>events:position_update`
//! as JSON `{"seq", "position"}` (the same position shape as the read API). After
//! falling behind (or at start) the publisher sends each position of the book's
//! snapshot with `"resync": true` and the snapshot's `seq`, so a consumer that
//! applies messages in order converges on the book. Redis is a bus, not the source
//! of truth: while it is down, errors are counted and logged once, publishing
//! retries with backoff, and the stream (and the database) go on.

use backoff::backoff::Backoff;
use std::time::Duration;

use processor::position_stream::{PositionHub, StreamItem};
use redis::aio::ConnectionManager;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::position_json;

pub const PUBLISHED: &str = "greekstream_position_events_published_total";
pub const PUBLISH_ERRORS: &str = "greekstream_position_events_errors_total";

pub fn channel(prefix: &str) -> String {
    format!("{prefix}events:position_update")
}

pub async fn run_publisher(
    redis_url: String,
    prefix: String,
    hub: PositionHub,
    cancel: CancellationToken,
) {
    metrics::counter!(PUBLISHED).increment(0);
    metrics::counter!(PUBLISH_ERRORS).increment(0);
    let channel = channel(&prefix);
    let mut sub = hub.subscribe();
    let mut conn: Option<ConnectionManager> = None;
    let mut failing = false;
    let mut backoff = streaming::retry::redis();
    loop {
        let item = tokio::select! {
            item = sub.recv() => item,
            _ = cancel.cancelled() => return,
        };
        let Some(item) = item else { return };
        let messages: Vec<String> = match item {
            StreamItem::Update(u) => {
                vec![json!({"seq": u.seq, "position": position_json(&u.position)}).to_string()]
            }
            StreamItem::Snapshot { seq, positions } => positions
                .iter()
                .map(|p| {
                    json!({"seq": seq, "resync": true, "position": position_json(p)}).to_string()
                })
                .collect(),
        };
        for m in messages {
            loop {
                let result = match &mut conn {
                    Some(c) => redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(&m)
                        .query_async::<i64>(c)
                        .await
                        .map(drop),
                    None => match redis::Client::open(redis_url.as_str()) {
                        Ok(client) => match ConnectionManager::new(client).await {
                            Ok(c) => {
                                conn = Some(c);
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    },
                };
                match result {
                    Ok(()) => {
                        metrics::counter!(PUBLISHED).increment(1);
                        if failing {
                            tracing::info!("Redis is back: position events flow again");
                        }
                        failing = false;
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        metrics::counter!(PUBLISH_ERRORS).increment(1);
                        if !failing {
                            tracing::warn!(error = %e, "cannot publish position events to Redis; retrying");
                        }
                        failing = true;
                        let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = cancel.cancelled() => return,
                        }
                    }
                }
            }
        }
    }
}
