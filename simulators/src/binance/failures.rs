//! The failures execution must survive, switchable per request (the next `n` order
//! placements) or per order (by its client order id):
//!
//! - order faults: accepted then no reply in time (the order exists, the client times
//!   out), accepted then 503 "Unknown error…", accepted then -1007, refused before
//!   reaching the engine (503, nothing happens);
//! - stream faults on one order's ORDER_TRADE_UPDATEs: dropped, duplicated, delayed,
//!   reordered;
//! - a server clock offset (what `/fapi/v1/time` says and what `timestamp` is judged
//!   against).
//!
//! Pure bookkeeping: what applies to which order. The REST side acts on it.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderFault {
    /// The venue executes the order, the reply never comes (the client times out).
    AcceptThenTimeout,
    /// The venue executes it and answers 503 "Unknown error, please check your request
    /// or try again later." (execution status unknown).
    AcceptThen503,
    /// The venue executes it and answers -1007 "Timeout waiting for response from
    /// backend server. Send status unknown; execution status unknown."
    AcceptThen1007,
    /// The venue executes it and a proxy in front answers 408 with its own page (no
    /// venue body): execution status unknown.
    AcceptThen408,
    /// 503 before the engine: nothing is executed.
    RejectBeforeEngine,
}

impl OrderFault {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accept_then_timeout" => OrderFault::AcceptThenTimeout,
            "accept_then_503" => OrderFault::AcceptThen503,
            "accept_then_1007" => OrderFault::AcceptThen1007,
            "accept_then_408" => OrderFault::AcceptThen408,
            "reject_before_engine" => OrderFault::RejectBeforeEngine,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// None of the order's events reach the stream.
    Drop,
    /// Each of its events arrives twice.
    Duplicate,
    /// Each arrives this much later.
    Delay(Duration),
    /// The events of one request (NEW, TRADE…) arrive in reverse order.
    Reorder,
}

impl StreamFault {
    pub fn parse(s: &str, delay_ms: u64) -> Option<Self> {
        Some(match s {
            "drop" => StreamFault::Drop,
            "duplicate" => StreamFault::Duplicate,
            "delay" => StreamFault::Delay(Duration::from_millis(delay_ms)),
            "reorder" => StreamFault::Reorder,
            _ => return None,
        })
    }
}

/// Which orders a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The next `n` placements.
    Next(u32),
    /// The placement with this `newClientOrderId`.
    ClientId(String),
}

impl Selector {
    /// Whether it applies to a placement with `client_id`; a `Next` is used up by it.
    fn take(&mut self, client_id: Option<&str>) -> bool {
        match self {
            Selector::Next(0) => false,
            Selector::Next(n) => {
                *n -= 1;
                true
            }
            Selector::ClientId(c) => client_id == Some(c.as_str()),
        }
    }

    fn spent(&self) -> bool {
        *self == Selector::Next(0)
    }
}

#[derive(Debug, Default)]
pub(super) struct Failures {
    order: Vec<(OrderFault, Selector)>,
    stream: Vec<(StreamFault, Selector)>,
    /// The stream fault of each order it was applied to, for the order's whole life
    /// (its later fills and cancel too).
    by_order: HashMap<String, StreamFault>,
}

impl Failures {
    pub fn add_order_fault(&mut self, fault: OrderFault, on: Selector) {
        self.order.push((fault, on));
    }

    pub fn add_stream_fault(&mut self, fault: StreamFault, on: Selector) {
        self.stream.push((fault, on));
    }

    /// The order fault for a placement carrying `client_id`, if one applies (used up).
    pub fn order_fault(&mut self, client_id: Option<&str>) -> Option<OrderFault> {
        let i = self.order.iter_mut().position(|(_, s)| s.take(client_id))?;
        let (fault, sel) = self.order[i].clone();
        if sel.spent() || matches!(sel, Selector::ClientId(_)) {
            self.order.remove(i);
        }
        Some(fault)
    }

    /// Called when an order is created: binds a pending stream fault to it.
    pub fn bind_stream_fault(&mut self, client_id: &str) {
        let Some(i) = self
            .stream
            .iter_mut()
            .position(|(_, s)| s.take(Some(client_id)))
        else {
            return;
        };
        let (fault, sel) = self.stream[i].clone();
        if sel.spent() || matches!(sel, Selector::ClientId(_)) {
            self.stream.remove(i);
        }
        self.by_order.insert(client_id.to_owned(), fault);
    }

    pub fn stream_fault(&self, client_id: &str) -> Option<StreamFault> {
        self.by_order.get(client_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_is_used_up_and_a_client_id_matches_only_itself() {
        let mut f = Failures::default();
        f.add_order_fault(OrderFault::AcceptThen503, Selector::Next(2));
        f.add_order_fault(
            OrderFault::AcceptThenTimeout,
            Selector::ClientId("x".into()),
        );
        assert_eq!(f.order_fault(Some("x")), Some(OrderFault::AcceptThen503));
        assert_eq!(f.order_fault(None), Some(OrderFault::AcceptThen503));
        assert_eq!(f.order_fault(None), None);
        assert_eq!(
            f.order_fault(Some("x")),
            Some(OrderFault::AcceptThenTimeout)
        );
        assert_eq!(f.order_fault(Some("x")), None);
    }

    #[test]
    fn a_stream_fault_stays_with_its_order() {
        let mut f = Failures::default();
        f.add_stream_fault(StreamFault::Drop, Selector::Next(1));
        f.bind_stream_fault("a");
        f.bind_stream_fault("b");
        assert_eq!(f.stream_fault("a"), Some(StreamFault::Drop));
        assert_eq!(f.stream_fault("a"), Some(StreamFault::Drop));
        assert_eq!(f.stream_fault("b"), None);
    }
}
