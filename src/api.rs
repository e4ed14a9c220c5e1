//! The read API on the control listener, for the JS gateway and for people: current
//! positions and portfolio Greeks as JSON, and the position stream as server-sent
//! events. Shapes: `api/schema.json`.
//!
//! - `GET /v1/positions?broker=&account=&underlying=`
//! - `GET /v1/portfolio?by=total|broker|account|underlying&broker=&account=&underlying=`
//! - `GET /v1/positions/stream?broker=&account=&underlying=` (SSE: one `snapshot`
//!   event, then `update` events; another `snapshot` if the client fell behind)
//!
//! Bad parameters get a 400 with a stable `code` and a message.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use model::portfolio::{aggregate, GroupBy, Position};
use processor::position_stream::{PositionHub, StreamItem};
use processor::position_view::{group_json, position_json, Filter};
use serde::Deserialize;
use serde_json::{json, Value};
use streaming::Broker;

pub fn router(hub: PositionHub) -> Router {
    Router::new()
        .route("/v1/positions", get(positions))
        .route("/v1/portfolio", get(portfolio))
        .route("/v1/positions/stream", get(stream_positions))
        .with_state(hub)
}

#[derive(Debug)]
pub struct ApiError {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    broker: Option<String>,
    account: Option<String>,
    underlying: Option<String>,
    by: Option<String>,
}

fn filter(p: &Params) -> Result<Filter, ApiError> {
    let broker = p
        .broker
        .as_deref()
        .map(str::parse::<Broker>)
        .transpose()
        .map_err(|e| ApiError {
            code: "invalid_broker",
            message: e.to_string(),
        })?;
    Ok(Filter::new(
        broker,
        p.account.clone(),
        p.underlying.as_deref(),
    ))
}

async fn positions(
    State(hub): State<PositionHub>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let filter = filter(&p)?;
    let (seq, rows) = hub.read(|b| {
        let mut rows: Vec<&Position> = b.positions().filter(|p| filter.matches(p)).collect();
        rows.sort_by(|a, b| {
            (a.broker, &a.account_id, &a.contract.key(), a.side).cmp(&(
                b.broker,
                &b.account_id,
                &b.contract.key(),
                b.side,
            ))
        });
        (
            b.seq(),
            rows.into_iter().map(position_json).collect::<Vec<_>>(),
        )
    });
    Ok(Json(json!({"seq": seq, "positions": rows})))
}

async fn portfolio(
    State(hub): State<PositionHub>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let filter = filter(&p)?;
    let by_name = p.by.as_deref().unwrap_or("total");
    let by = GroupBy::parse(by_name).ok_or_else(|| ApiError {
        code: "invalid_group",
        message: format!("unknown by={by_name:?} (expected total, broker, account or underlying)"),
    })?;
    let (seq, groups) = hub.read(|b| {
        // Unfiltered reads use the incrementally kept aggregates; a filtered view is
        // summed on the spot from the positions it selects.
        let groups = if filter.is_empty() {
            b.groups()
                .into_iter()
                .filter(|(g, _)| by.matches(g))
                .collect()
        } else {
            aggregate(b.positions().filter(|p| filter.matches(p)), by)
        };
        (b.seq(), groups)
    });
    let groups: Vec<Value> = groups.iter().map(|(g, t)| group_json(g, t)).collect();
    Ok(Json(json!({"seq": seq, "groups": groups})))
}

async fn stream_positions(
    State(hub): State<PositionHub>,
    Query(p): Query<Params>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = filter(&p)?;
    let sub = hub.subscribe();
    let events = stream::unfold((sub, filter), |(mut sub, filter)| async move {
        loop {
            let event = match sub.recv().await? {
                StreamItem::Snapshot { seq, positions } => {
                    let rows: Vec<Value> = positions
                        .iter()
                        .filter(|p| filter.matches(p))
                        .map(position_json)
                        .collect();
                    Event::default()
                        .event("snapshot")
                        .id(seq.to_string())
                        .data(json!({"seq": seq, "positions": rows}).to_string())
                }
                StreamItem::Update(u) if filter.matches(&u.position) => {
                    Event::default().event("update").id(u.seq.to_string()).data(
                        json!({"seq": u.seq, "position": position_json(&u.position)}).to_string(),
                    )
                }
                StreamItem::Update(_) => continue,
            };
            return Some((Ok(event), (sub, filter)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
