//! `greekstream risk what-if` and `risk value`'s flags; the checks are
//! `trading::what_if` and `trading::risk_value`. Bad input is `{"error"}` and exit 2
//! (see main.rs).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct WhatIfArgs {
    /// The sub-account's balance (USDT).
    #[arg(long)]
    pub balance: String,
    /// Open positions: `[{"symbol","side":"LONG|SHORT","quantity","entryPrice","leverage","mark"}]`.
    #[arg(long, default_value = "[]")]
    pub positions: String,
    /// The order: `{"symbol","side":"BUY|SELL","quantity","price"?,"leverage","reduceOnly"?}`.
    #[arg(long)]
    pub order: String,
    /// The order symbol's mark price.
    #[arg(long)]
    pub mark: String,
    /// Risk rules, JS names: `{"maxLeverage","maxNotionalPerTrade","maxTotalExposure",
    /// "maxSymbolExposure","maxDailyLoss"}`; defaults for what is missing.
    #[arg(long, default_value = "{}")]
    pub rules: String,
    /// Venue filters: `{"tick","step","minNotional","up","down"}` (BTCUSDT's by default).
    #[arg(long, default_value = "{}")]
    pub filters: String,
    /// ACTIVE, FROZEN or LIQUIDATED.
    #[arg(long, default_value = "ACTIVE")]
    pub status: String,
    #[arg(long, default_value = "0.005")]
    pub maintenance_rate: String,
    /// PnL realized today (for the daily-loss check).
    #[arg(long, default_value = "0", allow_negative_numbers = true)]
    pub realized_today: String,
}

impl From<&WhatIfArgs> for trading::what_if::WhatIf {
    fn from(a: &WhatIfArgs) -> Self {
        Self {
            balance: a.balance.clone(),
            positions: a.positions.clone(),
            order: a.order.clone(),
            mark: a.mark.clone(),
            rules: a.rules.clone(),
            filters: a.filters.clone(),
            status: a.status.clone(),
            maintenance_rate: a.maintenance_rate.clone(),
            realized_today: a.realized_today.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ValueArgs {
    /// The account as JSON — `{"balance","positions":[{"symbol","side","quantity",
    /// "entryPrice","leverage"}],"marks":{"BTCUSDT":…},"liquidationMode"?,"rules"?,
    /// "lots"?}` — or `-` to read it from standard input.
    #[arg(default_value = "-")]
    pub account: String,
}

impl ValueArgs {
    pub fn input(&self) -> Result<String, String> {
        if self.account != "-" {
            return Ok(self.account.clone());
        }
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(s)
    }
}
