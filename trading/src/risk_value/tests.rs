use super::*;

fn value(input: Value) -> Value {
    run(&input.to_string()).unwrap_or_else(|e| panic!("{e}: {input}"))
}

fn btc(balance: &str, mode: &str, mark: &str) -> Value {
    json!({
        "balance": balance,
        "liquidationMode": mode,
        "positions": [{"id": "p1", "symbol": "BTCUSDT", "side": "LONG",
                       "quantity": "1", "entryPrice": "50000", "leverage": "10"}],
        "marks": {"BTCUSDT": mark},
        "lots": {"BTCUSDT": {"step": "0.001", "minNotional": "100"}},
    })
}

/// Hand-computed: 1 BTC long at 50 000, maintenance 0.005 (250), T = 0.9.
/// ratio = 250 / (balance + mark − 50 000).
#[test]
fn a_table_of_hand_computed_accounts() {
    // (balance, mode, mark) → (equity, ratio, tier, action, reason, closed quantity, ratio after)
    let cases = [
        (
            "1000", "ADL_30", "50000", "1000", "0.25", "NORMAL", "NONE", None, None, "0.25",
        ),
        (
            "1000",
            "ADL_30",
            "49300",
            "300",
            "0.8333333333333333333333333333",
            "WARNING",
            "WARN",
            None,
            None,
            "0.8333333333333333333333333333",
        ),
        // Equity 270: ratio 0.9259 → tier 2, 30 % of 1 BTC = 0.3 at 49 270 realizes
        // −219, balance 781 − 0 = maintenance 175 over equity 270 → 0.6481.
        (
            "1000",
            "ADL_30",
            "49270",
            "270",
            "0.9259259259259259259259259259",
            "ADL_TIER2",
            "ADL",
            Some("ADL_TIER2"),
            Some("0.300"),
            "0.6481481481481481481481481481",
        ),
        (
            "1000",
            "ADL_30",
            "49260",
            "260",
            "0.9615384615384615384615384615",
            "ADL_TIER3",
            "ADL_THEN_RECHECK",
            Some("ADL_TIER3"),
            Some("0.300"),
            "0.6730769230769230769230769231",
        ),
        (
            "1000",
            "INSTANT_CLOSE",
            "49270",
            "270",
            "0.9259259259259259259259259259",
            "ADL_TIER2",
            "LIQUIDATE",
            Some("INSTANT_CLOSE"),
            Some("1"),
            "0",
        ),
        (
            "1000",
            "TAKEOVER",
            "49270",
            "270",
            "0.9259259259259259259259259259",
            "ADL_TIER2",
            "TAKEOVER",
            Some("VIRTUAL_LIQ"),
            Some("1"),
            "0",
        ),
        // Closed at 48 900 the account is wiped out (balance floored at 0): no equity, 999.
        (
            "1000",
            "ADL_30",
            "48900",
            "-100",
            "999",
            "INSOLVENT",
            "LIQUIDATE",
            Some("INSOLVENCY_GUARD"),
            Some("1"),
            "999",
        ),
        (
            "1000",
            "TAKEOVER",
            "49200",
            "200",
            "1.25",
            "INSOLVENT",
            "TAKEOVER",
            Some("INSOLVENCY_TAKEOVER"),
            Some("1"),
            "0",
        ),
    ];
    for (balance, mode, mark, equity, ratio, tier, action, reason, closed, after) in cases {
        let out = value(btc(balance, mode, mark));
        let what = format!("{balance} {mode} {mark}: {out}");
        assert_eq!(out["equity"], equity, "{what}");
        assert_eq!(out["marginRatio"], ratio, "{what}");
        assert_eq!(out["tier"], tier, "{what}");
        let d = &out["decision"];
        assert_eq!(d["action"], action, "{what}");
        assert_eq!(d["reason"].as_str(), reason, "{what}");
        assert_eq!(d["closes"][0]["quantity"].as_str(), closed, "{what}");
        assert_eq!(d["ratioAfter"], after, "{what}");
    }
}

