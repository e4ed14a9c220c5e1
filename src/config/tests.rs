/// Every variable this module reads is in `.env.example`, the operator's list.
#[test]
fn every_variable_read_is_in_the_env_example() {
    // `NAME=value`, or `# NAME=value` for one without a default.
    let listed: std::collections::BTreeSet<&str> = include_str!("../../.env.example")
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .collect();
    let source = include_str!("../config.rs");
    let mut missing = Vec::new();
    for part in source.split('"').skip(1).step_by(2) {
        let is_var = part.starts_with("GS_")
            && part.len() > 3
            && part
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_var && !listed.contains(part) && !missing.contains(&part) {
            missing.push(part);
        }
    }
    assert!(missing.is_empty(), "not in .env.example: {missing:?}");
}

use super::*;
use std::collections::HashMap;

fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(&move |k| map.get(k).cloned())
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9464");
    assert_eq!(c.control_addr.to_string(), "127.0.0.1:8888");
    assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
    assert_eq!(c.writer.policy.batch_size, 50);
    assert_eq!(c.writer.policy.max_wait, Duration::from_secs(1));
    assert!(c.ibkr.enabled && c.ibkr.gateway_url.is_none() && !c.ibkr.accept_invalid_certs);
}

#[test]
fn house_positions_are_symbol_quantity_pairs_and_bad_ones_are_named() {
    let c = cfg(&[("GS_HOUSE_POSITIONS", "btcusdt:0.5, ETHUSDT:-4")]).unwrap();
    assert_eq!(c.house_positions.len(), 2);
    assert_eq!(c.house_positions["BTCUSDT"], "0.5".parse().unwrap());
    assert_eq!(c.house_positions["ETHUSDT"], "-4".parse().unwrap());
    for bad in ["BTCUSDT", "BTCUSDT:lots", "BTC USDT:1"] {
        let e = cfg(&[("GS_HOUSE_POSITIONS", bad)]).unwrap_err();
        assert_eq!(e.var, "GS_HOUSE_POSITIONS", "{bad}");
    }
}

#[test]
fn with_no_venue_configured_every_source_runs_simulated() {
    let c = cfg(&[]).unwrap();
    assert!(c.ibkr.enabled && c.tastytrade.enabled && c.binance.enabled && c.synthetic.enabled);
    assert!(
        c.ibkr.gateway_url.is_none()
            && c.tastytrade.credentials.is_none()
            && c.binance.keys.is_none()
    );
}

#[test]
fn a_configured_venue_brings_no_simulated_data_unless_asked() {
    let c = cfg(&[("GS_IBKR_GATEWAY_URL", "https://localhost:5000")]).unwrap();
    assert!(c.ibkr.enabled && c.ibkr.gateway_url.is_some());
    assert!(!c.tastytrade.enabled && !c.binance.enabled && !c.synthetic.enabled);
    let c = cfg(&[
        ("GS_IBKR_GATEWAY_URL", "https://localhost:5000"),
        ("GS_TASTYTRADE", "sim"),
        ("GS_SYNTHETIC", "true"),
    ])
    .unwrap();
    assert!(c.tastytrade.enabled && c.tastytrade.credentials.is_none());
    assert!(c.synthetic.enabled && !c.binance.enabled);
    let c = cfg(&[("GS_BINANCE_API_KEY", "k"), ("GS_BINANCE_API_SECRET", "s")]).unwrap();
    assert!(c.binance.enabled && !c.ibkr.enabled && !c.tastytrade.enabled && !c.synthetic.enabled);
}

#[test]
fn contradictory_or_unknown_source_modes_are_refused_by_name() {
    assert_eq!(cfg(&[("GS_IBKR", "true")]).unwrap_err().var, "GS_IBKR");
    let err = cfg(&[
        ("GS_IBKR", "sim"),
        ("GS_IBKR_GATEWAY_URL", "https://localhost:5000"),
    ])
    .unwrap_err();
    assert_eq!(err.var, "GS_IBKR");
    assert_eq!(
        cfg(&[("GS_BINANCE", "maybe")]).unwrap_err().var,
        "GS_BINANCE"
    );
    assert_eq!(
        cfg(&[("GS_SYNTHETIC", "sim")]).unwrap_err().var,
        "GS_SYNTHETIC"
    );
    let c = cfg(&[("GS_IBKR", "false")]).unwrap();
    assert!(!c.ibkr.enabled && c.tastytrade.enabled);
}

