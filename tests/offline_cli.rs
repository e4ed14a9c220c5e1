//! The offline commands through the binary, as an operator runs them: one JSON
//! object on stdout and exit 0, or `{"error"}` on stderr and exit 2.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn run(args: &[&str], stdin: &str) -> (i32, Value, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_greekstream"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = |b: &[u8]| serde_json::from_slice(b).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json(&out.stdout),
        json(&out.stderr),
    )
}

const ACCOUNT: &str = r#"{"balance": "1000", "liquidationMode": "INSTANT_CLOSE",
    "positions": [{"id": "p", "symbol": "BTCUSDT", "side": "SHORT", "quantity": "1",
                   "entryPrice": "50000", "leverage": "10"}],
    "marks": {"BTCUSDT": "50730"}}"#;

#[test]
fn risk_value_reads_the_account_from_stdin_or_its_argument() {
    for (args, stdin) in [
        (vec!["risk", "value"], ACCOUNT),
        (vec!["risk", "value", ACCOUNT], ""),
    ] {
        let (code, out, err) = run(&args, stdin);
        assert_eq!(code, 0, "{err}");
        // Equity 1 000 − 730 = 270, maintenance 250: ratio 0.926 ≥ T → close all.
        assert_eq!(out["equity"], "270", "{out}");
        assert_eq!(out["tier"], "ADL_TIER2", "{out}");
        assert_eq!(out["decision"]["action"], "LIQUIDATE", "{out}");
        assert_eq!(out["decision"]["reason"], "INSTANT_CLOSE", "{out}");
        assert_eq!(out["decision"]["closes"][0]["orderSide"], "BUY", "{out}");
    }
}

#[test]
fn bad_input_is_an_error_and_exit_two() {
    let (code, out, err) = run(&["risk", "value"], r#"{"balance": "x", "positions": []}"#);
    assert_eq!(code, 2);
    assert_eq!(out, Value::Null);
    assert_eq!(
        err["error"],
        "account.balance: expected a decimal number, got x"
    );
}
