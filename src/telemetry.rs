//! Logging and the Prometheus exporter. `/metrics` is served on its own listener
//! (METRICS_ADDR, see `app.rs`) so scraping never competes with the control API.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use database::writer::{BATCH_ROWS, FLUSH_DURATION, INGEST_LATENCY};

/// Seconds: fine below 100 ms where we aim, coarse up to the 500 ms target and past it.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 20000.0,
];
/// |venue delta − model delta|: conventions (American exercise, day counts, dividends)
/// explain the first buckets, a mis-scaled or mis-signed feed the last.
pub const DEVIATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

/// Order latencies (seconds): the engine's own overhead (goal ≤ 1 ms), the venue's
/// acknowledgement, a fill's booking (goal ≤ 20 ms).
pub const ORDER_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the global recorder (once per process) and registers every metric at zero.
pub fn install_recorder() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(INGEST_LATENCY.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(FLUSH_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), BATCH_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(processor::pipeline::MODEL_DELTA_DEVIATION.into()),
            DEVIATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(engine::execution::OVERHEAD.into()),
            ORDER_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(engine::execution::ACK.into()), ORDER_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(engine::execution::FILL_BOOKING.into()),
            ORDER_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(gateway::DURATION.into()), ORDER_BUCKETS)?
        .install_recorder()?;
    describe();
    processor::pipeline::register_metrics();
    database::writer::register_metrics();
    metrics::counter!(database::partitions::LOCK_TIMEOUTS).increment(0);
    streaming::ibkr::client::register_metrics();
    streaming::tastytrade::client::register_metrics();
    streaming::binance::client::register_metrics();
    for ch in ["events", "snapshots"] {
        metrics::gauge!(crate::pipeline::CHANNEL_DEPTH, "channel" => ch).set(0.0);
    }
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use processor::pipeline::{EVENTS_RECEIVED, EVENTS_REJECTED, VALUES_NON_FINITE};
    describe_histogram!(
        INGEST_LATENCY,
        Unit::Seconds,
        "received_at to commit observed by the writer, per broker"
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "time to write one batch, retries included"
    );
    describe_histogram!(BATCH_ROWS, Unit::Count, "rows per batch");
    describe_counter!(EVENTS_RECEIVED, "broker events reaching the processor");
    describe_counter!(
        gateway::COMMANDS,
        "gateway commands taken (bus and HTTP), by type"
    );
    describe_counter!(
        gateway::REJECTED,
        "gateway commands answered with an error, by type and code"
    );
    describe_counter!(
        gateway::UNDECODABLE,
        "gateway input without a requestId to answer on, dropped, by code"
    );
    describe_histogram!(
        gateway::DURATION,
        Unit::Seconds,
        "a gateway command from taken to answered, by type"
    );
    describe_counter!(
        gateway::consumer::REPLAYED,
        "commands run again: stranded by a lost connection or left in flight by a dead engine"
    );
    describe_counter!(
        processor::pipeline::MODEL_GREEKS,
        "option snapshots whose missing Greeks the local model filled in (greeks_source = model)"
    );
    describe_counter!(
        processor::pipeline::MODEL_CROSS_CHECKS,
        "option snapshots with venue Greeks whose delta was compared with the local model's"
    );
    describe_counter!(
        processor::pipeline::MODEL_DISAGREEMENTS,
        "cross-checks where the venue's delta and the model's differ by more than GS_MODEL_CROSS_CHECK_DELTA"
    );
    describe_histogram!(
        processor::pipeline::MODEL_DELTA_DEVIATION,
        "absolute difference between the venue's delta and the local model's at the venue's IV"
    );
    describe_counter!(
        processor::position_stream::UPDATES,
        "changes applied to the unified position book, each with its seq"
    );
    describe_counter!(
        processor::position_stream::RESYNCS,
        "position-stream subscribers that fell behind and were resynchronized from a snapshot"
    );
    describe_counter!(
        crate::position_events::PUBLISHED,
        "position updates published to Redis <prefix>greeks:position_update"
    );
    describe_counter!(
        crate::position_events::PUBLISH_ERRORS,
        "failed attempts to publish position updates to Redis"
    );
    describe_counter!(
        EVENTS_REJECTED,
        "events or rows refused (reason: missing_field, invalid_*, database)"
    );
    describe_counter!(
        VALUES_NON_FINITE,
        "NaN/Infinity values from a venue, stored as NULL"
    );
    describe_counter!(
        database::writer::EVENTS_PERSISTED,
        "rows committed to greek_snapshots"
    );
    describe_counter!(
        database::writer::DB_ERRORS,
        "database errors (kind: transient, permanent, maintenance)"
    );
    describe_counter!(database::writer::DB_RETRIES, "batch write retries");
    describe_counter!(
        database::writer::DEAD_LETTERS,
        "rows PostgreSQL refused, kept in rejected_snapshots (kind: snapshot, contract, position)"
    );
    describe_counter!(
        database::writer::DEAD_LETTER_FAILURES,
        "dead letters rejected_snapshots itself refused (lost; see the log)"
    );
    describe_counter!(
        database::partitions::LOCK_TIMEOUTS,
        "partition maintenance steps that gave up their locks after GS_PARTITION_LOCK_TIMEOUT_MS (retried later)"
    );
    describe_gauge!(
        crate::health::HEALTHY,
        "1 when GET /health answers 200, 0 when it answers 503"
    );
    describe_gauge!(
        crate::health::HEALTH_CHECK,
        "1 when the check passes, 0 when it fails (check: writer, processor, or a source's broker)"
    );
    describe_gauge!(
        database::writer::BUFFER_DEPTH,
        "rows buffered in the writer, not yet in a batch"
    );
    describe_gauge!(
        database::writer::INFLIGHT_ROWS,
        "rows in batches being written"
    );
    describe_gauge!(
        crate::pipeline::CHANNEL_DEPTH,
        "messages waiting in a pipeline channel"
    );
    describe_gauge!(
        streaming::ws::WS_CONNECTION_STATE,
        "1 for the state each broker socket is in (disconnected, connecting, connected, unauthenticated)"
    );
    describe_counter!(
        streaming::ws::WS_RECONNECTS,
        "WebSocket connections lost or refused, by broker, socket and reason"
    );
    describe_counter!(streaming::ws::WS_FRAMES, "WebSocket frames received");
    describe_counter!(
        streaming::ws::MALFORMED_FRAMES,
        "venue frames or rows that could not be parsed and were skipped"
    );
    describe_gauge!(
        streaming::ibkr::client::AUTHENTICATED,
        "1 when the broker session is authenticated"
    );
    describe_counter!(
        streaming::ibkr::client::SUBSCRIPTIONS_SENT,
        "IBKR smd subscriptions sent (first, renewal, after reconnect or staleness)"
    );
    describe_gauge!(
        streaming::ibkr::client::POSITIONS,
        "positions held at the broker"
    );
    describe_counter!(
        streaming::ibkr::client::REST_ERRORS,
        "broker REST calls answered with an error status"
    );
    describe_counter!(
        streaming::tastytrade::client::SUBSCRIPTIONS_SENT,
        "DXLink subscriptions sent (Greeks and Quote per symbol; all again after a reconnect or re-authorization)"
    );
    describe_counter!(
        streaming::tastytrade::client::POSITION_UPDATES,
        "position changes pushed by the Tastytrade account streamer"
    );
    describe_counter!(
        streaming::tastytrade::client::TOKEN_REFRESHES,
        "Tastytrade tokens fetched (token: access, quote)"
    );
    describe_gauge!(
        streaming::binance::rest::USED_WEIGHT,
        "Binance request weight used this minute, from X-MBX-USED-WEIGHT-1M (api: fapi, eapi)"
    );
    describe_gauge!(
        streaming::binance::rest::TIME_OFFSET,
        Unit::Milliseconds,
        "Binance server time minus our clock, measured every minute"
    );
    describe_counter!(
        streaming::binance::rest::RATE_LIMITED,
        "Binance 429 (rate limited) and 418 (IP banned) answers; requests stop until the pause ends"
    );
    describe_counter!(
        streaming::binance::client::BOOK_RESYNCS,
        "local order books dropped on a depth gap (pu chain broken) and rebuilt from a snapshot"
    );
    describe_counter!(
        streaming::binance::client::USER_EVENTS,
        "Binance user data stream events (event: account_update, order_trade_update, listen_key_expired, other)"
    );
    describe_counter!(
        streaming::binance::client::LISTEN_KEYS,
        "Binance listen keys created (at start, after expiry or an unknown-key answer)"
    );
    describe_counter!(
        bus::price_cache::CACHE_WRITES,
        "symbols written to the Redis price cache"
    );
    describe_counter!(
        bus::price_cache::CACHE_ERRORS,
        "Redis price cache failures (Redis down or refusing); retried with backoff"
    );
}
