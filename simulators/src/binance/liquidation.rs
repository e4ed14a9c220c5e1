//! The venue's own forced closes: a position liquidated or auto-deleveraged (on
//! request, or when the account's margin runs out).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::state::{Account, Held, Order, SimState};

use super::admission::marks;
use super::orders::{account_update, book_fill, order_update, How, Outbox};

/// The venue closes a position itself: a liquidation (`autoclose-…`, type
/// LIQUIDATION, reported as CALCULATED, charged the liquidation fee) preceded by a
/// MARGIN_CALL, or an auto-deleveraging (`adl_autoclose`, no fee). At the mark.
pub(super) fn force_close(state: &SimState, symbol: &str, leg: &'static str, adl: bool) -> bool {
    let mut out = Outbox::default();
    {
        let m = state.market.lock().expect("market lock");
        let Some(mark) = marks(&m).get(symbol).copied() else {
            return false;
        };
        drop(m);
        let Some(brackets) = state.brackets(symbol) else {
            return false;
        };
        let mut a = state.account.lock().expect("account lock");
        let held = a
            .positions
            .get(&(symbol.to_owned(), leg))
            .copied()
            .unwrap_or_default();
        if held.amount.is_zero() {
            return false;
        }
        let t = state.now_ms();
        if !adl {
            out.account(margin_call(&a, &brackets, (symbol, leg), held, mark, t));
        }
        a.next_order_id += 1;
        let id = a.next_order_id;
        let mut order = Order {
            id,
            client_id: if adl {
                "adl_autoclose".to_owned()
            } else {
                format!("autoclose-{t}")
            },
            symbol: symbol.to_owned(),
            side: if held.amount.is_sign_positive() {
                "SELL"
            } else {
                "BUY"
            }
            .to_owned(),
            position_side: leg,
            kind: if adl { "MARKET" } else { "LIQUIDATION" }.to_owned(),
            tif: "IOC".to_owned(),
            qty: held.amount.abs(),
            price: Decimal::ZERO,
            executed: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            status: "NEW",
            reduce_only: true,
            time: t,
            update_time: t,
        };
        out.order(state, &order, order_update(&order, "NEW", None, t));
        let how = if adl {
            How {
                maker: false,
                rate: Decimal::ZERO,
                exec: "TRADE",
            }
        } else {
            How {
                maker: false,
                rate: LIQUIDATION_FEE,
                exec: "CALCULATED",
            }
        };
        let qty = order.qty;
        book_fill(state, &mut a, &mut order, mark, qty, how, t, &mut out);
        out.account(account_update(&a, symbol, mark, t));
        a.store(order);
    }
    out.publish(state);
    true
}

/// The venue's own liquidation, checked on every mark: an isolated leg whose margin
/// (isolated wallet + PnL) falls to its maintenance margin is liquidated; when the
/// cross margin balance (wallet + cross PnL) falls to the cross maintenance margin,
/// every cross leg is, largest first.
pub(super) fn auto_liquidate(state: &SimState) {
    let (marks, brackets) = {
        let m = state.market.lock().expect("market lock");
        let brackets: BTreeMap<String, model::exchange::Brackets> = m
            .specs
            .iter()
            .map(|s| {
                let b = if s.base == "BTC" {
                    model::exchange::Brackets::btcusdt()
                } else {
                    model::exchange::Brackets::altcoin()
                };
                (s.symbol.clone(), b)
            })
            .collect();
        (marks(&m), brackets)
    };
    let doomed: Vec<(String, &'static str)> = {
        let a = state.account.lock().expect("account lock");
        let (mut equity, mut maint) = (a.wallet, Decimal::ZERO);
        let mut cross = Vec::new();
        let mut doomed = Vec::new();
        for ((symbol, leg), h) in &a.positions {
            let (Some(&mark), Some(b)) = (marks.get(symbol), brackets.get(symbol)) else {
                continue;
            };
            if h.amount.is_zero() {
                continue;
            }
            let pnl = (mark - h.entry) * h.amount;
            let mm = b.maintenance_margin(mark * h.amount);
            if a.isolated.contains(symbol) {
                let wallet = h.amount.abs() * h.entry / Decimal::from(a.leverage_of(symbol));
                if wallet + pnl <= mm {
                    doomed.push((symbol.clone(), *leg));
                }
            } else {
                equity += pnl;
                maint += mm;
                cross.push(((mark * h.amount).abs(), symbol.clone(), *leg));
            }
        }
        if !cross.is_empty() && equity <= maint {
            cross.sort_by_key(|x| std::cmp::Reverse(x.0));
            doomed.extend(cross.into_iter().map(|(_, s, l)| (s, l)));
        }
        doomed
    };
    for (symbol, leg) in doomed {
        force_close(state, &symbol, leg, false);
    }
}

/// The clearance fee of a liquidation, of its notional (`liquidationFee`).
pub(super) const LIQUIDATION_FEE: Decimal = Decimal::from_parts(125, 0, 0, false, 4);

/// MARGIN_CALL for one leg (advisory: the venue sends it before liquidating).
pub(super) fn margin_call(
    a: &Account,
    brackets: &model::exchange::Brackets,
    (symbol, leg): (&str, &str),
    h: Held,
    mark: Decimal,
    t: i64,
) -> String {
    let mm = brackets.maintenance_margin(mark * h.amount).round_dp(8);
    let up = ((mark - h.entry) * h.amount).round_dp(8);
    format!(
        r#"{{"e":"MARGIN_CALL","E":{t},"cw":"{}","p":[{{"s":"{symbol}","ps":"{leg}","pa":"{}","mt":"CROSSED","iw":"0","mp":"{}","up":"{}","mm":"{}"}}]}}"#,
        a.wallet.normalize(),
        h.amount.normalize(),
        mark.normalize(),
        up.normalize(),
        mm.normalize()
    )
}
