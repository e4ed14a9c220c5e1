//! Metric names every broker adapter shares, labelled by `broker`.

pub const AUTHENTICATED: &str = "greekstream_broker_authenticated";
pub const POSITIONS: &str = "greekstream_broker_positions";
pub const REST_ERRORS: &str = "greekstream_broker_rest_errors_total";
