//! What the daemon answers: [`Response`] and its outcomes, views of a customer and its events.

use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// Every successful answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    /// For `report` and `settle`.
    Report(ReportOutcome),
    /// For `report_batch`: one result per item, in order.
    ReportBatch(Vec<BatchItemResult>),
    /// For `check`.
    Check(CheckOutcome),
    /// For `reserve`.
    Reserve(ReserveOutcome),
    /// For `release`.
    Release(ReleaseOutcome),
    /// For `create_customer`, `change_plan` and `get_customer`.
    Customer(CustomerView),
    /// For `top_up`.
    TopUp(Box<TopUpOutcome>),
    /// For `list_events`.
    Events(EventList),
    /// For `list_invoices`.
    Invoices(Vec<InvoiceView>),
    /// For `list_transactions`.
    Transactions(Vec<TransactionView>),
    /// For `close_period`: the invoice of the period just closed.
    Closed(InvoiceView),
    /// For `stats`.
    Stats(Box<StatsSnapshot>),
    /// For `progress`.
    Progress(ProgressOutcome),
    /// For `reload_models`.
    ModelsReloaded(ModelsReloaded),
    /// For `webhooks`.
    Webhooks(WebhookAnswer),
    /// For `watch_alerts`.
    Alerts(AlertBatch),
}

/// Raw usage events of one customer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EventList {
    /// Events, oldest first.
    pub events: Vec<UsageEventView>,
    /// Whether more events follow in the range (ask again from the last event's `at_ms`, with
    /// `from_seq` = its `seq + 1`).
    pub more: bool,
}

/// One recorded usage.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UsageEventView {
    /// When it was recorded, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The customer's sequence number after it.
    pub seq: u64,
    /// The usage feature.
    pub feature: String,
    /// Units.
    pub amount: u64,
    /// What it cost: overage rate units, credits or rate units by model.
    pub charged: i64,
    /// The idempotency key it came with.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// One item's result in a batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum BatchItemResult {
    /// Recorded (or a duplicate of a recorded one).
    Ok(ReportOutcome),
    /// Refused; nothing was recorded for this item.
    Err(TallyError),
}

/// Where a customer stands on one feature, in the terms of its plan's model.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Standing {
    /// Metered plans: this feature's usage against what the period includes.
    Metered {
        /// Units used this period.
        used: u64,
        /// Units the plan includes per period.
        included: u64,
        /// Units held by open holds on this feature.
        held: u64,
        /// Units past `included`.
        overage_units: u64,
        /// What the overage costs so far, in rate units (charged at period close).
        overage_cost_units: i64,
        /// Whether usage past `included` is allowed (an overage price exists).
        has_overage: bool,
    },
    /// Credits plans: the customer's credits.
    Credits {
        /// Credits that can be spent now: granted + purchased − held.
        available: i64,
        /// Credits granted this period (spent first, reset at period close).
        granted: i64,
        /// Purchased credits (never expire); negative after usage past zero.
        purchased: i64,
        /// Credits held by open holds.
        held: i64,
    },
    /// Balance plans: the customer's dollars, in rate units.
    Balance {
        /// Balance minus holds.
        available_units: i64,
        /// The balance; negative after usage past zero.
        balance_units: i64,
        /// Rate units held by open holds.
        held_units: i64,
        /// How far below zero checks still allow.
        overdraft_units: i64,
    },
    /// Flag features: on or off by plan.
    Flag {
        /// Whether the customer's plan has the flag.
        enabled: bool,
    },
}

/// The answer to a `report` or `settle`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    /// The customer's sequence number after this report.
    pub seq: u64,
    /// True when this is a retry whose key was already applied: nothing changed.
    pub duplicate: bool,
    /// Units recorded.
    pub amount: u64,
    /// What this report cost: overage rate units (metered, invoiced at close), credits (credits)
    /// or rate units (balance).
    pub charged: i64,
    /// The customer's standing on the feature after the report.
    pub standing: Standing,
}

/// The answer to a `check`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// Whether the customer may use `amount` now.
    pub allowed: bool,
    /// The customer's sequence number this answer reflects.
    pub seq: u64,
    /// What `amount` would cost: overage rate units, credits or rate units by model (0 for flags).
    pub cost: i64,
    /// The customer's standing on the feature.
    pub standing: Standing,
}

