//! DXLink wire format (dxFeed market data behind Tastytrade): the messages of the
//! handshake, and FEED_DATA in COMPACT and FULL form. Pure: no IO.
//!
//! COMPACT values are positional, so they are read in the order of the server's
//! FEED_CONFIG (not the order we asked for). dxLink numbers may be the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"`; those and `null` become non-finite values
//! here, which the processor maps to missing and counts. Nothing panics on bad input.

use std::collections::HashMap;

use serde_json::{json, Value};

/// The Greeks fields we ask for, in the order the Tastytrade SDK asks for them.
pub const GREEKS_FIELDS: [&str; 13] = [
    "eventSymbol",
    "eventTime",
    "eventFlags",
    "index",
    "time",
    "sequence",
    "price",
    "volatility",
    "delta",
    "gamma",
    "theta",
    "rho",
    "vega",
];

/// The Quote fields we ask for.
pub const QUOTE_FIELDS: [&str; 6] = [
    "eventSymbol",
    "eventTime",
    "bidPrice",
    "askPrice",
    "bidSize",
    "askSize",
];

/// Symbols per FEED_SUBSCRIPTION message: huge ones drop the connection.
pub const SUBSCRIPTION_CHUNK: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum DxMessage {
    Setup {
        keepalive_timeout: Option<u64>,
    },
    /// `AUTHORIZED` or `UNAUTHORIZED`.
    AuthState {
        authorized: bool,
    },
    ChannelOpened {
        channel: u64,
    },
    ChannelClosed {
        channel: u64,
    },
    FeedConfig {
        channel: u64,
        config: FeedConfig,
    },
    FeedData {
        channel: u64,
        data: Value,
    },
    Keepalive,
    Error {
        error: String,
        message: String,
    },
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DxError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is not a JSON object with a type")]
    NoType,
    #[error("{0} without a channel")]
    NoChannel(&'static str),
    #[error("FEED_DATA is not an array")]
    DataNotArray,
    #[error("COMPACT {event_type}: {len} values is not a multiple of {fields} fields")]
    Ragged {
        event_type: String,
        len: usize,
        fields: usize,
    },
    #[error("COMPACT data: expected an event type then an array")]
    CompactShape,
    #[error("no FEED_CONFIG fields for {0}")]
    UnknownEventType(String),
}

/// The field order per event type, as the server's FEED_CONFIG reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedConfig {
    pub compact: bool,
    pub event_fields: HashMap<String, Vec<String>>,
}

fn channel(obj: &serde_json::Map<String, Value>, what: &'static str) -> Result<u64, DxError> {
    obj.get("channel")
        .and_then(Value::as_u64)
        .ok_or(DxError::NoChannel(what))
}

pub fn parse_message(text: &str) -> Result<DxMessage, DxError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DxError::NotJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(DxError::NoType);
    };
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or(DxError::NoType)?
        .to_owned();
    Ok(match kind.as_str() {
        "SETUP" => DxMessage::Setup {
            keepalive_timeout: obj.get("keepaliveTimeout").and_then(Value::as_u64),
        },
        "AUTH_STATE" => DxMessage::AuthState {
            authorized: obj.get("state").and_then(Value::as_str) == Some("AUTHORIZED"),
        },
        "CHANNEL_OPENED" => DxMessage::ChannelOpened {
            channel: channel(&obj, "CHANNEL_OPENED")?,
        },
        "CHANNEL_CLOSED" => DxMessage::ChannelClosed {
            channel: channel(&obj, "CHANNEL_CLOSED")?,
        },
        "FEED_CONFIG" => {
            let channel = channel(&obj, "FEED_CONFIG")?;
            let compact = obj.get("dataFormat").and_then(Value::as_str) != Some("FULL");
            let event_fields = obj
                .get("eventFields")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| {
                            let fields = v
                                .as_array()?
                                .iter()
                                .map(|f| f.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()?;
                            Some((k.clone(), fields))
                        })
                        .collect()
                })
                .unwrap_or_default();
            DxMessage::FeedConfig {
                channel,
                config: FeedConfig {
                    compact,
                    event_fields,
                },
            }
        }
        "FEED_DATA" => DxMessage::FeedData {
            channel: channel(&obj, "FEED_DATA")?,
            data: obj.remove("data").unwrap_or(Value::Null),
        },
        "KEEPALIVE" => DxMessage::Keepalive,
        "ERROR" => DxMessage::Error {
            error: obj
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("UNKNOWN")
                .to_owned(),
            message: obj
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        _ => DxMessage::Other(kind),
    })
}

