//! The gateway's commands (js-gateway §2.1, §4 and "Decisions" 6–7), without IO: the
//! envelope, each command's body parsed and validated into a typed [`Command`], and
//! the refusal a bad one gets ([`Rejected`]: the HTTP status, a stable code and the
//! JS route's body). A command that fails here never starts.
//!
//! Numbers are accepted as JSON numbers or numeric strings (the JS `parseFloat`), and
//! kept exact; "required" means JS-truthy (`0`, `""`, `null` count as missing);
//! non-finite or mistyped values are refused with `INVALID_FIELD` (JS let NaN through).
//! Symbols are Binance-native; the ccxt form `BTC/USDT:USDT` is accepted and normalized.

mod body;
mod envelope;
mod fields;
mod spec;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::evaluate::LiquidationMode;

use body::*;
pub use envelope::*;
pub use fields::*;
pub use spec::*;

/// Parses and validates the command in `env`. Checks that need no IO — the size,
/// the type, the admin role, each field — in that order.
pub fn parse(env: &Envelope) -> Result<Command, Rejected> {
    if env.bytes > MAX_COMMAND_BYTES {
        return Err(Rejected::new(
            "PAYLOAD_TOO_LARGE",
            format!(
                "Command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                env.bytes
            ),
        ));
    }
    let Some(kind) = Kind::parse(&env.kind) else {
        return Err(Rejected::new(
            "UNKNOWN_COMMAND",
            format!("Unknown command type '{}'", env.kind),
        ));
    };
    if let Some(t) = env.fields.get("type").and_then(Value::as_str) {
        if t != kind.name() {
            return Err(invalid(
                "type",
                &format!("'{t}' sent on the '{}' queue", kind.name()),
            ));
        }
    }
    if !kind.supported() {
        return Err(Rejected::new(
            "NOT_SUPPORTED_YET",
            format!("'{}' is not supported by this engine yet", kind.name()),
        ));
    }
    if kind.admin() && env.role != Role::Admin {
        return Err(Rejected::new("FORBIDDEN", "Admin access required"));
    }
    let m = &env.fields;
    let has_account = env.sub_account_id.is_some();
    let account_only = |c: Command| {
        if has_account {
            Ok(c)
        } else {
            Err(missing("Missing subAccountId"))
        }
    };
    match kind {
        Kind::Trade => order_spec(m, has_account, false, TRADE_FIELDS).map(Command::Trade),
        Kind::Validate => order_spec(m, has_account, false, TRADE_FIELDS).map(Command::Validate),
        Kind::Limit => order_spec(
            m,
            has_account,
            true,
            "Missing fields: subAccountId, symbol, side, quantity, price, leverage",
        )
        .map(Command::Limit),
        Kind::Scale => scale(m, has_account).map(Command::Scale),
        Kind::Basket => basket(m, has_account).map(Command::Basket),
        Kind::Close | Kind::ForceClose => Ok(Command::Close {
            position_id: id(m, "positionId")?,
        }),
        Kind::CloseAll | Kind::ForceCloseAll => account_only(Command::CloseAll),
        Kind::AdminTakeover => Ok(Command::AdminTakeover {
            position_id: id(m, "positionId")?,
        }),
        Kind::LimitClose => {
            let position_id = id(m, "positionId")?;
            let price = positive(m, "price")?.ok_or_else(|| missing("Missing price"))?;
            Ok(Command::LimitClose { position_id, price })
        }
        Kind::BabysitterClose => babysitter_close(env, m),
        Kind::CancelOrder => Ok(Command::CancelOrder {
            order_id: id(m, "orderId")?,
        }),
        Kind::CancelAllOrders => account_only(Command::CancelAllOrders),
        Kind::AccountCreate => {
            let name = string(m, "name")?;
            let kind = string(m, "accountType")?.unwrap_or_else(|| "USER".into());
            let bot = match kind.to_ascii_uppercase().as_str() {
                "USER" => false,
                "BOT" => true,
                _ => return Err(invalid("accountType", "must be USER or BOT")),
            };
            let initial = match m.get("initialBalance") {
                None | Some(Value::Null) => None,
                Some(_) => Some(decimal(m, "initialBalance")?.unwrap_or(Decimal::ZERO)),
            };
            let (Some(name), Some(initial_balance)) = (name, initial) else {
                return Err(missing("Missing required fields: name, initialBalance"));
            };
            if initial_balance.is_sign_negative() {
                return Err(invalid("initialBalance", "must not be negative"));
            }
            Ok(Command::AccountCreate(NewAccountSpec {
                name,
                bot,
                owner_user_id: string(m, "ownerUserId")?.or_else(|| env.user_id.clone()),
                initial_balance,
                liquidation_mode: liquidation_mode(m)?.unwrap_or(LiquidationMode::Adl30),
                maintenance_rate: positive(m, "maintenanceRate")?,
            }))
        }
        Kind::AccountUpdate => account_only(Command::AccountUpdate {
            name: string(m, "name")?,
            liquidation_mode: liquidation_mode(m)?,
            maintenance_rate: positive(m, "maintenanceRate")?,
        }),
        Kind::BalanceAdjust => {
            let amount = decimal(m, "amount")?;
            let reason = string(m, "reason")?;
            let (Some(amount), Some(reason), true) = (amount, reason, has_account) else {
                return Err(missing(
                    "Missing required fields: subAccountId, amount, reason",
                ));
            };
            Ok(Command::BalanceAdjust { amount, reason })
        }
        Kind::RiskRulesSet => {
            let global = boolean(m, "global")?;
            if !global && !has_account {
                return Err(missing("Missing subAccountId (or global: true)"));
            }
            Ok(Command::RiskRulesSet {
                global,
                rules: rules_patch(m)?,
            })
        }
        Kind::AccountFreeze => account_only(Command::AccountFreeze),
        Kind::AccountUnfreeze => account_only(Command::AccountUnfreeze),
        Kind::ChaseStart
        | Kind::ChaseCancel
        | Kind::ScalperStart
        | Kind::ScalperCancel
        | Kind::TwapStart
        | Kind::TwapCancel
        | Kind::TwapBasketStart
        | Kind::TwapBasketCancel
        | Kind::TrailStopStart
        | Kind::TrailStopCancel
        | Kind::SurfStart
        | Kind::SurfAdjust
        | Kind::SurfStop => Err(Rejected::new(
            "NOT_SUPPORTED_YET",
            format!("'{}' is not supported by this engine yet", kind.name()),
        )),
    }
}