/// The answer to a `reserve`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReserveOutcome {
    /// Whether the hold was made.
    pub allowed: bool,
    /// The hold's id when `allowed`.
    pub hold: Option<u64>,
    /// The customer's sequence number after the reservation.
    pub seq: u64,
    /// What is held: units (metered), credits (credits) or rate units (balance).
    pub held: i64,
    /// When the hold releases itself, milliseconds since the Unix epoch (0 when not allowed).
    pub expires_at_ms: u64,
    /// The customer's standing on the feature after the reservation.
    pub standing: Standing,
}

/// The answer to a `progress`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProgressOutcome {
    /// The customer cannot pay for more: stop the answer at `output_tokens_allowed`.
    pub cut_off: bool,
    /// Output tokens the hold now covers: stream up to this many before reporting progress
    /// again (with `cut_off`, the most the customer can still pay for).
    pub output_tokens_allowed: u64,
    /// What the hold holds now: units (metered), credits or rate units by model.
    pub held: i64,
    /// The customer's sequence number this answer reflects.
    pub seq: u64,
}

/// The answer to a `reload_models`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ModelsReloaded {
    /// The models now priced, sorted by name.
    pub models: Vec<String>,
}

/// The answer to a `release`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReleaseOutcome {
    /// The customer's sequence number after the release.
    pub seq: u64,
    /// What the hold had held, now available again.
    pub released: i64,
    /// The customer's standing on the feature after the release.
    pub standing: Standing,
}

/// The answer to a `top_up`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TopUpOutcome {
    /// The customer's sequence number after the top-up.
    pub seq: u64,
    /// True when this is a retry whose key was already applied: nothing changed.
    pub duplicate: bool,
    /// What the customer pays, in rate units.
    pub gross_units: i64,
    /// Credits bought (credits plans), 0 otherwise.
    pub credits_added: i64,
    /// Rate units loaded (balance plans), 0 otherwise.
    pub balance_added_units: i64,
    /// The transaction recorded for it, with its fee.
    pub transaction: TransactionView,
    /// The customer after the top-up.
    pub customer: CustomerView,
}

/// A customer as `get_customer` shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CustomerView {
    /// The customer's id.
    pub customer: String,
    /// The plan's slug.
    pub plan: String,
    /// The plan's consumption model.
    pub model: Model,
    /// Count of state changes applied so far.
    pub seq: u64,
    /// Start of the current period, milliseconds since the Unix epoch.
    pub period_start_ms: u64,
    /// End of the current period (exclusive), milliseconds since the Unix epoch.
    pub period_end_ms: u64,
    /// Usage this period, one entry per usage feature of the plan, sorted by slug.
    pub usage: Vec<FeatureUsage>,
    /// Credits granted this period (credits plans).
    pub granted_credits: i64,
    /// Purchased credits (credits plans; kept across plan changes).
    pub purchased_credits: i64,
    /// Dollar balance in rate units (balance plans; kept across plan changes).
    pub balance_units: i64,
    /// Open holds.
    pub holds: Vec<HoldView>,
    /// Usage this period of each model, per feature priced by model, sorted by feature and model.
    pub models: Vec<ModelUsageLine>,
}

/// One model's usage of one feature priced by model over a period: its tokens, the provider's
/// cost and what was charged for it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelUsageLine {
    /// The feature priced by model.
    pub feature: String,
    /// The model.
    pub model: String,
    /// Requests recorded.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Answer tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from the cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the cache.
    pub cache_write_tokens: u64,
    /// The provider's cost at the model prices each request was priced at, in cost units of
    /// 10⁻¹⁰ dollars.
    pub cost_units: u64,
    /// What was charged for them: overage rate units (metered), credits or rate units by model.
    pub charged: i64,
}

/// Usage of one feature this period.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FeatureUsage {
    /// The feature's slug.
    pub feature: String,
    /// Units used this period.
    pub used: u64,
    /// Units the plan includes per period (metered plans; 0 otherwise).
    pub included: u64,
}

/// An open hold.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HoldView {
    /// The hold's id.
    pub hold: u64,
    /// The feature it is for.
    pub feature: String,
    /// Units held.
    pub amount: u64,
    /// What it holds: units (metered), credits or rate units by model.
    pub held: i64,
    /// When it releases itself, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}