/// A dxLink double: a number, or `"NaN"`/`"Infinity"`/`"-Infinity"`; `null` and
/// anything else are NaN too.
pub fn dx_double(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => match s.as_str() {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or(f64::NAN),
        },
        _ => f64::NAN,
    }
}

/// A dxLink long (times, indices): may exceed 2^53, so never through f64.
fn dx_long(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// One Greeks event. Values the venue did not send are NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct GreeksEvent {
    pub symbol: String,
    /// `time`, epoch milliseconds (0 when unknown).
    pub time_ms: i64,
    pub price: f64,
    pub volatility: f64,
    pub delta: f64,
    pub gamma: f64,
    pub theta: f64,
    pub rho: f64,
    pub vega: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuoteEvent {
    pub symbol: String,
    pub time_ms: i64,
    pub bid_price: f64,
    pub ask_price: f64,
    pub bid_size: f64,
    pub ask_size: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DxEvent {
    Greeks(GreeksEvent),
    Quote(QuoteEvent),
}

/// Reads one event from a field lookup; `None` if it has no symbol.
fn event<'v>(event_type: &str, get: impl Fn(&str) -> Option<&'v Value>) -> Option<DxEvent> {
    let symbol = get("eventSymbol")?.as_str()?.to_owned();
    let num = |f: &str| get(f).map_or(f64::NAN, dx_double);
    let time_ms = get("time")
        .and_then(dx_long)
        .filter(|t| *t > 0)
        .or_else(|| get("eventTime").and_then(dx_long))
        .unwrap_or(0);
    match event_type {
        "Greeks" => Some(DxEvent::Greeks(GreeksEvent {
            symbol,
            time_ms,
            price: num("price"),
            volatility: num("volatility"),
            delta: num("delta"),
            gamma: num("gamma"),
            theta: num("theta"),
            rho: num("rho"),
            vega: num("vega"),
        })),
        "Quote" => Some(DxEvent::Quote(QuoteEvent {
            symbol,
            time_ms: get("bidTime")
                .and_then(dx_long)
                .filter(|t| *t > 0)
                .unwrap_or(time_ms),
            bid_price: num("bidPrice"),
            ask_price: num("askPrice"),
            bid_size: num("bidSize"),
            ask_size: num("askSize"),
        })),
        _ => None,
    }
}

/// The outcome of one FEED_DATA: the events we use, and the problems met on the
/// way (each one a skipped event or group, to be counted).
#[derive(Debug, Default, PartialEq)]
pub struct FeedBatch {
    pub events: Vec<DxEvent>,
    pub skipped: Vec<DxError>,
}

/// Decodes FEED_DATA with the FEED_CONFIG in force on its channel. Event types we do
/// not use are ignored, not errors.
pub fn parse_feed_data(data: &Value, config: &FeedConfig) -> Result<FeedBatch, DxError> {
    let items = data.as_array().ok_or(DxError::DataNotArray)?;
    let mut out = FeedBatch::default();
    // COMPACT: ["Type", [flat values], "Type", [...], ...]; FULL: [{...}, {...}].
    if items.first().is_some_and(Value::is_string) {
        if items.len() % 2 != 0 {
            return Err(DxError::CompactShape);
        }
        for pair in items.chunks_exact(2) {
            let (Some(event_type), Some(values)) = (pair[0].as_str(), pair[1].as_array()) else {
                out.skipped.push(DxError::CompactShape);
                continue;
            };
            if !matches!(event_type, "Greeks" | "Quote") {
                continue;
            }
            let Some(fields) = config
                .event_fields
                .get(event_type)
                .filter(|f| !f.is_empty())
            else {
                out.skipped
                    .push(DxError::UnknownEventType(event_type.to_owned()));
                continue;
            };
            if values.len() % fields.len() != 0 {
                out.skipped.push(DxError::Ragged {
                    event_type: event_type.to_owned(),
                    len: values.len(),
                    fields: fields.len(),
                });
                continue;
            }
            for chunk in values.chunks_exact(fields.len()) {
                let get = |name: &str| fields.iter().position(|f| f == name).map(|i| &chunk[i]);
                match event(event_type, get) {
                    Some(e) => out.events.push(e),
                    None => out.skipped.push(DxError::CompactShape),
                }
            }
        }
    } else {
        for item in items {
            let Some(obj) = item.as_object() else {
                out.skipped.push(DxError::CompactShape);
                continue;
            };
            let Some(event_type) = obj.get("eventType").and_then(Value::as_str) else {
                out.skipped.push(DxError::NoType);
                continue;
            };
            if !matches!(event_type, "Greeks" | "Quote") {
                continue;
            }
            match event(event_type, |name| obj.get(name)) {
                Some(e) => out.events.push(e),
                None => out.skipped.push(DxError::CompactShape),
            }
        }
    }
    Ok(out)
}

/// SETUP: we will send something at least every `keepalive_secs`; the server must
/// send something at least every `accept_keepalive_secs`.
pub fn setup(keepalive_secs: u64, accept_keepalive_secs: u64) -> String {
    json!({"type": "SETUP", "channel": 0, "keepaliveTimeout": keepalive_secs,
        "acceptKeepaliveTimeout": accept_keepalive_secs, "version": concat!("0.1-greekstream/", env!("CARGO_PKG_VERSION"))})
    .to_string()
}

pub fn auth(token: &str) -> String {
    json!({"type": "AUTH", "channel": 0, "token": token}).to_string()
}

pub fn keepalive() -> String {
    json!({"type": "KEEPALIVE", "channel": 0}).to_string()
}

pub fn channel_request(channel: u64) -> String {
    json!({"type": "CHANNEL_REQUEST", "channel": channel, "service": "FEED",
        "parameters": {"contract": "AUTO"}})
    .to_string()
}

pub fn feed_setup(channel: u64) -> String {
    json!({"type": "FEED_SETUP", "channel": channel, "acceptAggregationPeriod": 0.1,
        "acceptDataFormat": "COMPACT",
        "acceptEventFields": {"Greeks": GREEKS_FIELDS, "Quote": QUOTE_FIELDS}})
    .to_string()
}

/// The event types we subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Greeks,
    Quote,
}