#[test]
fn ibkr_gateway_url_is_checked() {
    let c = cfg(&[("GS_IBKR_GATEWAY_URL", "https://localhost:5000")]).unwrap();
    assert_eq!(
        c.ibkr.gateway_url.unwrap().expose(),
        "https://localhost:5000"
    );
    let e = cfg(&[("GS_IBKR_GATEWAY_URL", "localhost:5000")]).unwrap_err();
    assert_eq!(e.var, "GS_IBKR_GATEWAY_URL");
    let e = cfg(&[("GS_IBKR_ACCEPT_INVALID_CERTS", "maybe")]).unwrap_err();
    assert_eq!(e.var, "GS_IBKR_ACCEPT_INVALID_CERTS");
}

#[test]
fn binance_needs_both_keys_and_never_shows_them() {
    let c = cfg(&[]).unwrap();
    assert!(c.binance.enabled && c.binance.keys.is_none());
    assert_eq!(c.binance.ws_url.expose(), "wss://fstream.binance.com");
    let err = cfg(&[("GS_BINANCE_API_KEY", "k")]).unwrap_err();
    assert_eq!(err.var, "GS_BINANCE_API_SECRET");
    let c = cfg(&[
        ("GS_BINANCE_API_KEY", "KEYVALUE"),
        ("GS_BINANCE_API_SECRET", "SECRETVALUE"),
        ("GS_BINANCE_SYMBOLS", "btcusdt, ETHUSDT_261225"),
    ])
    .unwrap();
    let shown = format!("{:?}", c.binance);
    assert!(
        !shown.contains("KEYVALUE") && !shown.contains("SECRETVALUE"),
        "{shown}"
    );
    assert_eq!(c.binance.symbols, vec!["BTCUSDT", "ETHUSDT_261225"]);
    let err = cfg(&[("GS_BINANCE_SYMBOLS", "BTC-USDT")]).unwrap_err();
    assert_eq!(err.var, "GS_BINANCE_SYMBOLS");
}

#[test]
fn tastytrade_needs_both_credentials_and_never_shows_them() {
    let c = cfg(&[]).unwrap();
    assert!(c.tastytrade.enabled && c.tastytrade.credentials.is_none());
    assert_eq!(c.tastytrade.api_url.expose(), "https://api.tastyworks.com");
    let e = cfg(&[("GS_TASTYTRADE_CLIENT_SECRET", "s3cret")]).unwrap_err();
    assert_eq!(e.var, "GS_TASTYTRADE_REFRESH_TOKEN");
    let c = cfg(&[
        ("GS_TASTYTRADE_CLIENT_SECRET", "s3cret"),
        ("GS_TASTYTRADE_REFRESH_TOKEN", "r3fresh"),
    ])
    .unwrap();
    let creds = c.tastytrade.credentials.as_ref().unwrap();
    assert_eq!(creds.refresh_token.expose(), "r3fresh");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("r3fresh"),
        "{shown}"
    );
    let e = cfg(&[("GS_TASTYTRADE_STREAMER_URL", "https://x")]).unwrap_err();
    assert_eq!(e.var, "GS_TASTYTRADE_STREAMER_URL");
}

#[test]
fn bad_values_name_the_variable() {
    let e = cfg(&[("METRICS_ADDR", "nope")]).unwrap_err();
    assert_eq!(e.var, "METRICS_ADDR");
    let e = cfg(&[("GS_WRITER_BATCH_SIZE", "0")]).unwrap_err();
    assert_eq!(e.var, "GS_WRITER_BATCH_SIZE");
    let e = cfg(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
    assert_eq!(e.var, "DATABASE_URL");
}

#[test]
fn passwords_never_show() {
    let e = cfg(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let c = cfg(&[(
        "DATABASE_URL",
        "postgres://u:hunter2@h:5432/db?sslmode=require",
    )])
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://u:***@h:5432/db"), "{shown}");
    assert_eq!(
        SecretUrl("postgres://h/db".into()).redacted(),
        "postgres://h/db"
    );
    assert_eq!(
        SecretUrl("redis://:pw@h".into()).redacted(),
        "redis://:***@h"
    );
    // A password in the query, and one holding '/', '?' or '@', never shows.
    for url in [
        "postgres://h:5432/db?user=u&password=hunter2",
        "postgres://u:hun/ter2@h:5432/db",
        "postgres://u:hun?ter2@h:5432/db",
        "postgres://u:hun@ter2@h:5432/db",
    ] {
        let c = cfg(&[("DATABASE_URL", url)]).unwrap();
        let shown = format!("{c:?} {}", c.database_url);
        assert!(
            !shown.contains("hunter2") && !shown.contains("ter2"),
            "{shown}"
        );
    }
}
