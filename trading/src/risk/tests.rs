use super::*;
use crate::position::{Position, Side};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn filters() -> VenueFilters {
    VenueFilters {
        tick: d("0.1"),
        step: d("0.001"),
        min_notional: d("5"),
        up: d("1.05"),
        down: d("0.95"),
    }
}

fn account(balance: &str, positions: Vec<(&str, Side, &str, &str, &str)>) -> AccountState {
    AccountState {
        status: AccountStatus::Active,
        balance: d(balance),
        maintenance_rate: d("0.005"),
        positions: positions
            .into_iter()
            .map(|(s, side, q, entry, mark)| {
                (
                    s.to_owned(),
                    Marked {
                        position: Position {
                            side,
                            quantity: d(q),
                            entry_price: d(entry),
                            leverage: d("10"),
                        },
                        mark: d(mark),
                    },
                )
            })
            .collect(),
        realized_today: Decimal::ZERO,
    }
}

fn order(side: OrderSide, q: &str, lev: &str) -> OrderRequest {
    OrderRequest {
        symbol: "BTCUSDT".into(),
        side,
        quantity: d(q),
        limit: None,
        leverage: d(lev),
        reduce_only: false,
    }
}

fn rules() -> RiskRules {
    RiskRules {
        max_notional_per_trade: d("100000"),
        max_total_exposure: d("200000"),
        ..RiskRules::default()
    }
}

#[test]
fn legs_within_the_limits_one_by_one_cannot_add_up_past_them() {
    let state = account("100000", vec![]);
    let rules = RiskRules {
        max_notional_per_trade: d("1000"),
        max_total_exposure: d("2500"),
        ..RiskRules::default()
    };
    let mut view = AccountView::of(&state, "BTCUSDT");
    let leg = || OrderRequest {
        limit: Some(d("100")),
        ..order(OrderSide::Buy, "9", "10")
    };
    for _ in 0..2 {
        let ok = check_view(&view, &rules, &filters(), d("100"), leg()).unwrap();
        assume_filled(&mut view, ok.request(), d("100"), d("100"));
    }
    assert_eq!(view.notional, d("1800"));
    let e = check_view(&view, &rules, &filters(), d("100"), leg()).unwrap_err();
    assert_eq!(e.code(), "MAX_EXPOSURE_EXCEEDED", "{e}");
}

#[test]
fn an_order_within_every_rule_is_approved_with_its_numbers() {
    let a = account("1000", vec![]);
    let ok = check(
        &a,
        &rules(),
        &filters(),
        d("100"),
        order(OrderSide::Buy, "1", "10"),
    )
    .unwrap();
    let n = ok.numbers();
    assert_eq!(
        (n.notional, n.required_margin, n.available),
        (d("100"), d("10"), d("1000"))
    );
    assert_eq!(n.usage_after, d("0.01"));
}

