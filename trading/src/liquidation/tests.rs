use super::*;
use crate::position::Position;
use crate::risk::AccountStatus;
use proptest::prelude::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn open(id: &str, symbol: &str, side: Side, q: &str, entry: &str) -> OpenPosition {
    OpenPosition {
        id: id.into(),
        symbol: symbol.into(),
        position: Position {
            side,
            quantity: d(q),
            entry_price: d(entry),
            leverage: d("10"),
        },
        babysitter_excluded: false,
        opened_at: 0,
    }
}

fn account(mode: LiquidationMode, balance: &str, positions: Vec<OpenPosition>) -> Account {
    Account {
        id: "a".into(),
        status: AccountStatus::Active,
        liquidation_mode: mode,
        balance: d(balance),
        maintenance_rate: d("0.005"),
        threshold: d("0.9"),
        positions,
    }
}

const BTC_LOT: Lot = Lot {
    step: Decimal::from_parts(1, 0, 0, false, 3),
    min_notional: Decimal::from_parts(100, 0, 0, false, 0),
};

fn lots(_: &str) -> Lot {
    BTC_LOT
}

/// One long BTC position of 1 @ 50 000 (notional 50 000, maintenance 250) and a
/// balance chosen so that at a mark of 50 000 the ratio is `250 / balance`.
fn btc(mode: LiquidationMode, balance: &str) -> Account {
    account(
        mode,
        balance,
        vec![open("p1", "BTCUSDT", Side::Long, "1", "50000")],
    )
}

fn at(price: &str) -> impl Fn(&str) -> Option<Decimal> {
    let p = d(price);
    move |_| Some(p)
}

#[test]
fn each_tier_and_mode_gets_its_action() {
    use LiquidationMode::*;
    // ratio = 250 / equity: 0.5 normal, 0.8 warning, 0.9 tier 2, 0.95 tier 3, ≥1 insolvent.
    let cases = [
        ("500", Adl30, Action::None, None),
        ("312.5", Adl30, Action::Warn, None),
        ("312.5", Takeover, Action::Warn, None),
        (
            "277.7",
            Adl30,
            Action::Reduce { escalate: false },
            Some(Reason::AdlTier2),
        ),
        (
            "263.1",
            Adl30,
            Action::Reduce { escalate: true },
            Some(Reason::AdlTier3),
        ),
        (
            "277.7",
            InstantClose,
            Action::Liquidate,
            Some(Reason::InstantClose),
        ),
        (
            "277.7",
            Takeover,
            Action::TakeOver,
            Some(Reason::VirtualLiquidation),
        ),
        (
            "250",
            Adl30,
            Action::Liquidate,
            Some(Reason::InsolvencyGuard),
        ),
        (
            "250",
            InstantClose,
            Action::Liquidate,
            Some(Reason::InsolvencyGuard),
        ),
        (
            "250",
            Takeover,
            Action::TakeOver,
            Some(Reason::InsolvencyTakeover),
        ),
    ];
    for (balance, mode, action, reason) in cases {
        let got = decide(&btc(mode, balance), at("50000"), lots);
        assert_eq!(
            (got.action, got.reason),
            (action, reason),
            "{balance} {mode:?}"
        );
    }
}

#[test]
fn an_adl_step_closes_thirty_percent_of_the_largest_rounded_down_to_the_step() {
    let a = account(
        LiquidationMode::Adl30,
        "530",
        vec![
            open("small", "ETHUSDT", Side::Short, "10", "3000"),
            open("big", "BTCUSDT", Side::Long, "1.337", "50000"),
        ],
    );
    // Maintenance (30 000 + 66 850) × 0.005 = 484.25; ratio 484.25 / 530 = 0.914 (tier 2).
    let got = decide(&a, |_| None, lots);
    assert_eq!(got.tier, Tier::Adl2);
    assert_eq!(got.closes.len(), 1);
    let c = &got.closes[0];
    assert_eq!(&*c.position_id, "big");
    assert_eq!(c.quantity, d("0.401")); // 0.4011 down to the step
    assert!(!c.whole);
    assert_eq!(c.order_side(), OrderSide::Sell);
}

