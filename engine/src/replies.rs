//! The venue's words as the order machine's, and ours as the gateway's.

use serde_json::{json, Value};
use streaming::binance::rest::RestError;
use trading::order::{OrderEvent, Reply, Wire};
use trading::position::OrderSide;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a REST error says about an order placement.
pub fn wire_of(e: &RestError) -> Wire {
    match e {
        RestError::Api { status, code, msg } => Wire::Api {
            status: *status,
            code: *code,
            message: msg.clone(),
        },
        RestError::Http { status, .. } => Wire::Http { status: *status },
        // Held back by our own rate-limit pause: it never left.
        RestError::Paused { .. } | RestError::Connect(_) => Wire::NotConnected,
        RestError::Transport(d) => Wire::Broken { detail: d.clone() },
        // A 2xx whose body we could not read: the venue took it.
        RestError::Body(e) => Wire::Broken {
            detail: format!("unreadable reply: {e}"),
        },
    }
}

pub fn event_of(reply: Reply) -> OrderEvent {
    match reply {
        Reply::Accepted { venue_id } => OrderEvent::Accepted { venue_id },
        Reply::Rejected { code, message } => OrderEvent::Rejected { code, message },
        Reply::Unknown { reason } => OrderEvent::Ambiguous { reason },
    }
}

pub fn detail_of(e: &OrderEvent) -> Value {
    match e {
        OrderEvent::Accepted { venue_id } => json!({"venueOrderId": venue_id}),
        OrderEvent::Ambiguous { reason } => json!({"reason": reason}),
        OrderEvent::Rejected { code, message } => json!({"code": code, "message": message}),
        OrderEvent::Fill(x) => json!({"tradeId": x.trade_id, "quantity": x.quantity.to_string(),
            "price": x.price.to_string(), "fee": x.fee.to_string()}),
        OrderEvent::Sent
        | OrderEvent::NotFound
        | OrderEvent::Canceled
        | OrderEvent::Expired
        | OrderEvent::NotSent => json!({}),
    }
}

pub const fn position_side(side: OrderSide) -> &'static str {
    match side {
        OrderSide::Buy => "LONG",
        OrderSide::Sell => "SHORT",
    }
}
