//! Publishes every unified position update to Redis `<prefix>greeks:position_update`
//! as JSON `{"seq", "position"}` (the same position shape as the read API). After
//! falling behind (or at start) the publisher sends each position of the book's
//! snapshot with `"resync": true` and the snapshot's `seq`, so a consumer that
//! applies messages in order converges on the book. Redis is a bus, not the source
//! of truth: while it is down, errors are counted and logged once, publishing
//! retries with backoff, and the stream (and the database) go on.

use processor::position_stream::{PositionHub, StreamItem};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use bus::RedisLink;
use processor::position_view::position_json;

pub const PUBLISHED: &str = "greekstream_position_events_published_total";
pub const PUBLISH_ERRORS: &str = "greekstream_position_events_errors_total";

pub fn channel(prefix: &str) -> String {
    format!("{prefix}greeks:position_update")
}

pub async fn run_publisher(
    mut link: RedisLink,
    prefix: String,
    hub: PositionHub,
    cancel: CancellationToken,
) {
    metrics::counter!(PUBLISHED).increment(0);
    let channel = channel(&prefix);
    let mut sub = hub.subscribe();
    let mut conn: Option<MultiplexedConnection> = None;
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
            // Each message is retried until it is published: the hub's own resync
            // takes over if this falls too far behind.
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(&channel).arg(&m);
            if !link.run_until_done(&mut conn, &cmd, &cancel).await {
                return;
            }
            metrics::counter!(PUBLISHED).increment(1);
        }
    }
}