#[test]
fn a_remainder_under_the_venues_minimum_closes_the_position_whole() {
    let lot = |min: &'static str| {
        move |_: &str| Lot {
            step: d("0.001"),
            min_notional: d(min),
        }
    };
    // 0.003 × 0.3 = 0.0009 rounds to nothing: closed whole.
    let tiny = account(
        LiquidationMode::Adl30,
        "0.78",
        vec![open("p", "BTCUSDT", Side::Long, "0.003", "50000")],
    );
    let got = decide(&tiny, |_| None, lot("0"));
    assert_eq!(got.action, Action::Reduce { escalate: true });
    assert_eq!(
        (got.closes[0].quantity, got.closes[0].whole),
        (d("0.003"), true)
    );
    // 0.01 → part 0.003, remainder 0.007 × 50 000 = 350: under a 400 minimum, whole.
    let small = account(
        LiquidationMode::Adl30,
        "2.7",
        vec![open("p", "BTCUSDT", Side::Long, "0.01", "50000")],
    );
    let got = decide(&small, |_| None, lot("400"));
    assert_eq!(
        (got.closes[0].quantity, got.closes[0].whole),
        (d("0.01"), true)
    );
    let got = decide(&small, |_| None, lot("300"));
    assert_eq!(
        (got.closes[0].quantity, got.closes[0].whole),
        (d("0.003"), false)
    );
}

#[test]
fn tier_three_escalates_only_when_the_step_leaves_the_account_at_its_threshold() {
    // Ratio 0.95 at 50 000; after closing 0.3 at the same mark, maintenance 175 over
    // the same equity 263.1: 0.665, below T.
    let a = btc(LiquidationMode::Adl30, "263.1");
    let got = decide(&a, at("50000"), lots);
    assert_eq!(got.action, Action::Reduce { escalate: true });
    assert!(got.ratio_after < d("0.9"));
    let booked = after(&a, &got.closes);
    assert_eq!(booked.positions[0].position.quantity, d("0.7"));
    let again = recheck(&booked, at("50000"), lots);
    assert_eq!(again.action, Action::None);
    // The mark falls meanwhile (equity 193.1, ratio 0.906): the book after the step
    // is still at T → close all, where a first decision would only take a step.
    assert_eq!(
        decide(&booked, at("49900"), lots).action,
        Action::Reduce { escalate: false }
    );
    let again = recheck(&booked, at("49900"), lots);
    assert_eq!(again.action, Action::Liquidate);
    assert_eq!(again.reason, Some(Reason::Adl30Escalated));
    assert_eq!(again.closes.len(), 1);
    assert!(again.closes[0].whole);
    assert_eq!(again.ratio_after, Decimal::ZERO);
}

#[test]
fn a_recheck_never_takes_a_second_step_and_an_insolvent_book_is_liquidated() {
    let a = btc(LiquidationMode::Adl30, "100");
    let got = recheck(&a, at("50000"), lots);
    assert_eq!(
        (got.action, got.reason),
        (Action::Liquidate, Some(Reason::InsolvencyGuard))
    );
}

#[test]
fn booking_the_closes_realizes_their_pnl_at_the_mark() {
    let a = account(
        LiquidationMode::Adl30,
        "1000",
        vec![open("s", "ETHUSDT", Side::Short, "2", "3000")],
    );
    let closes = vec![Close {
        position_id: "s".into(),
        symbol: "ETHUSDT".into(),
        side: Side::Short,
        quantity: d("0.5"),
        whole: false,
        mark: d("3100"),
    }];
    let b = after(&a, &closes);
    assert_eq!(b.balance, d("950"));
    assert_eq!(b.positions[0].position.quantity, d("1.5"));
}

