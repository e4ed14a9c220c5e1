//! An order's life, pure: one exhaustive `match (state, event)` decides every
//! transition, and what the venue said is classified once ([`classify`]) into
//! accepted, rejected or **unknown** — an ambiguous reply is never a failure.
//!
//! ```text
//! NEW ──Sent──▶ SUBMITTED ──Accepted──▶ SUBMITTED (venue id known)
//!  │               │  └──Ambiguous──▶ UNKNOWN ──Accepted/Fill/Canceled…──▶ (as the venue says)
//!  │               │                     └──NotFound──▶ REJECTED (it never existed)
//!  │               ├──Fill──▶ PARTIALLY_FILLED ──Fill──▶ FILLED
//!  │               ├──Canceled──▶ CANCELED   (a later fill is still booked)
//!  │               ├──Expired───▶ EXPIRED    (likewise)
//!  │               └──Rejected──▶ REJECTED   (the venue's code and message kept)
//!  └──NotSent (recovery found it never sent)──▶ REJECTED NOT_SENT
//! ```
//!
//! A fill whose venue trade id was seen before is a no-op; a fill after a cancel or
//! an expiry is booked (the venue executed it) and the state stays final.

use std::collections::BTreeSet;

use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Written, not yet sent.
    New,
    /// Written, then sent (or being sent); the venue has not said otherwise.
    Submitted,
    /// Sent, and the venue's reply was ambiguous: it may or may not exist.
    Unknown,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
}

impl OrderState {
    /// The JS `PendingOrder.status` this state shows as (js-gateway §10): the one
    /// mapping every JS-facing body and event uses; ours stays beside it as `state`.
    pub const fn js_status(self) -> &'static str {
        match self {
            OrderState::New
            | OrderState::Submitted
            | OrderState::Unknown
            | OrderState::PartiallyFilled => "PENDING",
            OrderState::Filled => "FILLED",
            OrderState::Canceled | OrderState::Rejected => "CANCELLED",
            OrderState::Expired => "EXPIRED",
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            OrderState::New => "NEW",
            OrderState::Submitted => "SUBMITTED",
            OrderState::Unknown => "UNKNOWN",
            OrderState::PartiallyFilled => "PARTIALLY_FILLED",
            OrderState::Filled => "FILLED",
            OrderState::Canceled => "CANCELED",
            OrderState::Rejected => "REJECTED",
            OrderState::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NEW" => OrderState::New,
            "SUBMITTED" => OrderState::Submitted,
            "UNKNOWN" => OrderState::Unknown,
            "PARTIALLY_FILLED" => OrderState::PartiallyFilled,
            "FILLED" => OrderState::Filled,
            "CANCELED" => OrderState::Canceled,
            "REJECTED" => OrderState::Rejected,
            "EXPIRED" => OrderState::Expired,
            _ => return None,
        })
    }

    /// No further venue state change can come (fills after a cancel still can).
    pub const fn is_final(self) -> bool {
        match self {
            OrderState::Filled
            | OrderState::Canceled
            | OrderState::Rejected
            | OrderState::Expired => true,
            OrderState::New
            | OrderState::Submitted
            | OrderState::Unknown
            | OrderState::PartiallyFilled => false,
        }
    }
}

/// One execution of the order, as the venue reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub trade_id: String,
    pub quantity: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    /// The request is going on the wire (the row was written before).
    Sent,
    /// The venue acknowledged it (REST reply, user stream NEW, or a query).
    Accepted {
        venue_id: String,
    },
    /// The reply was ambiguous: timeout after the write, 5xx, -1007, 503 "Unknown".
    Ambiguous {
        reason: String,
    },
    /// A definitive refusal.
    Rejected {
        code: String,
        message: String,
    },
    /// The venue says no order with this client id exists.
    NotFound,
    Fill(Execution),
    Canceled,
    Expired,
    /// Found NEW at start-up: the process died before sending it.
    NotSent,
}

/// The parts of an order the machine reads and changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub state: OrderState,
    pub quantity: Decimal,
    pub filled: Decimal,
    pub venue_id: Option<String>,
    /// Trade ids already booked.
    pub trades: BTreeSet<String>,
    pub reject_code: Option<String>,
    pub reject_message: Option<String>,
}