impl EventType {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Greeks => "Greeks",
            EventType::Quote => "Quote",
        }
    }
}

/// One subscription: an event type for a dxFeed symbol.
pub type Sub = (EventType, String);

fn subscription_messages(channel: u64, key: &str, subs: &[Sub]) -> Vec<String> {
    subs.chunks(SUBSCRIPTION_CHUNK)
        .map(|chunk| {
            let list: Vec<Value> = chunk
                .iter()
                .map(|(t, s)| json!({"type": t.as_str(), "symbol": s}))
                .collect();
            json!({"type": "FEED_SUBSCRIPTION", "channel": channel, key: list}).to_string()
        })
        .collect()
}

/// FEED_SUBSCRIPTION messages adding `subs`, in chunks: one huge message drops the
/// connection.
pub fn subscriptions(channel: u64, subs: &[Sub]) -> Vec<String> {
    subscription_messages(channel, "add", subs)
}

/// FEED_SUBSCRIPTION messages removing `subs`, in chunks.
pub fn unsubscriptions(channel: u64, subs: &[Sub]) -> Vec<String> {
    subscription_messages(channel, "remove", subs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk_config() -> FeedConfig {
        FeedConfig {
            compact: true,
            event_fields: HashMap::from([
                (
                    "Greeks".to_owned(),
                    GREEKS_FIELDS.map(str::to_owned).to_vec(),
                ),
                ("Quote".to_owned(), QUOTE_FIELDS.map(str::to_owned).to_vec()),
            ]),
        }
    }

    /// The COMPACT example of the protocol notes (§4.1): two Greeks events, the
    /// second with "NaN" delta and vega.
    const COMPACT: &str = r#"{"type":"FEED_DATA","channel":3,"data":["Greeks",[
  ".SPY260619C500",0,0,7402331234567890000,1718900000000,0,12.34,0.2123,0.55,0.012,-0.08,0.3,0.45,
  ".SPY260619P500",0,0,7402331234567890000,1718900000000,0,9.87,0.2301,"NaN",0.011,-0.07,-0.2,"NaN"]]}"#;

    fn feed(text: &str) -> Value {
        match parse_message(text).unwrap() {
            DxMessage::FeedData { data, .. } => data,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compact_greeks_in_config_order_with_nan() {
        let batch = parse_feed_data(&feed(COMPACT), &sdk_config()).unwrap();
        assert!(batch.skipped.is_empty());
        assert_eq!(batch.events.len(), 2);
        let DxEvent::Greeks(a) = &batch.events[0] else {
            panic!()
        };
        assert_eq!(a.symbol, ".SPY260619C500");
        assert_eq!((a.delta, a.vega, a.volatility), (0.55, 0.45, 0.2123));
        assert_eq!(a.time_ms, 1718900000000);
        let DxEvent::Greeks(b) = &batch.events[1] else {
            panic!()
        };
        assert!(b.delta.is_nan() && b.vega.is_nan());
        assert_eq!(b.gamma, 0.011);
    }

    #[test]
    fn the_servers_field_order_wins() {
        let mut cfg = sdk_config();
        cfg.event_fields.insert(
            "Greeks".into(),
            vec!["eventSymbol".into(), "delta".into(), "vega".into()],
        );
        let data: Value = serde_json::from_str(
            r#"["Greeks",[".X260619C1",0.5,"Infinity",".Y260619P2",null,-0.1]]"#,
        )
        .unwrap();
        let batch = parse_feed_data(&data, &cfg).unwrap();
        let DxEvent::Greeks(x) = &batch.events[0] else {
            panic!()
        };
        assert_eq!(x.delta, 0.5);
        assert_eq!(x.vega, f64::INFINITY);
        assert!(x.gamma.is_nan(), "not configured → missing");
        let DxEvent::Greeks(y) = &batch.events[1] else {
            panic!()
        };
        assert!(y.delta.is_nan(), "null is missing");
        assert_eq!(y.vega, -0.1);
    }

    #[test]
    fn full_format_and_several_types_in_one_message() {
        let full: Value = serde_json::from_str(r#"[{"eventType":"Greeks","eventSymbol":".SPY260619C500","eventTime":0,
 "eventFlags":0,"index":7402331234567890000,"time":1718900000000,"sequence":0,"price":12.34,"volatility":0.2123,
 "delta":0.55,"gamma":0.012,"theta":-0.08,"rho":0.3,"vega":0.45},{"eventType":"Trade","eventSymbol":"SPY"},
 {"eventType":"Quote","eventSymbol":"SPY","bidPrice":590.1,"askPrice":"NaN"}, 5]"#).unwrap();
        let batch = parse_feed_data(&full, &FeedConfig::default()).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.skipped.len(), 1, "the bare 5");
        let DxEvent::Quote(q) = &batch.events[1] else {
            panic!()
        };
        assert_eq!(q.bid_price, 590.1);
        assert!(q.ask_price.is_nan() && q.bid_size.is_nan());
        let mixed: Value = serde_json::from_str(r#"["Quote",["SPY",0,590.1,590.2,10,12],"Trade",["SPY",1],"Greeks",[".A260619C1",0,0,0,0,0,1,0.2,0.5,0.1,-0.1,0.01,0.2]]"#).unwrap();
        let batch = parse_feed_data(&mixed, &sdk_config()).unwrap();
        assert_eq!(batch.events.len(), 2);
    }

    #[test]
    fn bad_data_is_reported_not_fatal() {
        let cfg = sdk_config();
        let ragged: Value =
            serde_json::from_str(r#"["Greeks",[".A",1,2],"Quote",["SPY",0,1,2,3,4]]"#).unwrap();
        let batch = parse_feed_data(&ragged, &cfg).unwrap();
        assert_eq!(batch.events.len(), 1, "the good Quote survives");
        assert!(matches!(
            batch.skipped[0],
            DxError::Ragged {
                len: 3,
                fields: 13,
                ..
            }
        ));
        assert!(parse_feed_data(&Value::Null, &cfg).is_err());
        assert!(parse_feed_data(&serde_json::json!(["Greeks"]), &cfg).is_err());
        let no_cfg = parse_feed_data(
            &serde_json::json!(["Greeks", [".A"]]),
            &FeedConfig::default(),
        )
        .unwrap();
        assert_eq!(
            no_cfg.skipped,
            vec![DxError::UnknownEventType("Greeks".into())]
        );
        let no_symbol: Value = serde_json::from_str(r#"["Quote",[5,0,1,2,3,4]]"#).unwrap();
        assert_eq!(parse_feed_data(&no_symbol, &cfg).unwrap().skipped.len(), 1);
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"type":"FEED_DATA"}"#,
            r#"{"type":"CHANNEL_OPENED"}"#,
        ] {
            assert!(parse_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handshake_messages() {
        assert_eq!(
            parse_message(r#"{"type":"SETUP","channel":0,"keepaliveTimeout":60,"acceptKeepaliveTimeout":60,"version":"x"}"#).unwrap(),
            DxMessage::Setup { keepalive_timeout: Some(60) }
        );
        assert_eq!(
            parse_message(r#"{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}"#).unwrap(),
            DxMessage::AuthState { authorized: false }
        );
        assert_eq!(
            parse_message(r#"{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}"#).unwrap(),
            DxMessage::AuthState { authorized: true }
        );
        assert_eq!(
            parse_message(r#"{"type":"CHANNEL_OPENED","channel":3,"service":"FEED","parameters":{"contract":"AUTO"}}"#).unwrap(),
            DxMessage::ChannelOpened { channel: 3 }
        );
        let DxMessage::FeedConfig { channel: 3, config } = parse_message(
            r#"{"type":"FEED_CONFIG","channel":3,"aggregationPeriod":0.1,"dataFormat":"COMPACT","eventFields":{"Greeks":["eventSymbol","delta"]}}"#,
        ).unwrap() else { panic!() };
        assert!(config.compact);
        assert_eq!(config.event_fields["Greeks"], vec!["eventSymbol", "delta"]);
        assert_eq!(parse_message(&keepalive()).unwrap(), DxMessage::Keepalive);
        assert_eq!(
            parse_message(r#"{"type":"ERROR","channel":0,"error":"TIMEOUT","message":"last received 60 seconds ago"}"#).unwrap(),
            DxMessage::Error { error: "TIMEOUT".into(), message: "last received 60 seconds ago".into() }
        );
    }

    #[test]
    fn our_messages_match_the_documented_shapes() {
        let v: Value = serde_json::from_str(&feed_setup(3)).unwrap();
        assert_eq!(v["acceptDataFormat"], "COMPACT");
        assert_eq!(
            v["acceptEventFields"]["Greeks"].as_array().unwrap().len(),
            13
        );
        let v: Value = serde_json::from_str(&channel_request(3)).unwrap();
        assert_eq!(v["service"], "FEED");
        let symbols: Vec<Sub> = (0..1200)
            .flat_map(|i| {
                let s = format!(".S260619C{i}");
                [(EventType::Greeks, s.clone()), (EventType::Quote, s)]
            })
            .collect();
        let subs = subscriptions(3, &symbols);
        assert_eq!(subs.len(), 3, "chunked");
        let total: usize = subs
            .iter()
            .map(|s| {
                serde_json::from_str::<Value>(s).unwrap()["add"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(total, 2400, "Greeks and Quote for each symbol");
        let v: Value = serde_json::from_str(&unsubscriptions(3, &symbols[..1])[0]).unwrap();
        assert_eq!(v["remove"][0]["type"], "Greeks");
        assert!(subs.iter().all(|s| s.len() < 64 * 1024));
    }
}