/// The reason a babysitter close is booked as (`trade_executions.action`, the
/// `position_closed` event's `reason`) when none is given.
pub const BABYSITTER_DEFAULT_REASON: &str = "BABYSITTER_TP";

/// Whether `reason` can name a close: 1 to 40 ASCII letters, digits, `_`, `-` or `:`
/// (it is stored as the fills' action and published as the event's reason).
pub fn close_reason_ok(reason: &str) -> bool {
    (1..=40).contains(&reason.len())
        && reason
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b':'))
}

/// `babysitter_close`: the JS route was loopback-only, so here only the babysitter's
/// own source or an admin may send it.
fn babysitter_close(env: &Envelope, m: &Map<String, Value>) -> Result<Command, Rejected> {
    if env.role != Role::Admin && env.source != "babysitter" {
        return Err(Rejected::new(
            "FORBIDDEN",
            "babysitter_close is for the babysitter (source 'babysitter') or an admin",
        ));
    }
    let position_id = string(m, "positionId")?.filter(|s| !s.trim().is_empty());
    let close_price = positive(m, "closePrice")?.filter(|p| !p.is_zero());
    let (Some(position_id), Some(close_price)) = (position_id, close_price) else {
        return Err(missing("positionId and closePrice are required"));
    };
    let reason = string(m, "reason")?
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| BABYSITTER_DEFAULT_REASON.into());
    if !close_reason_ok(&reason) {
        return Err(invalid(
            "reason",
            "must be 1 to 40 letters, digits, _, - or : (e.g. BABYSITTER_TP)",
        ));
    }
    Ok(Command::BabysitterClose {
        position_id,
        close_price,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use serde_json::json;

    use super::*;
    use crate::position::OrderSide;

    fn env(kind: &str, v: Value) -> Envelope {
        decode(v.to_string().as_bytes(), kind).unwrap()
    }

    fn trade(extra: Value) -> Value {
        let mut v = json!({"requestId": "r1", "subAccountId": "a", "symbol": "BTC/USDT:USDT",
                           "side": "long", "quantity": 0.002, "leverage": "20"});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    }

    #[test]
    fn a_trade_is_parsed_exactly_with_its_symbol_normalized() {
        let c = parse(&env("trade", trade(json!({})))).unwrap();
        assert_eq!(
            c,
            Command::Trade(OrderSpec {
                symbol: "BTCUSDT".into(),
                side: OrderSide::Buy,
                quantity: Decimal::from_str("0.002").unwrap(),
                leverage: Decimal::from(20),
                price: None,
                reduce_only: false,
            })
        );
    }

    #[test]
    fn missing_and_js_falsy_fields_get_the_routes_message() {
        for patch in [
            json!({"quantity": 0}),
            json!({"symbol": ""}),
            json!({"leverage": null}),
        ] {
            let r = parse(&env("trade", trade(patch))).unwrap_err();
            assert_eq!((r.status, r.code), (400, "MISSING_FIELDS"));
            assert_eq!(r.body["error"], TRADE_FIELDS);
        }
    }

    #[test]
    fn non_finite_mistyped_and_negative_numbers_are_refused() {
        for patch in [
            json!({"quantity": "NaN"}),
            json!({"quantity": "Infinity"}),
            json!({"quantity": [1]}),
            json!({"leverage": {"x": 1}}),
            json!({"quantity": -1}),
            json!({"reduceOnly": "yes"}),
        ] {
            let r = parse(&env("trade", trade(patch.clone()))).unwrap_err();
            assert_eq!((r.status, r.code), (400, "INVALID_FIELD"), "{patch}");
        }
        let r = parse(&env("trade", trade(json!({"side": "UP"})))).unwrap_err();
        assert_eq!(r.body["error"], "side must be LONG or SHORT");
    }

    #[test]
    fn what_cannot_be_answered_says_why() {
        assert_eq!(decode(b"{", "trade").unwrap_err().code(), "INVALID_JSON");
        assert_eq!(decode(b"[1]", "trade").unwrap_err(), Undecodable::NotObject);
        assert_eq!(
            decode(br#"{"requestId": ""}"#, "trade").unwrap_err(),
            Undecodable::NoRequestId
        );
        assert_eq!(
            decode(br#"{"requestId": 7}"#, "trade").unwrap_err(),
            Undecodable::NoRequestId
        );
    }

    #[test]
    fn babysitter_close_is_the_babysitters_or_an_admins_with_a_reason_it_can_store() {
        let body = |extra: Value| {
            let mut v = json!({"requestId": "r1", "positionId": "p1", "closePrice": "64000.5",
                               "source": "babysitter"});
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            v
        };
        assert_eq!(
            parse(&env("babysitter_close", body(json!({})))).unwrap(),
            Command::BabysitterClose {
                position_id: "p1".into(),
                close_price: Decimal::from_str("64000.5").unwrap(),
                reason: BABYSITTER_DEFAULT_REASON.into(),
            }
        );
        let c = parse(&env(
            "babysitter_close",
            body(json!({"source": "http", "role": "ADMIN", "reason": "BABYSITTER_SL"})),
        ))
        .unwrap();
        assert!(matches!(c, Command::BabysitterClose { reason, .. } if reason == "BABYSITTER_SL"));
        let r = parse(&env("babysitter_close", body(json!({"source": "http"})))).unwrap_err();
        assert_eq!((r.status, r.code), (403, "FORBIDDEN"));
        for patch in [json!({"closePrice": 0}), json!({"positionId": ""})] {
            let r = parse(&env("babysitter_close", body(patch))).unwrap_err();
            assert_eq!((r.status, r.code), (400, "MISSING_FIELDS"));
            assert_eq!(r.body["error"], "positionId and closePrice are required");
        }
        for reason in [
            "tp; DROP TABLE",
            "x".repeat(41).as_str(),
            "TAKE PROFIT",
            "TP\u{0}",
        ] {
            let r = parse(&env("babysitter_close", body(json!({"reason": reason})))).unwrap_err();
            assert_eq!((r.status, r.code), (400, "INVALID_FIELD"), "{reason}");
        }
    }

    #[test]
    fn size_type_support_and_role_are_checked_first() {
        let mut big = trade(json!({}));
        big["pad"] = json!("x".repeat(MAX_COMMAND_BYTES));
        assert_eq!(parse(&env("trade", big)).unwrap_err().status, 413);
        assert_eq!(
            parse(&env("frobnicate", trade(json!({}))))
                .unwrap_err()
                .code,
            "UNKNOWN_COMMAND"
        );
        assert_eq!(
            parse(&env("trade", trade(json!({"type": "limit"}))))
                .unwrap_err()
                .code,
            "INVALID_FIELD"
        );
        let r = parse(&env("chase_start", trade(json!({})))).unwrap_err();
        assert_eq!((r.status, r.code), (501, "NOT_SUPPORTED_YET"));
        let r = parse(&env(
            "balance_adjust",
            json!({"requestId": "r", "subAccountId": "a",
                                                    "amount": -5, "reason": "fee"}),
        ))
        .unwrap_err();
        assert_eq!((r.status, r.code), (403, "FORBIDDEN"));
        let c = parse(&env("balance_adjust", json!({"requestId": "r", "subAccountId": "a",
                                                    "role": "ADMIN", "amount": "-5.5", "reason": "fee"})))
        .unwrap();
        assert_eq!(
            c,
            Command::BalanceAdjust {
                amount: Decimal::from_str("-5.5").unwrap(),
                reason: "fee".into()
            }
        );
    }

    #[test]
    fn scale_checks_count_side_leverage_and_each_order() {
        let orders = |n: usize| -> Value {
            (0..n)
                .map(|i| json!({"price": 100 + i, "quantity": 1}))
                .collect()
        };
        let base = |o: Value| {
            json!({"requestId": "r", "subAccountId": "a", "symbol": "BTCUSDT",
                                     "side": "LONG", "leverage": 10, "orders": o})
        };
        assert_eq!(
            parse(&env("scale", base(orders(3)))).unwrap_err().code,
            "SCALE_INVALID_COUNT"
        );
        let mut dup = orders(5);
        dup[4]["price"] = json!(100);
        let r = parse(&env("scale", base(dup))).unwrap_err();
        assert_eq!(
            r.body["errors"][0]["message"],
            "Order #5: duplicate price 100"
        );
        let Command::Scale(s) = parse(&env("scale", base(orders(5)))).unwrap() else {
            panic!("not a scale");
        };
        assert_eq!(s.orders.len(), 5);
    }

    #[test]
    fn the_body_leaves_out_the_envelope() {
        let e = env(
            "trade",
            trade(json!({"ts": 1, "deadlineTs": 2, "idempotencyKey": "k", "userId": "u"})),
        );
        let b = e.body();
        assert!(b.get("ts").is_none() && b.get("requestId").is_none());
        assert_eq!(b["subAccountId"], "a");
        assert!(e.expired(3) && !e.expired(2));
        assert_eq!(e.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn kill_switches_are_the_stops_and_the_admin_actions() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(*k));
            if k.admin() {
                assert!(k.kill_switch(), "{k:?}");
            }
        }
        assert!(!Kind::Trade.kill_switch() && Kind::CancelAllOrders.kill_switch());
    }

    #[test]
    fn the_published_fields_are_the_ones_parse_reads() {
        for kind in Kind::ALL.iter().filter(|k| k.supported()) {
            let mut body = example(*kind);
            body["requestId"] = json!("r");
            body["role"] = json!("ADMIN");
            assert!(
                parse(&env(kind.name(), body.clone())).is_ok(),
                "{kind:?}: the example of its schema is refused: {body}"
            );
            for fd in fields(*kind).iter().filter(|f| f.required) {
                let mut less = body.clone();
                less.as_object_mut().unwrap().remove(fd.name);
                let r = parse(&env(kind.name(), less));
                assert!(
                    r.as_ref().is_err_and(|r| r.status == 400),
                    "{kind:?} without {}: {r:?}",
                    fd.name
                );
            }
            let schema = envelope_schema(*kind);
            assert_eq!(schema["properties"]["type"]["const"], kind.name());
        }
    }
}