impl Order {
    pub fn new(quantity: Decimal) -> Self {
        Self {
            state: OrderState::New,
            quantity,
            filled: Decimal::ZERO,
            venue_id: None,
            trades: BTreeSet::new(),
            reject_code: None,
            reject_message: None,
        }
    }
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The state (or what is known) changed.
    Changed,
    /// A new fill: book it.
    Book(Execution),
    /// Nothing new (a duplicate or a repeat of what is known).
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order event {event} is not possible in state {state}")]
pub struct InvalidTransition {
    pub state: &'static str,
    pub event: &'static str,
}

impl OrderEvent {
    /// The event's name, as `order_events.event` records it.
    pub const fn name(&self) -> &'static str {
        match self {
            OrderEvent::Sent => "Sent",
            OrderEvent::Accepted { .. } => "Accepted",
            OrderEvent::Ambiguous { .. } => "Ambiguous",
            OrderEvent::Rejected { .. } => "Rejected",
            OrderEvent::NotFound => "NotFound",
            OrderEvent::Fill(_) => "Fill",
            OrderEvent::Canceled => "Canceled",
            OrderEvent::Expired => "Expired",
            OrderEvent::NotSent => "NotSent",
        }
    }
}

/// Applies `event` to `order`. Errors leave the order unchanged.
pub fn apply(order: &mut Order, event: OrderEvent) -> Result<Effect, InvalidTransition> {
    use OrderEvent as E;
    use OrderState as S;
    let invalid = |order: &Order, event: &OrderEvent| InvalidTransition {
        state: order.state.as_str(),
        event: event.name(),
    };
    let effect = match (order.state, event) {
        (S::New, E::Sent) => {
            order.state = S::Submitted;
            Effect::Changed
        }
        (S::New, E::NotSent) => {
            order.state = S::Rejected;
            order.reject_code = Some("NOT_SENT".into());
            order.reject_message = Some("the engine stopped before sending the order".into());
            Effect::Changed
        }
        (S::Submitted | S::Unknown, E::Accepted { venue_id }) => {
            order.state = S::Submitted;
            order.venue_id = Some(venue_id);
            Effect::Changed
        }
        (S::PartiallyFilled | S::Filled | S::Canceled | S::Expired, E::Accepted { venue_id }) => {
            // A late acknowledgement of what fills or a cancel already told.
            if order.venue_id.is_none() {
                order.venue_id = Some(venue_id);
                Effect::Changed
            } else {
                Effect::Nothing
            }
        }
        (S::Submitted, E::Ambiguous { .. }) => {
            order.state = S::Unknown;
            Effect::Changed
        }
        // The stream can tell more before the REST reply arrives: an ambiguous reply
        // then adds nothing.
        (
            S::Unknown | S::PartiallyFilled | S::Filled | S::Canceled | S::Expired,
            E::Ambiguous { .. },
        ) => Effect::Nothing,
        (S::Submitted | S::Unknown, E::Rejected { code, message }) => {
            order.state = S::Rejected;
            order.reject_code = Some(code);
            order.reject_message = Some(message);
            Effect::Changed
        }
        (S::Submitted | S::Unknown, E::NotFound) => {
            order.state = S::Rejected;
            order.reject_code = Some("NOT_FOUND".into());
            order.reject_message = Some("the venue has no such order".into());
            Effect::Changed
        }
        // REJECTED was our conclusion (a reply read as a refusal, "does not exist"
        // while it could still arrive); the venue showing the order overrules it.
        (S::Rejected, E::Accepted { venue_id }) => {
            resurrect(order, S::Submitted);
            order.venue_id = Some(venue_id);
            Effect::Changed
        }
        (S::Rejected, E::Canceled) => {
            resurrect(order, S::Canceled);
            Effect::Changed
        }
        (S::Rejected, E::Expired) => {
            resurrect(order, S::Expired);
            Effect::Changed
        }
        (S::Rejected, E::Fill(x)) => {
            resurrect(order, S::Submitted);
            return apply(order, E::Fill(x));
        }
        (
            S::Submitted | S::Unknown | S::PartiallyFilled | S::Filled | S::Canceled | S::Expired,
            E::Fill(x),
        ) => {
            if !order.trades.insert(x.trade_id.clone()) {
                return Ok(Effect::Nothing);
            }
            order.filled += x.quantity;
            order.state = match order.state {
                S::Canceled | S::Expired => order.state,
                _ if order.filled >= order.quantity => S::Filled,
                _ => S::PartiallyFilled,
            };
            Effect::Book(x)
        }
        (S::Submitted | S::Unknown | S::PartiallyFilled, E::Canceled) => {
            order.state = S::Canceled;
            Effect::Changed
        }
        (S::Submitted | S::Unknown | S::PartiallyFilled, E::Expired) => {
            order.state = S::Expired;
            Effect::Changed
        }
        (S::Canceled, E::Canceled) | (S::Expired, E::Expired) => Effect::Nothing,
        (S::Filled, E::Canceled | E::Expired) => Effect::Nothing,
        (
            S::Submitted
            | S::Unknown
            | S::PartiallyFilled
            | S::Filled
            | S::Canceled
            | S::Rejected
            | S::Expired,
            e @ (E::Sent | E::NotSent),
        )
        | (
            S::PartiallyFilled | S::Filled | S::Canceled | S::Expired | S::Rejected,
            e @ (E::Rejected { .. } | E::NotFound | E::Ambiguous { .. }),
        )
        | (S::Canceled, e @ E::Expired)
        | (S::Expired, e @ E::Canceled)
        | (
            S::New,
            e @ (E::Accepted { .. }
            | E::Ambiguous { .. }
            | E::Rejected { .. }
            | E::NotFound
            | E::Fill(_)
            | E::Canceled
            | E::Expired),
        ) => {
            return Err(invalid(order, &e));
        }
    };
    Ok(effect)
}