#[test]
fn every_refusal_has_its_code_and_numbers() {
    let mark = d("100");
    let f = filters();
    let cases: Vec<(&str, AccountState, RiskRules, OrderRequest)> = vec![
        (
            "ACCOUNT_FROZEN",
            AccountState {
                status: AccountStatus::Frozen,
                ..account("1000", vec![])
            },
            rules(),
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "MAX_LEVERAGE_EXCEEDED",
            account("1000", vec![]),
            rules(),
            order(OrderSide::Buy, "1", "101"),
        ),
        (
            "MAX_NOTIONAL_EXCEEDED",
            account("1000", vec![]),
            RiskRules {
                max_notional_per_trade: d("50"),
                ..rules()
            },
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "MAX_EXPOSURE_EXCEEDED",
            account("100000", vec![("ETHUSDT", Side::Long, "1", "150", "150")]),
            RiskRules {
                max_total_exposure: d("200"),
                ..rules()
            },
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "MAX_SYMBOL_EXPOSURE_EXCEEDED",
            account("100000", vec![]),
            RiskRules {
                max_symbol_exposure: Some(d("50")),
                ..rules()
            },
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "INSUFFICIENT_MARGIN",
            account("5", vec![]),
            rules(),
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "MARGIN_RATIO_EXCEEDED",
            account("100", vec![("ETHUSDT", Side::Long, "9", "100", "100")]),
            rules(),
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "MAX_DAILY_LOSS_EXCEEDED",
            AccountState {
                realized_today: d("-60"),
                ..account("1000", vec![])
            },
            RiskRules {
                max_daily_loss: Some(d("50")),
                ..rules()
            },
            order(OrderSide::Buy, "1", "10"),
        ),
        (
            "EXCHANGE_PRECISION",
            account("1000", vec![]),
            rules(),
            OrderRequest {
                limit: Some(d("99.95")),
                ..order(OrderSide::Buy, "1", "10")
            },
        ),
        (
            "EXCHANGE_PRECISION",
            account("1000", vec![]),
            rules(),
            order(OrderSide::Buy, "1.0001", "10"),
        ),
        (
            "EXCHANGE_PRICE_BAND",
            account("1000", vec![]),
            rules(),
            OrderRequest {
                limit: Some(d("106")),
                ..order(OrderSide::Buy, "1", "10")
            },
        ),
        (
            "EXCHANGE_MIN_NOTIONAL",
            account("1000", vec![]),
            rules(),
            order(OrderSide::Buy, "0.01", "10"),
        ),
        (
            "INVALID_ORDER",
            account("1000", vec![]),
            rules(),
            OrderRequest {
                reduce_only: true,
                ..order(OrderSide::Sell, "1", "10")
            },
        ),
    ];
    for (want, a, r, o) in cases {
        let got = check(&a, &r, &f, mark, o).unwrap_err();
        assert_eq!(got.code(), want, "{got}");
    }
    let e = check(
        &account("5", vec![]),
        &rules(),
        &f,
        mark,
        order(OrderSide::Buy, "1", "10"),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "Insufficient margin: need $10, available $5");
}

#[test]
fn reducing_needs_no_margin_and_reduce_only_skips_the_exposure_checks() {
    // Balance too small for any new position, but a long to close.
    let a = account("1", vec![("BTCUSDT", Side::Long, "2", "100", "100")]);
    let tight = RiskRules {
        max_total_exposure: d("10"),
        max_notional_per_trade: d("10"),
        ..rules()
    };
    let close = OrderRequest {
        reduce_only: true,
        ..order(OrderSide::Sell, "2", "10")
    };
    let ok = check(&a, &tight, &filters(), d("100"), close).unwrap();
    assert_eq!(ok.numbers().required_margin, Decimal::ZERO);
    assert_eq!(ok.numbers().exposure_after, Decimal::ZERO);
    // Not reduce-only, but reducing: the exposure after is the smaller position.
    let half = check(
        &a,
        &rules(),
        &filters(),
        d("100"),
        order(OrderSide::Sell, "1", "10"),
    )
    .unwrap();
    assert_eq!(half.numbers().exposure_after, d("100"));
}

