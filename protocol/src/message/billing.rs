//! Invoices and transactions as the wire shows them (money in rate units).

use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// Why a period closed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The period ended.
    Scheduled,
    /// `close_period` by an admin (the billing cycle re-anchors at that moment).
    Manual,
    /// `change_plan` closed the period early (the base price is prorated).
    PlanChange,
}

/// What an invoice line is for.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// The plan's base price for the period.
    Base,
    /// A metered feature: used, included, overage at the overage price.
    Metered,
    /// Usage statement of a credits or balance feature (paid up front; amount 0).
    Usage,
    /// Credits or balance below zero at close, invoiced and reset to zero.
    Debt,
}

/// One line of an invoice. Money is in rate units (10,000 = $1.00).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InvoiceLineView {
    /// What the line is for.
    pub kind: LineKind,
    /// The feature (empty for the base price and balance debt; `credits` for credit debt).
    pub feature: String,
    /// Units used this period (or credits / rate units owed for a debt line).
    pub used: u64,
    /// Units included (metered).
    pub included: u64,
    /// Units charged at `price_units`/`per` (metered overage, or the debt).
    pub overage: u64,
    /// Price in rate units per `per` units.
    pub price_units: i64,
    /// The quantity the price is for.
    pub per: u64,
    /// What the usage consumed during the period: credits or rate units (usage lines).
    pub consumed: i64,
    /// What this line adds to the invoice, in rate units.
    pub amount_units: i64,
}

/// A closed period's invoice. `total_units` is the sum of the lines rounded to cents (half away
/// from zero); `fee_units` is the merchant-of-record fee; `net_units = total − fee`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InvoiceView {
    /// The customer.
    pub customer: String,
    /// 1 for the customer's first invoice, then 2, 3, …
    pub number: u64,
    /// The plan of the period.
    pub plan: String,
    /// The plan's consumption model (how to read usage lines' prices).
    pub model: Model,
    /// Period start, milliseconds since the Unix epoch.
    pub period_start_ms: u64,
    /// Period end (exclusive).
    pub period_end_ms: u64,
    /// When the close happened.
    pub closed_at_ms: u64,
    /// Why it closed.
    pub reason: CloseReason,
    /// The lines.
    pub lines: Vec<InvoiceLineView>,
    /// The period's usage per model of each feature priced by model (a breakdown of the
    /// features' lines, not lines of its own).
    pub models: Vec<ModelUsageLine>,
    /// Total, rounded to cents.
    pub total_units: i64,
    /// Fee, rounded to cents, plus the fixed fee (0 when the total is not positive).
    pub fee_units: i64,
    /// Payout: total − fee.
    pub net_units: i64,
}

/// What a transaction was.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    /// Credit packs bought.
    CreditPurchase,
    /// Dollars loaded onto a balance.
    BalanceTopUp,
}

/// A purchase or top-up, with the merchant-of-record fee.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TransactionView {
    /// The customer.
    pub customer: String,
    /// 1 for the customer's first transaction, then 2, 3, …
    pub number: u64,
    /// What it was.
    pub kind: TransactionKind,
    /// When it happened.
    pub at_ms: u64,
    /// Packs bought, or rate units loaded.
    pub quantity: u64,
    /// What the customer paid, in rate units (rounded to cents).
    pub total_units: i64,
    /// The fee.
    pub fee_units: i64,
    /// Payout: total − fee.
    pub net_units: i64,
}