fn resurrect(order: &mut Order, to: OrderState) {
    order.state = to;
    order.reject_code = None;
    order.reject_message = None;
}

/// What a venue reply to a placement means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Accepted {
        venue_id: String,
    },
    Rejected {
        code: String,
        message: String,
    },
    /// Send or execution status unknown: resolve by the stream or a query, never by
    /// sending again.
    Unknown {
        reason: String,
    },
}

/// How the placement's outcome looked on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A 2xx with the venue's order id.
    Ok { venue_id: String },
    /// The venue's error body.
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    /// An HTTP error without the venue's body.
    Http { status: u16 },
    /// The connection was never made: nothing reached the venue.
    NotConnected,
    /// Timed out or broke after the request may have been written.
    Broken { detail: String },
}

/// Binance's codes that say "the request may or may not have been executed".
const UNKNOWN_CODES: [i64; 2] = [-1007, -1006];

pub fn classify(w: Wire) -> Reply {
    match w {
        Wire::Ok { venue_id } => Reply::Accepted { venue_id },
        Wire::Api { code, message, .. } if UNKNOWN_CODES.contains(&code) => Reply::Unknown {
            reason: format!("{code} {message}"),
        },
        Wire::Api {
            status,
            code,
            message,
        } if status >= 500 => Reply::Unknown {
            reason: format!("HTTP {status} {code} {message}"),
        },
        Wire::Api { code, message, .. } => Reply::Rejected {
            code: code.to_string(),
            message,
        },
        // 408 without the venue's body: a proxy or load balancer gave up waiting,
        // and the venue may have executed it.
        Wire::Http { status } if status >= 500 || status == 408 => Reply::Unknown {
            reason: format!("HTTP {status}"),
        },
        Wire::Http { status } => Reply::Rejected {
            code: format!("HTTP_{status}"),
            message: format!("HTTP {status}"),
        },
        Wire::NotConnected => Reply::Rejected {
            code: "NOT_CONNECTED".into(),
            message: "the venue could not be reached; nothing was sent".into(),
        },
        Wire::Broken { detail } => Reply::Unknown { reason: detail },
    }
}

/// The client order id of order `id` (a uuid): `gs` and its 32 hex digits, so it is
/// deterministic (a resend carries the same id and the venue refuses the duplicate),
/// fits Binance's 36 characters, and marks the order as ours for orphan detection.
pub fn client_order_id(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    format!("{CLIENT_ID_PREFIX}{hex}")
}

