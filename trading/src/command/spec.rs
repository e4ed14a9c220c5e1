//! What a command asks for, typed: [`Command`] and its order, scale, rules and
//! account specs.

use rust_decimal::Decimal;

use crate::evaluate::LiquidationMode;
use crate::position::OrderSide;

/// An order's side as the gateway says it.
pub(super) fn side_of(v: &str) -> Option<OrderSide> {
    match v.to_ascii_uppercase().as_str() {
        "LONG" | "BUY" => Some(OrderSide::Buy),
        "SHORT" | "SELL" => Some(OrderSide::Sell),
        _ => None,
    }
}

/// `BTC/USDT:USDT`, `btcusdt` → `BTCUSDT`.
pub fn normalize_symbol(s: &str) -> String {
    let base = s.split(':').next().unwrap_or(s);
    base.replace('/', "").to_ascii_uppercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSpec {
    pub symbol: String,
    pub side: OrderSide,
    pub quantity: Decimal,
    pub leverage: Decimal,
    pub price: Option<Decimal>,
    pub reduce_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    pub symbol: String,
    pub side: OrderSide,
    pub leverage: Decimal,
    /// (price, quantity), in the order given.
    pub orders: Vec<(Decimal, Decimal)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RulesPatch {
    pub max_leverage: Option<Decimal>,
    pub max_notional_per_trade: Option<Decimal>,
    pub max_total_exposure: Option<Decimal>,
    pub max_symbol_exposure: Option<Decimal>,
    pub max_daily_loss: Option<Decimal>,
    pub liquidation_threshold: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccountSpec {
    pub name: String,
    pub bot: bool,
    pub owner_user_id: Option<String>,
    pub initial_balance: Decimal,
    pub liquidation_mode: LiquidationMode,
    pub maintenance_rate: Option<Decimal>,
}

/// A command, valid as far as can be told without the book and the venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Trade(OrderSpec),
    Validate(OrderSpec),
    Limit(OrderSpec),
    Scale(ScaleSpec),
    Basket(Vec<OrderSpec>),
    Close {
        position_id: String,
    },
    CloseAll,
    /// An admin moves one position into the house at the mark (no venue order).
    AdminTakeover {
        position_id: String,
    },
    LimitClose {
        position_id: String,
        price: Decimal,
    },
    /// The babysitter (or an admin) closes a position as `reason`: on the venue when
    /// the exchange holds it, else in the book at a fresh mark (`close_price` when no
    /// mark is known).
    BabysitterClose {
        position_id: String,
        close_price: Decimal,
        reason: String,
    },
    CancelOrder {
        order_id: String,
    },
    CancelAllOrders,
    AccountCreate(NewAccountSpec),
    AccountUpdate {
        name: Option<String>,
        liquidation_mode: Option<LiquidationMode>,
        maintenance_rate: Option<Decimal>,
    },
    BalanceAdjust {
        amount: Decimal,
        reason: String,
    },
    RiskRulesSet {
        global: bool,
        rules: RulesPatch,
    },
    AccountFreeze,
    AccountUnfreeze,
}

impl Command {
    /// Names a sub-account through the envelope's `subAccountId` (the others name a
    /// position or an order, or create the account).
    pub fn needs_account(&self) -> bool {
        !matches!(
            self,
            Command::Close { .. }
                | Command::LimitClose { .. }
                | Command::BabysitterClose { .. }
                | Command::CancelOrder { .. }
                | Command::AccountCreate(_)
                | Command::RiskRulesSet { global: true, .. }
        )
    }
}
