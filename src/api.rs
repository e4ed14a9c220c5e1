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
use model::portfolio::{aggregate, Group, GroupBy, Position, Totals, MEASURES};
use processor::position_stream::{PositionHub, StreamItem};
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

/// The parsed filters: a position matches when it matches every one given.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    broker: Option<Broker>,
    account: Option<String>,
    underlying: Option<String>,
}

impl Filter {
    fn parse(p: &Params) -> Result<Self, ApiError> {
        let broker = p
            .broker
            .as_deref()
            .map(str::parse::<Broker>)
            .transpose()
            .map_err(|e| ApiError {
                code: "invalid_broker",
                message: e.to_string(),
            })?;
        Ok(Self {
            broker,
            account: p.account.clone(),
            underlying: p.underlying.as_ref().map(|u| u.to_ascii_uppercase()),
        })
    }

    fn is_empty(&self) -> bool {
        self.broker.is_none() && self.account.is_none() && self.underlying.is_none()
    }

    pub fn matches(&self, p: &Position) -> bool {
        self.broker.is_none_or(|b| b == p.broker)
            && self.account.as_deref().is_none_or(|a| a == &*p.account_id)
            && self
                .underlying
                .as_deref()
                .is_none_or(|u| u == p.contract.underlying())
    }
}

fn greeks_json(g: &model::Greeks) -> Value {
    json!({"delta": g.delta, "gamma": g.gamma, "theta": g.theta, "vega": g.vega, "rho": g.rho})
}

pub fn position_json(p: &Position) -> Value {
    let c = &p.contract;
    let mut total = greeks_json(&p.total);
    total["dollar_delta"] = json!(p.dollar_delta());
    json!({
        "seq": p.seq,
        "broker": p.broker.as_str(),
        "account_id": p.account_id.as_str(),
        "contract_key": c.key().as_str(),
        "position_side": p.side.as_str(),
        "underlying": c.underlying(),
        "asset_class": c.asset_class().as_str(),
        "expiry": c.expiry().map(|d| d.format("%Y-%m-%d").to_string()),
        "strike": c.strike().map(|s| s.to_string()),
        "right": c.right().map(|r| r.as_char().to_string()),
        "multiplier": c.multiplier().to_string(),
        "quantity": p.quantity.to_string(),
        "mark_price": p.mark_price,
        "underlying_price": p.underlying_price,
        "implied_vol": p.implied_vol,
        "greeks": greeks_json(&p.unit),
        "position_greeks": total,
        "greeks_source": p.greeks_source.map(|s| s.as_str()),
        "event_time": p.event_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

fn group_json(g: &Group, t: &Totals) -> Value {
    let key = match g {
        Group::Total => json!({"kind": "total"}),
        Group::Broker(b) => json!({"kind": "broker", "broker": b.as_str()}),
        Group::Account(b, a) => {
            json!({"kind": "account", "broker": b.as_str(), "account_id": &**a})
        }
        Group::Underlying(u) => json!({"kind": "underlying", "underlying": &**u}),
    };
    let mut v = json!({
        "group": key,
        "positions": t.positions,
        "without_greeks": t.without_greeks,
    });
    let mut missing = serde_json::Map::new();
    for (i, m) in MEASURES.iter().enumerate() {
        v[*m] = json!(t.sums[i]);
        missing.insert((*m).to_owned(), json!(t.missing[i]));
    }
    v["missing"] = Value::Object(missing);
    v
}

async fn positions(
    State(hub): State<PositionHub>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let filter = Filter::parse(&p)?;
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
    let filter = Filter::parse(&p)?;
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
    let filter = Filter::parse(&p)?;
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