pub const CLIENT_ID_PREFIX: &str = "gs";

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn fill(id: &str, q: &str) -> OrderEvent {
        OrderEvent::Fill(Execution {
            trade_id: id.into(),
            quantity: d(q),
            price: d("100"),
            fee: d("0.01"),
        })
    }

    fn sent(q: &str) -> Order {
        let mut o = Order::new(d(q));
        apply(&mut o, OrderEvent::Sent).unwrap();
        o
    }

    #[test]
    fn fills_move_it_to_partially_filled_then_filled_and_duplicates_do_nothing() {
        let mut o = sent("2");
        assert!(matches!(
            apply(&mut o, fill("t1", "1")),
            Ok(Effect::Book(_))
        ));
        assert_eq!(o.state, OrderState::PartiallyFilled);
        assert_eq!(apply(&mut o, fill("t1", "1")), Ok(Effect::Nothing));
        assert_eq!((o.state, o.filled), (OrderState::PartiallyFilled, d("1")));
        assert!(matches!(
            apply(&mut o, fill("t2", "1")),
            Ok(Effect::Book(_))
        ));
        assert_eq!(o.state, OrderState::Filled);
    }

    #[test]
    fn a_fill_after_a_cancel_is_booked_and_the_order_stays_canceled() {
        let mut o = sent("2");
        apply(&mut o, OrderEvent::Canceled).unwrap();
        assert!(matches!(
            apply(&mut o, fill("t1", "1")),
            Ok(Effect::Book(_))
        ));
        assert_eq!((o.state, o.filled), (OrderState::Canceled, d("1")));
    }

    #[test]
    fn an_ambiguous_reply_is_unknown_until_the_venue_says() {
        let mut o = sent("1");
        apply(
            &mut o,
            OrderEvent::Ambiguous {
                reason: "timeout".into(),
            },
        )
        .unwrap();
        assert_eq!(o.state, OrderState::Unknown);
        assert!(!o.state.is_final());
        let mut adopted = o.clone();
        apply(
            &mut adopted,
            OrderEvent::Accepted {
                venue_id: "7".into(),
            },
        )
        .unwrap();
        assert_eq!(
            (adopted.state, adopted.venue_id.as_deref()),
            (OrderState::Submitted, Some("7"))
        );
        apply(&mut o, OrderEvent::NotFound).unwrap();
        assert_eq!(
            (o.state, o.reject_code.as_deref()),
            (OrderState::Rejected, Some("NOT_FOUND"))
        );
    }

    #[test]
    fn impossible_events_are_errors_and_change_nothing() {
        let mut o = sent("1");
        apply(
            &mut o,
            OrderEvent::Rejected {
                code: "-2019".into(),
                message: "Margin is insufficient.".into(),
            },
        )
        .unwrap();
        let before = o.clone();
        let e = apply(&mut o, OrderEvent::Sent).unwrap_err();
        assert_eq!(
            e.to_string(),
            "order event Sent is not possible in state REJECTED"
        );
        assert_eq!(o, before);
        let mut n = Order::new(d("1"));
        assert!(
            apply(&mut n, OrderEvent::Canceled).is_err(),
            "never sent, cannot be canceled"
        );
        apply(&mut n, OrderEvent::NotSent).unwrap();
        assert_eq!(n.reject_code.as_deref(), Some("NOT_SENT"));
    }

    #[test]
    fn the_venues_word_after_a_wrong_rejection_resurrects_the_order() {
        let rejected = || {
            let mut o = sent("2");
            apply(&mut o, OrderEvent::NotFound).unwrap();
            assert_eq!(o.state, OrderState::Rejected);
            o
        };
        let mut o = rejected();
        assert_eq!(
            apply(
                &mut o,
                OrderEvent::Accepted {
                    venue_id: "9".into()
                }
            ),
            Ok(Effect::Changed)
        );
        assert_eq!(
            (o.state, o.venue_id.as_deref(), o.reject_code.as_deref()),
            (OrderState::Submitted, Some("9"), None)
        );
        let mut o = rejected();
        assert!(matches!(
            apply(&mut o, fill("t1", "1")),
            Ok(Effect::Book(_))
        ));
        assert_eq!((o.state, o.filled), (OrderState::PartiallyFilled, d("1")));
        assert_eq!(o.reject_message, None);
        let mut o = rejected();
        apply(&mut o, fill("t1", "2")).unwrap();
        assert_eq!(o.state, OrderState::Filled);
        for (event, state) in [
            (OrderEvent::Canceled, OrderState::Canceled),
            (OrderEvent::Expired, OrderState::Expired),
        ] {
            let mut o = rejected();
            assert_eq!(apply(&mut o, event), Ok(Effect::Changed));
            assert_eq!((o.state, o.reject_code), (state, None));
        }
    }

    #[test]
    fn replies_are_classified_and_ambiguity_is_never_failure() {
        // A 408 without the venue's body (a proxy's timeout): the request may have
        // been executed.
        assert!(matches!(
            classify(Wire::Http { status: 408 }),
            Reply::Unknown { .. }
        ));
        let unknown = |w| matches!(classify(w), Reply::Unknown { .. });
        assert!(unknown(Wire::Api {
            status: 400,
            code: -1007,
            message: "Timeout waiting for response from backend server.".into()
        }));
        assert!(unknown(Wire::Api {
            status: 503,
            code: -1000,
            message: "Unknown error, please check your request or try again later.".into()
        }));
        assert!(unknown(Wire::Http { status: 502 }));
        assert!(unknown(Wire::Broken {
            detail: "timed out".into()
        }));
        assert_eq!(
            classify(Wire::Api {
                status: 400,
                code: -2019,
                message: "Margin is insufficient.".into()
            }),
            Reply::Rejected {
                code: "-2019".into(),
                message: "Margin is insufficient.".into()
            }
        );
        assert!(matches!(
            classify(Wire::NotConnected),
            Reply::Rejected { .. }
        ));
        assert_eq!(
            classify(Wire::Ok {
                venue_id: "1".into()
            }),
            Reply::Accepted {
                venue_id: "1".into()
            }
        );
    }

    proptest::proptest! {
        /// Whatever the venue says in whatever order: a final state never changes,
        /// `filled` is the sum of the distinct trades, and each trade is booked once.
        #[test]
        fn final_is_final_and_every_trade_is_booked_once(
            events in proptest::collection::vec(0u8..10, 0..40),
        ) {
            let mut o = Order::new(d("3"));
            let mut booked = Vec::new();
            // REJECTED is ours to take back when the venue shows the order; every
            // other final state is the venue's and stays.
            let mut final_state: Option<OrderState> = None;
            for (i, e) in events.into_iter().enumerate() {
                let event = match e {
                    0 => OrderEvent::Sent,
                    1 => OrderEvent::Accepted { venue_id: "v".into() },
                    2 => OrderEvent::Ambiguous { reason: "x".into() },
                    3 => OrderEvent::Rejected { code: "-1".into(), message: "m".into() },
                    4 => OrderEvent::NotFound,
                    5 => OrderEvent::Canceled,
                    6 => OrderEvent::Expired,
                    7 => OrderEvent::NotSent,
                    _ => fill(&format!("t{}", i % 4), "1"),
                };
                if let Ok(Effect::Book(x)) = apply(&mut o, event) {
                    booked.push(x.trade_id);
                }
                if let Some(f) = final_state {
                    proptest::prop_assert_eq!(o.state, f);
                } else if o.state.is_final() && o.state != OrderState::Rejected {
                    final_state = Some(o.state);
                }
            }
            let distinct: BTreeSet<_> = booked.iter().cloned().collect();
            proptest::prop_assert_eq!(distinct.len(), booked.len());
            proptest::prop_assert_eq!(o.filled, Decimal::from(booked.len()));
        }
    }

    #[test]
    fn the_client_order_id_is_ours_deterministic_and_fits() {
        let id = client_order_id("0b9e3c8e-6f1a-4c9b-9d7e-2f6b1a3c4d5e");
        assert_eq!(id, "gs0b9e3c8e6f1a4c9b9d7e2f6b1a3c4d5e");
        assert!(id.len() <= 36 && id.starts_with(CLIENT_ID_PREFIX));
    }
}
