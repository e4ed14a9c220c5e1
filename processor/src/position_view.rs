//! The read API's shapes (`api/schema.json`): a position and a portfolio group as JSON,
//! and the filter the positions, portfolio and stream reads share. No IO: the HTTP
//! routes and the bus's position events both print through here.

use model::portfolio::{Group, Position, Totals, MEASURES};
use serde_json::{json, Value};
use streaming::Broker;

/// The parsed filters: a position matches when it matches every one given.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    broker: Option<Broker>,
    account: Option<String>,
    underlying: Option<String>,
}

impl Filter {
    pub fn new(broker: Option<Broker>, account: Option<String>, underlying: Option<&str>) -> Self {
        Self {
            broker,
            account,
            underlying: underlying.map(str::to_ascii_uppercase),
        }
    }

    pub fn is_empty(&self) -> bool {
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

pub fn group_json(g: &Group, t: &Totals) -> Value {
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
