//! IBKR Client Portal wire format: server frames on `/v1/api/ws`, the text commands
//! we send, and the REST bodies we read. Pure: no IO. Field values are kept as the
//! venue's raw text; turning `"C123.4"` or `"21.2%"` into numbers is normalization.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::json::decimal;

/// The market-data fields we subscribe to, in [`MdField`] order.
pub const MD_FIELD_IDS: [&str; 9] = [
    "31", "84", "86", "7308", "7309", "7310", "7311", "7633", "7635",
];

/// The fields we keep per conid. Index into [`MdFields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdField {
    /// 31: last price; may carry a `C` (previous close) or `H` (halted) prefix.
    Last,
    /// 84
    Bid,
    /// 86
    Ask,
    /// 7308, per 1 unit of the underlying.
    Delta,
    /// 7309
    Gamma,
    /// 7310, per calendar day.
    Theta,
    /// 7311, per 1 volatility point ("per 1% vol change").
    Vega,
    /// 7633: implied vol of this option in percent, with or without `%`.
    ImpliedVol,
    /// 7635: mark price.
    Mark,
}

impl MdField {
    pub const ALL: [MdField; 9] = [
        MdField::Last,
        MdField::Bid,
        MdField::Ask,
        MdField::Delta,
        MdField::Gamma,
        MdField::Theta,
        MdField::Vega,
        MdField::ImpliedVol,
        MdField::Mark,
    ];

    pub fn from_id(id: &str) -> Option<Self> {
        MD_FIELD_IDS
            .iter()
            .position(|f| *f == id)
            .map(|i| Self::ALL[i])
    }

    pub const fn id(self) -> &'static str {
        MD_FIELD_IDS[self as usize]
    }
}

/// The latest raw value of each field of one conid, merged from partial updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdFields(pub [Option<Arc<str>>; 9]);

impl MdFields {
    pub fn get(&self, f: MdField) -> Option<&str> {
        self.0[f as usize].as_deref()
    }