fn arb_position(i: usize) -> impl Strategy<Value = OpenPosition> {
    (
        prop::sample::select(vec!["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
        any::<bool>(),
        1u32..5_000,
        1_000u32..60_000,
    )
        .prop_map(move |(symbol, long, q, entry)| OpenPosition {
            id: format!("p{i}").into(),
            symbol: symbol.into(),
            position: Position {
                side: if long { Side::Long } else { Side::Short },
                quantity: Decimal::new(q.into(), 3),
                entry_price: Decimal::from(entry),
                leverage: d("10"),
            },
            babysitter_excluded: false,
            opened_at: 0,
        })
}

fn arb_account() -> impl Strategy<Value = (Account, Vec<u32>)> {
    (1usize..6)
        .prop_flat_map(|n| {
            let positions: Vec<_> = (0..n).map(arb_position).collect();
            (
                positions,
                // The ratio at entry, in thousandths: most cases land near the tiers.
                500u32..1_300,
                prop::sample::select(vec![
                    LiquidationMode::Adl30,
                    LiquidationMode::InstantClose,
                    LiquidationMode::Takeover,
                ]),
                prop::collection::vec(9_990u32..10_010, 3),
            )
        })
        .prop_map(|(positions, ratio, mode, moves)| {
            let mut a = account(mode, "0", positions);
            let notional: Decimal = a.positions.iter().map(|p| p.position.notional()).sum();
            a.balance = (notional * a.maintenance_rate / Decimal::new(ratio.into(), 3)).round_dp(2);
            (a, moves)
        })
}

fn marks(a: &Account, moves: &[u32]) -> impl Fn(&str) -> Option<Decimal> {
    let by_symbol: Vec<(Arc<str>, Decimal)> = a
        .positions
        .iter()
        .map(|p| {
            let k = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
                .iter()
                .position(|s| **s == *p.symbol)
                .unwrap_or(0);
            (
                p.symbol.clone(),
                p.position.entry_price * Decimal::new(moves[k].into(), 4),
            )
        })
        .collect();
    move |s| by_symbol.iter().find(|(k, _)| **k == *s).map(|(_, m)| *m)
}

#[test]
fn the_venues_close_goes_to_the_highest_ranked_holders_first_and_the_rest_to_the_house() {
    let h = |id: &str, q: &str, pnl: &str, ratio: &str| Holder {
        position_id: id.into(),
        quantity: d(q),
        pnl_percent: d(pnl),
        margin_ratio: d(ratio),
    };
    let holders = [
        h("a", "0.3", "10", "0.2"),  // score 2
        h("b", "0.2", "50", "0.5"),  // 25
        h("c", "0.4", "-20", "0.9"), // −18
    ];
    let (shares, rest) = share_venue_close(&holders, d("0.4"));
    assert_eq!(shares, vec![("b".into(), d("0.2")), ("a".into(), d("0.2"))]);
    assert_eq!(rest, d("0"));
    let (shares, rest) = share_venue_close(&holders, d("1.5"));
    assert_eq!(shares.len(), 3);
    assert_eq!(rest, d("0.6"), "the house's");
}

proptest! {
    /// The shares and the house's rest add up to what the venue closed, no holder
    /// gives more than it holds, and the listing order does not matter.
    #[test]
    fn the_venues_close_is_shared_exactly(
        held in prop::collection::vec((1u32..1_000, -100i32..100, 0u32..1_000), 0..8),
        q in 0u32..5_000,
    ) {
        let holders: Vec<Holder> = held
            .iter()
            .enumerate()
            .map(|(i, (q, pnl, ratio))| Holder {
                position_id: format!("p{i}").into(),
                quantity: Decimal::new((*q).into(), 3),
                pnl_percent: Decimal::from(*pnl),
                margin_ratio: Decimal::new((*ratio).into(), 3),
            })
            .collect();
        let total = Decimal::new(q.into(), 3);
        let (shares, rest) = share_venue_close(&holders, total);
        let given: Decimal = shares.iter().map(|(_, q)| *q).sum();
        prop_assert_eq!(given + rest, total);
        prop_assert!(rest >= Decimal::ZERO);
        for (id, q) in &shares {
            let h = holders.iter().find(|h| &h.position_id == id).unwrap();
            prop_assert!(*q > Decimal::ZERO && *q <= h.quantity);
        }
        let mut reversed = holders.clone();
        reversed.reverse();
        prop_assert_eq!(share_venue_close(&reversed, total), (shares, rest));
    }

    /// A decision only ever closes: each close is no larger than its position and on
    /// the side that reduces it, so no symbol's exposure grows.
    #[test]
    fn a_decision_never_increases_exposure((a, moves) in arb_account()) {
        let got = decide(&a, marks(&a, &moves), lots);
        for c in &got.closes {
            let p = a.positions.iter().find(|p| p.id == c.position_id).unwrap();
            prop_assert!(c.quantity > Decimal::ZERO);
            prop_assert!(c.quantity <= p.position.quantity);
            prop_assert_eq!(c.side, p.position.side);
            prop_assert_eq!(c.order_side().opens() == p.position.side, false);
        }
        let b = after(&a, &got.closes);
        for p in &b.positions {
            let before = a.positions.iter().find(|q| q.id == p.id).unwrap();
            prop_assert!(p.position.quantity <= before.position.quantity);
        }
    }

    /// The ratio after a decision is the new book's, valued again at the same marks.
    #[test]
    fn the_ratio_after_is_the_new_books((a, moves) in arb_account()) {
        let m = marks(&a, &moves);
        let got = decide(&a, &m, lots);
        let again = evaluate(&after(&a, &got.closes), &m).metrics.margin_ratio;
        prop_assert_eq!(got.ratio_after, again);
        if matches!(got.action, Action::Liquidate | Action::TakeOver) {
            prop_assert_eq!(got.closes.len(), a.positions.len());
        }
    }

    /// Listing the positions in another order changes nothing.
    #[test]
    fn the_decision_does_not_depend_on_the_order_of_the_book((a, moves) in arb_account()) {
        let m = marks(&a, &moves);
        let mut reversed = a.clone();
        reversed.positions.reverse();
        let mut rotated = a.clone();
        rotated.positions.rotate_left(1);
        let x = decide(&a, &m, lots);
        for other in [reversed, rotated] {
            let y = decide(&other, &m, lots);
            prop_assert_eq!(&x, &y);
        }
    }
}