#[test]
fn positions_carry_their_pnl_and_liquidation_prices() {
    let out = value(btc("1000", "ADL_30", "49000"));
    let p = &out["positions"][0];
    assert_eq!(p["unrealizedPnl"], "-1000");
    // Margin 5 000: −1 000 / 5 000 × 100.
    assert_eq!(p["pnlPercent"], "-20");
    // At open: floor 250 / 0.9 = 277.78, room 722.22 → 50 000 − 722.22.
    assert_eq!(
        p["liquidationPriceAtOpen"],
        "49277.777777777777777777777778"
    );
    // Alone in the account, the cross price is the same, as the risk loop rounds it.
    assert_eq!(p["liquidationPrice"], "49277.7777777778");
    assert_eq!(out["accountLiqPrice"], "49277.7777777778");
    assert_eq!(out["availableMargin"], "-250.000");
}

#[test]
fn tier_three_shows_what_the_second_look_would_do() {
    let out = value(btc("1000", "ADL_30", "49260"));
    let then = &out["decision"]["then"];
    // After the step: 0.7 BTC, balance 778, equity 260 → ratio 0.673: no escalation.
    assert_eq!(then["action"], "NONE", "{out}");
    // Two positions: closing 30 % of the largest leaves the account at T → escalates.
    let two = json!({
        "balance": "520",
        "positions": [
            {"id": "b", "symbol": "BTCUSDT", "side": "LONG", "quantity": "1", "entryPrice": "50000", "leverage": "10"},
            {"id": "e", "symbol": "ETHUSDT", "side": "SHORT", "quantity": "20", "entryPrice": "3000", "leverage": "10"},
        ],
        "marks": {"BTCUSDT": "50000", "ETHUSDT": "3000"},
    });
    // Maintenance (50 000 + 60 000) × 0.005 = 550 over 520: 1.058 → insolvent; 580:
    // 0.948 → tier 2; 575: 0.9565 → tier 3. 30 % of ETH (the larger) leaves 460 / 575 = 0.8.
    let mut two = two;
    two["balance"] = json!("575");
    let out = value(two);
    assert_eq!(out["decision"]["action"], "ADL_THEN_RECHECK", "{out}");
    assert_eq!(out["decision"]["closes"][0]["positionId"], "e");
    assert_eq!(
        out["decision"]["closes"][0]["quantity"], "6.0",
        "no lot given: unrounded"
    );
    assert_eq!(out["decision"]["closes"][0]["orderSide"], "BUY");
    assert_eq!(out["decision"]["ratioAfter"], "0.8");
    assert_eq!(out["decision"]["then"]["action"], "WARN");
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = |v: &str| run(v).unwrap_err().to_string();
    assert!(err("{").starts_with("the input is not valid JSON"));
    assert_eq!(err(r#"{"positions": []}"#), "account.balance: missing");
    assert_eq!(err(r#"{"balance": 1}"#), "positions: missing");
    assert_eq!(
        err(r#"{"balance": 1, "positions": [], "liquidationMode": "YOLO"}"#),
        "liquidationMode: expected one of ADL_30, INSTANT_CLOSE, TAKEOVER"
    );
    assert_eq!(
        err(
            r#"{"balance": 1, "positions": [{"symbol": "X", "side": "UP", "quantity": 1, "entryPrice": 1, "leverage": 1}]}"#
        ),
        "positions[0].side: expected one of LONG, SHORT"
    );
    assert_eq!(
        err(
            r#"{"balance": 1, "positions": [{"symbol": "X", "side": "LONG", "quantity": 0, "entryPrice": 1, "leverage": 1}]}"#
        ),
        "positions[0].quantity: expected a decimal number, got 0 (must be positive)"
    );
    assert_eq!(
        err(r#"{"balance": 1, "positions": [], "marks": {"X": "-1"}}"#),
        "marks.X: expected a decimal number, got -1"
    );
}