    /// Applies a partial update: fields it carries replace ours, the rest stay.
    pub fn merge(&mut self, update: &[(MdField, Arc<str>)]) {
        for (f, v) in update {
            self.0[*f as usize] = Some(v.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// One `smd+{conid}` frame: only the fields that changed.
#[derive(Debug, Clone, PartialEq)]
pub struct MdUpdate {
    pub conid: i64,
    /// `_updated`, epoch milliseconds.
    pub updated_ms: Option<i64>,
    pub fields: Vec<(MdField, Arc<str>)>,
}

/// `sts` (and the auth part of `/tickle` and `/iserver/auth/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AuthStatus {
    pub authenticated: Option<bool>,
    pub connected: Option<bool>,
    pub competing: Option<bool>,
    pub message: Option<String>,
}

impl AuthStatus {
    /// ibind's health rule: authenticated, connected and not competing.
    pub fn is_healthy(&self) -> bool {
        self.authenticated == Some(true)
            && self.connected != Some(false)
            && self.competing != Some(true)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    MarketData(MdUpdate),
    /// `{"topic":"system","hb":<ms>}`
    Heartbeat(i64),
    /// `{"topic":"system","success":"<user>"}`
    LoggedIn(String),
    Status(AuthStatus),
    /// `act`: the account list.
    Accounts(Vec<String>),
    /// The reply to `tic`.
    Tic,
    /// `{"message":"waiting for session"}`: the socket wants `{"session":...}`.
    WaitingForSession,
    /// The text `ech+hb`.
    Echo,
    Error {
        code: Option<i64>,
        message: String,
    },
    /// Anything else with a topic (`ntf`, `blt`, `sor`, ...): valid, not ours.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    #[error("frame is not a JSON object")]
    NotAnObject,
    #[error("frame has no topic")]
    NoTopic,
    #[error("market-data frame without a valid conid")]
    BadConid,
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A field value as text: strings as they are, numbers in their JSON spelling.
fn raw_value(v: &Value) -> Option<Arc<str>> {
    match v {
        Value::String(s) => Some(Arc::from(s.as_str())),
        Value::Number(n) => Some(Arc::from(n.to_string())),
        _ => None,
    }
}

pub fn parse_frame(text: &str) -> Result<ServerFrame, WireError> {
    let text = text.trim();
    if text == "ech+hb" {
        return Ok(ServerFrame::Echo);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| WireError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(WireError::NotAnObject);
    };
    let Some(topic) = obj.get("topic").and_then(Value::as_str) else {
        return untopical(&obj);
    };
    if let Some(suffix) = topic.strip_prefix("smd+") {
        return market_data(&obj, suffix);
    }
    Ok(match topic {
        "system" => {
            if let Some(hb) = obj.get("hb").and_then(as_i64) {
                ServerFrame::Heartbeat(hb)
            } else if let Some(user) = obj.get("success").and_then(Value::as_str) {
                ServerFrame::LoggedIn(user.to_owned())
            } else {
                ServerFrame::Other(topic.to_owned())
            }
        }
        "sts" => {
            let args = obj.get("args").cloned().unwrap_or(Value::Null);
            ServerFrame::Status(serde_json::from_value(args).unwrap_or_default())
        }
        "act" => ServerFrame::Accounts(
            obj.get("args")
                .and_then(|a| a.get("accounts"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "tic" => ServerFrame::Tic,
        other => ServerFrame::Other(other.to_owned()),
    })
}

fn untopical(obj: &Map<String, Value>) -> Result<ServerFrame, WireError> {
    if let Some(message) = obj.get("error").and_then(Value::as_str) {
        return Ok(ServerFrame::Error {
            code: obj.get("code").and_then(as_i64),
            message: message.to_owned(),
        });
    }
    match obj.get("message").and_then(Value::as_str) {
        Some(m) if m.eq_ignore_ascii_case("waiting for session") => {
            Ok(ServerFrame::WaitingForSession)
        }
        _ => Err(WireError::NoTopic),
    }
}

fn market_data(obj: &Map<String, Value>, topic_conid: &str) -> Result<ServerFrame, WireError> {
    let conid = obj
        .get("conid")
        .and_then(as_i64)
        .or_else(|| topic_conid.split('@').next()?.parse().ok())
        .filter(|c| *c > 0)
        .ok_or(WireError::BadConid)?;
    let mut fields = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        if let Some(f) = MdField::from_id(k) {
            if let Some(raw) = raw_value(v) {
                fields.push((f, raw));
            }
        }
    }
    Ok(ServerFrame::MarketData(MdUpdate {
        conid,
        updated_ms: obj.get("_updated").and_then(as_i64),
        fields,
    }))
}

/// `smd+{conid}+{"fields":[...]}`: subscribe (or renew; re-sending adds fields).
pub fn smd_command(conid: i64, fields: &[&str]) -> String {
    let list = serde_json::to_string(fields).unwrap_or_else(|_| "[]".to_owned());
    format!("smd+{conid}+{{\"fields\":{list}}}")
}

/// `umd+{conid}+{}`: stop market data.
pub fn umd_command(conid: i64) -> String {
    format!("umd+{conid}+{{}}")
}

/// The `api` cookie ibind sends on the upgrade: JSON with a space after the colon.
pub fn session_cookie(session: &str) -> String {
    format!("api={{\"session\": \"{session}\"}}")
}

/// Reads the session id back out of a `Cookie` header value, as a gateway would.
pub fn session_from_cookie(header: &str) -> Option<String> {
    header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        if name.trim() != "api" {
            return None;
        }
        let v: Value = serde_json::from_str(value.trim()).ok()?;
        v.get("session")?.as_str().map(str::to_owned)
    })
}

/// `POST /tickle`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Tickle {
    pub session: Option<String>,
    pub iserver: Option<TickleIserver>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TickleIserver {
    #[serde(rename = "authStatus")]
    pub auth_status: Option<AuthStatus>,
}

impl Tickle {
    pub fn auth(&self) -> AuthStatus {
        self.iserver
            .as_ref()
            .and_then(|i| i.auth_status.clone())
            .unwrap_or_default()
    }
}

/// The account ids of `GET /portfolio/accounts` (`id`, else `accountId`; the gateway
/// sends both).
pub fn parse_accounts(body: &Value) -> Option<Vec<String>> {
    let rows = body.as_array()?;
    Some(
        rows.iter()
            .filter_map(|r| {
                let obj = r.as_object()?;
                text(obj, "id").or_else(|| text(obj, "accountId"))
            })
            .collect(),
    )
}

/// One row of `GET /portfolio/{accountId}/positions/{page}`, read leniently: third
/// parties see `strike` as a number or a string and `multiplier` as null.
#[derive(Debug, Clone, PartialEq)]
pub struct IbkrPosition {
    pub account: Arc<str>,
    pub conid: i64,
    pub asset_class: String,
    pub position: Decimal,
    pub expiry: Option<String>,
    pub put_or_call: Option<String>,
    pub strike: Option<Decimal>,
    pub multiplier: Option<Decimal>,
    pub und_conid: Option<i64>,
    /// `undSym`, else `ticker`, else the first word of `contractDesc`.
    pub underlying_symbol: Option<String>,
}

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("positions page is not a JSON array")]
    NotAnArray,
    #[error("position row {index}: {what}")]
    BadRow { index: usize, what: &'static str },
}

/// Parses one positions page. Bad rows are returned as errors beside the good ones,
/// so one odd row does not hide the rest of the book.
pub fn parse_positions(
    body: &Value,
    account: &str,
) -> Result<(Vec<IbkrPosition>, Vec<PositionError>), PositionError> {
    let rows = body.as_array().ok_or(PositionError::NotAnArray)?;
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        match parse_position(row, account) {
            Ok(p) => good.push(p),
            Err(what) => bad.push(PositionError::BadRow { index, what }),
        }
    }
    Ok((good, bad))
}

fn parse_position(row: &Value, account: &str) -> Result<IbkrPosition, &'static str> {
    let obj = row.as_object().ok_or("not an object")?;
    let conid = obj.get("conid").and_then(as_i64).ok_or("no conid")?;
    let position = obj.get("position").and_then(decimal).ok_or("no position")?;
    let asset_class = text(obj, "assetClass").ok_or("no assetClass")?;
    let underlying_symbol = text(obj, "undSym")
        .or_else(|| text(obj, "ticker"))
        .or_else(|| {
            text(obj, "contractDesc").and_then(|d| d.split_whitespace().next().map(str::to_owned))
        });
    Ok(IbkrPosition {
        account: Arc::from(text(obj, "acctId").as_deref().unwrap_or(account)),
        conid,
        asset_class: asset_class.to_ascii_uppercase(),
        position: position.normalize(),
        expiry: text(obj, "expiry").or_else(|| text(obj, "lastTradingDay")),
        put_or_call: text(obj, "putOrCall"),
        strike: obj.get("strike").and_then(decimal).filter(|s| !s.is_zero()),
        multiplier: obj
            .get("multiplier")
            .and_then(decimal)
            .filter(|m| !m.is_zero()),
        und_conid: obj.get("undConid").and_then(as_i64).filter(|c| *c > 0),
        underlying_symbol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured shapes: see `testdata/ibkr/README.md`.
    const SMD: &str = include_str!("../../testdata/ibkr/smd_option_sample.json");

    #[test]
    fn market_data_keeps_raw_values_of_known_fields() {
        let ServerFrame::MarketData(md) = parse_frame(SMD).unwrap() else {
            panic!("not market data")
        };
        assert_eq!(md.conid, 700000001);
        assert_eq!(md.updated_ms, Some(1715515200000));
        assert_eq!(md.fields.len(), 9);
        let mut f = MdFields::default();
        f.merge(&md.fields);
        assert_eq!(f.get(MdField::ImpliedVol), Some("21.2%"));
        assert_eq!(f.get(MdField::Delta), Some("0.552"));
    }

    #[test]
    fn ibkr_sample_with_a_number_value_and_a_prefixed_price() {
        // IBKR's own sample (WSDOC) mixes strings and numbers.
        let frame = include_str!("../../testdata/ibkr/smd_ibkr_doc_sample.json");
        let ServerFrame::MarketData(md) = parse_frame(frame).unwrap() else {
            panic!()
        };
        let mut f = MdFields::default();
        f.merge(&md.fields);
        assert_eq!(f.get(MdField::Last), Some("C382.89"));
        assert_eq!(f.get(MdField::Delta), Some("0.5"));
    }

    #[test]
    fn partial_updates_merge_per_field() {
        let mut f = MdFields::default();
        let ServerFrame::MarketData(a) = parse_frame(SMD).unwrap() else {
            panic!()
        };
        f.merge(&a.fields);
        let ServerFrame::MarketData(b) =
            parse_frame(r#"{"topic":"smd+700000001","conid":700000001,"7308":"0.560"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(b.fields.len(), 1);
        f.merge(&b.fields);
        assert_eq!(f.get(MdField::Delta), Some("0.560"));
        assert_eq!(
            f.get(MdField::Gamma),
            Some("0.012"),
            "untouched fields stay"
        );
    }

    #[test]
    fn early_frame_with_only_ids_has_no_fields() {
        let md = parse_frame(r#"{"server_id":"q0","conid":265598,"topic":"smd+265598"}"#).unwrap();
        assert!(
            matches!(md, ServerFrame::MarketData(MdUpdate { ref fields, .. }) if fields.is_empty())
        );
    }

    #[test]
    fn unsolicited_frames() {
        assert_eq!(
            parse_frame(r#"{"topic":"system","hb":1594677336001}"#).unwrap(),
            ServerFrame::Heartbeat(1594677336001)
        );
        assert_eq!(
            parse_frame(r#"{"topic":"system","success":"user123","isFT":false,"isPaper":true}"#)
                .unwrap(),
            ServerFrame::LoggedIn("user123".into())
        );
        let ServerFrame::Status(s) = parse_frame(
            r#"{"topic":"sts","args":{"connected":true,"authenticated":false,"competing":false,"message":"","fail":""}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert!(!s.is_healthy());
        assert_eq!(
            parse_frame(
                r#"{"topic":"act","args":{"accounts":["DU1234567"],"selectedAccount":"DU1234567"}}"#
            )
            .unwrap(),
            ServerFrame::Accounts(vec!["DU1234567".into()])
        );
        assert_eq!(
            parse_frame(r#"{"topic":"tic","alive":true,"id":"abc","lastAccessed":1}"#).unwrap(),
            ServerFrame::Tic
        );
        assert_eq!(
            parse_frame(r#"{"message":"waiting for session"}"#).unwrap(),
            ServerFrame::WaitingForSession
        );
        assert_eq!(parse_frame("ech+hb").unwrap(), ServerFrame::Echo);
        assert_eq!(
            parse_frame(r#"{"error":"Topic unknown '{\"s'","code":1}"#).unwrap(),
            ServerFrame::Error {
                code: Some(1),
                message: "Topic unknown '{\"s'".into()
            }
        );
        assert_eq!(
            parse_frame(r#"{"topic":"ntf","args":{"id":"1","text":"x"}}"#).unwrap(),
            ServerFrame::Other("ntf".into())
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[1,2]",
            r#"{"topic":"smd+"#,
            r#"{"foo":1}"#,
            r#"{"topic":"smd+x","conid":"abc"}"#,
            r#"{"topic":"smd+1","conid":-5}"#,
        ] {
            assert!(parse_frame(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_match_the_documented_text() {
        assert_eq!(
            smd_command(265598, &["31", "84"]),
            r#"smd+265598+{"fields":["31","84"]}"#
        );
        assert_eq!(umd_command(265598), "umd+265598+{}");
        let cookie = session_cookie("aeccc9d7515398c50fa894d967d099b1");
        assert_eq!(
            cookie,
            r#"api={"session": "aeccc9d7515398c50fa894d967d099b1"}"#
        );
        assert_eq!(
            session_from_cookie(&format!("x=1; {cookie}")).as_deref(),
            Some("aeccc9d7515398c50fa894d967d099b1")
        );
        assert_eq!(session_from_cookie("api=garbage"), None);
    }

    #[test]
    fn tickle_sample_from_the_docs() {
        let t: Tickle =
            serde_json::from_str(include_str!("../../testdata/ibkr/tickle.json")).unwrap();
        assert_eq!(
            t.session.as_deref(),
            Some("bb665d0f55b6289d70bc7380089fc96f")
        );
        assert!(t.auth().is_healthy());
    }

    #[test]
    fn position_rows_are_read_leniently() {
        let body: Value =
            serde_json::from_str(include_str!("../../testdata/ibkr/positions_page.json")).unwrap();
        let (good, bad) = parse_positions(&body, "DU1234567").unwrap();
        assert_eq!(good.len(), 3);
        assert_eq!(
            bad,
            vec![PositionError::BadRow {
                index: 3,
                what: "no conid"
            }]
        );
        assert_eq!(good[0].position, Decimal::from(-2));
        assert_eq!(good[0].strike, Some(Decimal::from(500)));
        assert_eq!(good[0].und_conid, Some(756733));
        assert_eq!(good[1].strike, None);
        assert_eq!(good[1].und_conid, None);
        assert_eq!(good[1].underlying_symbol.as_deref(), Some("AAPL"));
        assert_eq!(good[2].strike, Some(Decimal::from(440)));
        assert_eq!(good[2].underlying_symbol.as_deref(), Some("QQQ"));
        assert!(parse_positions(&Value::Null, "x").is_err());
    }

    #[test]
    fn accounts_by_id_or_account_id() {
        let body: Value = serde_json::from_str(
            r#"[{"id":"DU1","accountId":"DU1","type":"DEMO"},{"accountId":"DU2"},{"desc":"x"}]"#,
        )
        .unwrap();
        assert_eq!(
            parse_accounts(&body),
            Some(vec!["DU1".into(), "DU2".into()])
        );
        assert_eq!(parse_accounts(&Value::Null), None);
    }
}