#[test]
fn pending_orders_count_toward_exposure_and_margin() {
    let a = account("1000", vec![]);
    let capped = RiskRules {
        max_total_exposure: d("500"),
        max_symbol_exposure: Some(d("400")),
        ..rules()
    };
    let resting = |symbol: &str, q: &str, px: Option<&str>| PendingOrder {
        symbol: symbol.into(),
        side: OrderSide::Buy,
        remaining: d(q),
        price: px.map(d),
        leverage: d("10"),
    };
    // Two bids of $180 resting in BTCUSDT, a market order in flight in ETHUSDT.
    let orders = vec![
        resting("BTCUSDT", "1.8", Some("100")),
        resting("BTCUSDT", "1.8", Some("100")),
        resting("ETHUSDT", "1", None),
    ];
    let pending = Pending::of(
        &orders,
        "BTCUSDT",
        |_| Decimal::ZERO,
        |s| (s == "ETHUSDT").then(|| d("50")),
    );
    assert_eq!(
        pending,
        Pending {
            notional: d("410"),
            margin: d("41"),
            here: d("360")
        }
    );
    let mut view = AccountView::of(&a, "BTCUSDT");
    view.pending = pending;
    let third = check_view(
        &view,
        &capped,
        &filters(),
        d("100"),
        order(OrderSide::Buy, "1", "10"),
    );
    assert_eq!(third.unwrap_err().code(), "MAX_EXPOSURE_EXCEEDED");
    // Within the total, over the symbol's cap with the two resting.
    let loose = RiskRules {
        max_total_exposure: d("1000"),
        ..capped.clone()
    };
    let r = check_view(
        &view,
        &loose,
        &filters(),
        d("100"),
        order(OrderSide::Buy, "0.5", "10"),
    );
    assert_eq!(r.unwrap_err().code(), "MAX_SYMBOL_EXPOSURE_EXCEEDED");
    // The pending margin is not available to the next order.
    let ok = check_view(
        &view,
        &rules(),
        &filters(),
        d("100"),
        order(OrderSide::Buy, "0.1", "10"),
    )
    .unwrap();
    assert_eq!(ok.numbers().available, d("1000") - d("41"));
    assert_eq!(ok.numbers().exposure_after, d("420"));
    // An order that would only reduce the position held adds nothing; the part
    // of one past the position does; the worse side counts.
    let sell = |q: &str| PendingOrder {
        side: OrderSide::Sell,
        ..resting("BTCUSDT", q, Some("100"))
    };
    let long_2 = |_: &str| d("2");
    assert_eq!(
        Pending::of(&[sell("2")], "BTCUSDT", long_2, |_| None),
        Pending::default()
    );
    let flip = Pending::of(&[sell("3")], "BTCUSDT", long_2, |_| None);
    assert_eq!((flip.notional, flip.here), (d("100"), d("100")));
    let both = Pending::of(
        &[sell("3"), resting("BTCUSDT", "2", Some("100"))],
        "BTCUSDT",
        long_2,
        |_| None,
    );
    assert_eq!(both.notional, d("200"), "the buys add 2 to the long");
}

#[test]
fn an_order_that_only_reduces_passes_the_status_and_leverage_gates() {
    let held = vec![("BTCUSDT", Side::Long, "2", "100", "100")];
    let capped = RiskRules {
        max_leverage: d("5"),
        ..rules()
    };
    for status in [AccountStatus::Frozen, AccountStatus::Liquidated] {
        let a = AccountState {
            status,
            ..account("1000", held.clone())
        };
        // Closing at the position's 10x under a 5x cap, on a frozen account.
        let close = OrderRequest {
            reduce_only: true,
            ..order(OrderSide::Sell, "2", "10")
        };
        assert!(check(&a, &capped, &filters(), d("100"), close).is_ok());
        // Reducing without the flag: the same.
        assert!(check(
            &a,
            &capped,
            &filters(),
            d("100"),
            order(OrderSide::Sell, "1", "10")
        )
        .is_ok());
        // Anything that opens is still stopped, first by the status.
        let flip = check(
            &a,
            &capped,
            &filters(),
            d("100"),
            order(OrderSide::Sell, "3", "10"),
        );
        assert_eq!(flip.unwrap_err().code(), "ACCOUNT_FROZEN");
    }
    let active = account("1000", held);
    let add = check(
        &active,
        &capped,
        &filters(),
        d("100"),
        order(OrderSide::Buy, "1", "10"),
    );
    assert_eq!(add.unwrap_err().code(), "MAX_LEVERAGE_EXCEEDED");
}

#[test]
fn a_flip_needs_margin_only_for_the_new_side_and_counts_the_old_pnl_once() {
    // LONG 1 @100 marked at 110 (+10); SELL 1.5: closes 1, opens 0.5 at 110.
    let a = account("100", vec![("BTCUSDT", Side::Long, "1", "100", "110")]);
    let ok = check(
        &a,
        &rules(),
        &filters(),
        d("110"),
        order(OrderSide::Sell, "1.5", "10"),
    )
    .unwrap();
    let n = ok.numbers();
    assert_eq!(n.required_margin, d("5.5"));
    assert_eq!(n.equity, d("110"), "balance + the long's +10, once");
    assert_eq!(n.exposure_after, d("55"));
}
