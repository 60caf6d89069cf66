//! The wire vocabulary: every request, response and error that crosses a Tally connection, and the
//! limits that bound them. Plain data only — no IO, no async — so the daemon's core and the client
//! can share these types; the bytes they become are the codec's business.
//!
//! Wire types hold strings, vectors, enums and owned boxes only: no shared pointers (`Rc`, `Arc`)
//! and no maps, whose archived validation is where rkyv's 2026 advisories (RUSTSEC-2026-0233/4/5,
//! fixed in 0.8.17; the workspace requires 0.8.18) lived. A test below keeps it so.

use rkyv::{Archive, Deserialize, Serialize};

/// ALPN protocol id that both ends of a Tally QUIC connection must offer.
pub const ALPN: &[u8] = b"tally/1";
/// Version of the message layout below; the handshake refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame body either end accepts, in bytes (the 4-byte length prefix excluded).
pub const FRAME_BYTES_MAX: u32 = 1 << 21;
/// Longest customer id, in bytes of UTF-8.
pub const CUSTOMER_ID_BYTES_MAX: usize = 128;
/// Longest feature or plan slug, in bytes of UTF-8.
pub const SLUG_BYTES_MAX: usize = 64;
/// Longest API key a client may present, in bytes.
pub const API_KEY_BYTES_MAX: usize = 256;
/// Most events in one `list_events` answer.
pub const LIST_EVENTS_MAX: usize = 10_000;
/// Most items in one `report_batch`.
pub const BATCH_ITEMS_MAX: usize = 4096;
/// Largest usage amount in one report, check or hold (a trillion units): keeps every cost
/// computation far from integer overflow.
pub const AMOUNT_MAX: u64 = 1_000_000_000_000;
/// Largest single top-up: 10,000 packs, or $10,000,000.00 in rate units.
pub const TOP_UP_PACKS_MAX: u32 = 10_000;
/// Largest single dollar top-up in rate units ($10,000,000.00).
pub const TOP_UP_UNITS_MAX: i64 = 10_000_000 * RATE_UNITS_PER_DOLLAR;
/// Longest hold lifetime: one day.
pub const HOLD_TTL_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Money is counted in rate units: 10,000 rate units are one dollar.
pub const RATE_UNITS_PER_DOLLAR: i64 = 10_000;

const _: () = assert!(LIST_EVENTS_MAX * (SLUG_BYTES_MAX + 96) < FRAME_BYTES_MAX as usize);
const _: () = assert!(
    BATCH_ITEMS_MAX * (CUSTOMER_ID_BYTES_MAX + SLUG_BYTES_MAX + 64) < FRAME_BYTES_MAX as usize
);

/// A 16-byte idempotency key chosen by the client; a retry with the same key changes nothing.
pub type IdempotencyKey = [u8; 16];

/// What a key is allowed to do.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// report, check, reserve, settle, release.
    Client,
    /// Everything.
    Admin,
    /// `stats` only, read-only.
    Monitor,
}

/// The consumption model of a plan (one per plan).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Included units per period, then an overage price or a hard limit.
    Metered,
    /// Prepaid credits; each usage feature costs whole credits per unit.
    Credits,
    /// A dollar balance spent at per-feature prices.
    Balance,
}

/// Every frame a client sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// Must be the first frame on a stream: version handshake and authentication.
    Hello(Hello),
    /// Any operation, after a `Welcome`.
    Request(RequestFrame),
}

/// The opening frame of a stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    /// The client's `PROTOCOL_VERSION`.
    pub version: u32,
    /// The API key in clear; the daemon stores only its SHA-256.
    pub api_key: String,
}

/// One request with the id its response will carry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RequestFrame {
    /// Chosen by the client, echoed in the response; responses may arrive out of order.
    pub id: u64,
    /// The operation.
    pub request: Request,
}

/// Every frame the daemon sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The answer to one request.
    Response(ResponseFrame),
    /// The daemon is closing the stream for this reason (bad handshake, malformed frame…).
    Goodbye(TallyError),
}

/// The daemon's answer to a good `Hello`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Welcome {
    /// The daemon's `PROTOCOL_VERSION`.
    pub version: u32,
    /// What the key presented may do.
    pub role: Role,
    /// Largest frame body the daemon accepts.
    pub frame_bytes_max: u32,
    /// Requests the daemon processes at once per stream; more wait unread.
    pub inflight_max: u32,
}

/// The answer to one request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// Its result.
    pub reply: Reply,
}

/// A typed result: an answer, or a typed rejection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    /// The operation's answer.
    Ok(Response),
    /// Why the operation was refused; nothing was changed.
    Err(TallyError),
}

/// Every operation of SPEC §5.
///
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// Record usage (role client).
    Report(ReportItem),
    /// Record many usages; one outcome per item, in order (role client).
    ReportBatch(Vec<ReportItem>),
    /// May this customer use this much? Read-only (role client).
    Check(CheckRequest),
    /// Hold an estimate before variable-cost work (role client).
    Reserve(ReserveRequest),
    /// Charge the actual usage of a hold and release the rest (role client).
    Settle(SettleRequest),
    /// Release a hold without charging (role client).
    Release(ReleaseRequest),
    /// Admin: a new customer on a plan.
    CreateCustomer(CustomerPlan),
    /// Admin: move a customer to another plan; starts a new period.
    ChangePlan(CustomerPlan),
    /// Admin: buy credit packs or load dollars.
    TopUp(TopUpRequest),
    /// Admin: the customer's plan, period, usage, credits or balance and holds.
    GetCustomer(CustomerRef),
    /// Admin: raw usage events in a time range, oldest first, at most `LIST_EVENTS_MAX` per answer.
    ListEvents(ListEventsRequest),
    /// Admin: the customer's invoices, oldest first.
    ListInvoices(CustomerRef),
    /// Admin: the customer's credit purchases and top-ups, oldest first.
    ListTransactions(CustomerRef),
    /// Admin: close the current period now; the next one starts now.
    ClosePeriod(CustomerRef),
    /// Monitor (or admin): the console's data.
    Stats,
}

impl Request {
    /// Whether sending this request twice has the effect of sending it once: reads, and writes
    /// that carry an idempotency key. The client retries only these after `Overloaded`.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Request::Check(_)
            | Request::GetCustomer(_)
            | Request::ListEvents(_)
            | Request::ListInvoices(_)
            | Request::ListTransactions(_)
            | Request::Stats => true,
            Request::Report(item) => item.idempotency_key.is_some(),
            Request::ReportBatch(items) => items.iter().all(|i| i.idempotency_key.is_some()),
            Request::Settle(settle) => settle.idempotency_key.is_some(),
            Request::TopUp(top_up) => top_up.idempotency_key.is_some(),
            Request::Reserve(_)
            | Request::Release(_)
            | Request::CreateCustomer(_)
            | Request::ChangePlan(_)
            | Request::ClosePeriod(_) => false,
        }
    }

    /// The role a key needs for this request.
    pub fn role_required(&self) -> RoleRequired {
        match self {
            Request::Report(_)
            | Request::ReportBatch(_)
            | Request::Check(_)
            | Request::Reserve(_)
            | Request::Settle(_)
            | Request::Release(_) => RoleRequired::Client,
            Request::Stats => RoleRequired::Monitor,
            _ => RoleRequired::Admin,
        }
    }

    /// A short lower-case name for messages and logs.
    pub fn operation_name(&self) -> &'static str {
        match self {
            Request::Report(_) => "report",
            Request::ReportBatch(_) => "report_batch",
            Request::Check(_) => "check",
            Request::Reserve(_) => "reserve",
            Request::Settle(_) => "settle",
            Request::Release(_) => "release",
            Request::CreateCustomer(_) => "create_customer",
            Request::ChangePlan(_) => "change_plan",
            Request::TopUp(_) => "top_up",
            Request::GetCustomer(_) => "get_customer",
            Request::ListEvents(_) => "list_events",
            Request::ListInvoices(_) => "list_invoices",
            Request::ListTransactions(_) => "list_transactions",
            Request::ClosePeriod(_) => "close_period",
            Request::Stats => "stats",
        }
    }
}

/// Which roles may send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRequired {
    /// Client or admin.
    Client,
    /// Monitor or admin.
    Monitor,
    /// Admin only.
    Admin,
}

impl RoleRequired {
    /// Whether `role` may send a request that needs `self`.
    pub fn is_granted_to(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (RoleRequired::Client, Role::Client)
                | (RoleRequired::Monitor, Role::Monitor)
        )
    }
}

/// One usage report.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReportItem {
    /// The customer's id.
    pub customer: String,
    /// A usage feature's slug.
    pub feature: String,
    /// Units used, 0..=`AMOUNT_MAX` (0 is allowed and changes nothing).
    pub amount: u64,
    /// A retry with the same key returns the first outcome and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Atomic check-and-consume: record nothing and answer `InsufficientBalance` unless allowed.
    pub only_if_allowed: bool,
}

impl ReportItem {
    /// A plain report of `amount` units: always recorded, no idempotency key.
    pub fn new(customer: impl Into<String>, feature: impl Into<String>, amount: u64) -> Self {
        Self {
            customer: customer.into(),
            feature: feature.into(),
            amount,
            idempotency_key: None,
            only_if_allowed: false,
        }
    }

    /// With an idempotency key: a retry returns the first outcome and changes nothing.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// As an atomic check-and-consume: recorded only if allowed.
    pub fn only_if_allowed(mut self) -> Self {
        self.only_if_allowed = true;
        self
    }
}

/// A read-only entitlement question.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CheckRequest {
    /// The customer's id.
    pub customer: String,
    /// A usage or flag feature's slug.
    pub feature: String,
    /// Units the customer is about to use (ignored for flag features).
    pub amount: u64,
}

/// Hold an estimate for variable-cost work.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReserveRequest {
    /// The customer's id.
    pub customer: String,
    /// A usage feature's slug.
    pub feature: String,
    /// Units to hold.
    pub amount: u64,
    /// The hold releases itself this long after it was made, 1..=`HOLD_TTL_MS_MAX`.
    pub ttl_ms: u64,
}

/// Charge a hold's actual usage.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SettleRequest {
    /// The hold id that `reserve` returned.
    pub hold: u64,
    /// Units actually used; may exceed the hold and is then charged in full.
    pub actual: u64,
    /// A retry with the same key returns the first outcome and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Release a hold without charging.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReleaseRequest {
    /// The hold id that `reserve` returned.
    pub hold: u64,
}

/// A customer and a plan.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CustomerPlan {
    /// The customer's id.
    pub customer: String,
    /// A plan slug from the catalogue.
    pub plan: String,
}

/// A customer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CustomerRef {
    /// The customer's id.
    pub customer: String,
}

/// Buy credits or load dollars.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TopUpRequest {
    /// The customer's id.
    pub customer: String,
    /// Packs for a credits plan, rate units for a balance plan.
    pub amount: TopUpAmount,
    /// A retry with the same key returns the first outcome and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What a top-up buys.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum TopUpAmount {
    /// Credit packs (credits plans), 1..=`TOP_UP_PACKS_MAX`.
    Packs(u32),
    /// Rate units (balance plans), 1..=`TOP_UP_UNITS_MAX`.
    Units(i64),
}

/// A time range of events.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ListEventsRequest {
    /// The customer's id.
    pub customer: String,
    /// Inclusive start, milliseconds since the Unix epoch.
    pub from_ms: u64,
    /// Within `from_ms`, the first sequence number to include (0 for all). To page, ask again
    /// with the last event's `at_ms` and `seq + 1`.
    pub from_seq: u64,
    /// Exclusive end, milliseconds since the Unix epoch.
    pub to_ms: u64,
}

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
}

/// Everything the operator console shows, gathered without stalling the shards.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StatsSnapshot {
    /// The daemon's clock when the snapshot was taken.
    pub at_ms: u64,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Per operation: counts since start, latency since start and over the last interval.
    pub operations: Vec<OperationStats>,
    /// `check` answers with `allowed: true` since start.
    pub checks_allowed: u64,
    /// `check` answers with `allowed: false` since start.
    pub checks_denied: u64,
    /// Open QUIC connections.
    pub connections: u64,
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Bytes the store takes on disk.
    pub storage_bytes: u64,
    /// Invoices and transactions of the current calendar month (UTC) since the daemon started.
    pub revenue: RevenueStats,
    /// Customers with the most usage units in the last interval, most first.
    pub top_by_usage: Vec<TopCustomer>,
    /// Customers with the most spend in the last interval, most first.
    pub top_by_spend: Vec<TopCustomer>,
    /// The latest invoices, newest first.
    pub recent_invoices: Vec<InvoiceView>,
    /// The latest transactions, newest first.
    pub recent_transactions: Vec<TransactionView>,
    /// Length of the "last interval" that `recent` figures cover.
    pub interval_ms: u64,
}

/// One operation's counters.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct OperationStats {
    /// `report`, `check`, … (see `Request::operation_name`).
    pub operation: String,
    /// Requests answered since start.
    pub count: u64,
    /// Of which answered with an error.
    pub errors: u64,
    /// Server-side latency (decode to answer) since start.
    pub latency: LatencySummary,
    /// Server-side latency over the last completed interval.
    pub recent: LatencySummary,
}

/// Latency percentiles from an hdrhistogram, in microseconds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// One shard's load.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct ShardStats {
    /// Shard index.
    pub shard: u32,
    /// Customers it owns.
    pub customers: u64,
    /// Messages waiting in its mailbox.
    pub mailbox_depth: u64,
    /// Messages it has handled since start (the console turns this into ops/s).
    pub handled: u64,
}

/// Money of the current month.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct RevenueStats {
    /// Start of the month, milliseconds since the Unix epoch.
    pub month_start_ms: u64,
    /// Invoice and transaction totals, rate units.
    pub gross_units: i64,
    /// Fees.
    pub fee_units: i64,
    /// Payouts.
    pub net_units: i64,
    /// Invoices counted.
    pub invoices: u64,
    /// Transactions counted.
    pub transactions: u64,
}

/// A customer's usage and spend over the last interval.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TopCustomer {
    /// The customer.
    pub customer: String,
    /// Usage units reported.
    pub units: u64,
    /// What that usage cost, in rate units (credits valued at the pack's per-credit price).
    pub spend_units: i64,
}

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

/// Typed rejections. Each one means nothing was changed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TallyError {
    /// No customer has this id.
    #[error("unknown customer `{customer}`")]
    UnknownCustomer {
        /// The id asked for.
        customer: String,
    },
    /// `create_customer` with an id that exists.
    #[error("customer `{customer}` already exists")]
    CustomerExists {
        /// The id asked for.
        customer: String,
    },
    /// No plan has this slug.
    #[error("unknown plan `{plan}`")]
    UnknownPlan {
        /// The slug asked for.
        plan: String,
    },
    /// No feature in the catalogue has this slug.
    #[error("unknown feature `{feature}`")]
    UnknownFeature {
        /// The slug asked for.
        feature: String,
    },
    /// The feature exists but the customer's plan does not have it.
    #[error("feature `{feature}` is not in plan `{plan}`")]
    FeatureNotInPlan {
        /// The feature's slug.
        feature: String,
        /// The customer's plan.
        plan: String,
    },
    /// Usage was reported or reserved on a flag feature.
    #[error("feature `{feature}` is a flag feature; only usage features take usage")]
    NotAUsageFeature {
        /// The feature's slug.
        feature: String,
    },
    /// No open hold has this id (never made, settled, released or expired).
    #[error("hold {hold:016x} is not open (unknown, settled, released or expired)")]
    UnknownHold {
        /// The hold id asked for.
        hold: u64,
    },
    /// Not allowed: included units, credits or balance would be exceeded.
    #[error("insufficient balance: the request costs {cost}, {available} is available")]
    InsufficientBalance {
        /// What the request costs (units, credits or rate units by model).
        cost: i64,
        /// What is available (same unit).
        available: i64,
    },
    /// The key is missing, wrong, or the stream has not said `Hello` yet.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why.
        reason: String,
    },
    /// The key's role may not do this.
    #[error("forbidden: a {role:?} key may not call {operation}")]
    Forbidden {
        /// The key's role.
        role: Role,
        /// The operation refused.
        operation: String,
    },
    /// The shard that owns the customer is saturated; retry later with backoff.
    #[error("overloaded: the shard's mailbox is full; retry with backoff")]
    Overloaded,
    /// The request breaks a rule of the protocol (bad size, bad field, malformed frame).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why, with the value and the limit.
        reason: String,
    },
    /// The daemon does not implement this operation yet.
    #[error("unsupported: {operation} is not implemented by this daemon yet")]
    Unsupported {
        /// The operation.
        operation: String,
    },
    /// Client and daemon speak different protocol versions.
    #[error("protocol version mismatch: the daemon speaks {server}, the client {client}")]
    VersionMismatch {
        /// The daemon's version.
        server: u32,
        /// The client's version.
        client: u32,
    },
    /// The idempotency key was already used for a different request.
    #[error("conflict: {reason}")]
    Conflict {
        /// Why.
        reason: String,
    },
    /// The daemon failed to do something it should have; the request was not applied.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// The daemon is shutting down: requests already read were answered; reconnect (to it after
    /// its restart, or to another daemon).
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// Checks the rules a well-formed request must follow before anything looks it up.
pub fn validate_request(request: &Request) -> Result<(), TallyError> {
    match request {
        Request::Report(item) => validate_report(item),
        Request::ReportBatch(items) => {
            if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
                return Err(invalid(format!(
                    "batch has {} items; it must have 1 to {BATCH_ITEMS_MAX}",
                    items.len()
                )));
            }
            items.iter().try_for_each(validate_report)
        }
        Request::Check(c) => {
            validate_customer(&c.customer)?;
            validate_slug("feature", &c.feature)?;
            validate_amount("amount", c.amount)
        }
        Request::Reserve(r) => {
            validate_customer(&r.customer)?;
            validate_slug("feature", &r.feature)?;
            validate_amount("amount", r.amount)?;
            if r.ttl_ms == 0 || r.ttl_ms > HOLD_TTL_MS_MAX {
                return Err(invalid(format!(
                    "ttl is {} ms; it must be 1 to {HOLD_TTL_MS_MAX} ms",
                    r.ttl_ms
                )));
            }
            Ok(())
        }
        Request::Settle(s) => validate_amount("actual", s.actual),
        Request::Release(_) | Request::Stats => Ok(()),
        Request::CreateCustomer(cp) | Request::ChangePlan(cp) => {
            validate_customer(&cp.customer)?;
            validate_slug("plan", &cp.plan)
        }
        Request::TopUp(t) => {
            validate_customer(&t.customer)?;
            match t.amount {
                TopUpAmount::Packs(p) if p == 0 || p > TOP_UP_PACKS_MAX => Err(invalid(format!(
                    "top-up is {p} packs; it must be 1 to {TOP_UP_PACKS_MAX}"
                ))),
                TopUpAmount::Units(u) if u <= 0 || u > TOP_UP_UNITS_MAX => Err(invalid(format!(
                    "top-up is {u} rate units; it must be 1 to {TOP_UP_UNITS_MAX}"
                ))),
                _ => Ok(()),
            }
        }
        Request::GetCustomer(c)
        | Request::ListInvoices(c)
        | Request::ListTransactions(c)
        | Request::ClosePeriod(c) => validate_customer(&c.customer),
        Request::ListEvents(e) => validate_customer(&e.customer),
    }
}

fn validate_report(item: &ReportItem) -> Result<(), TallyError> {
    validate_customer(&item.customer)?;
    validate_slug("feature", &item.feature)?;
    validate_amount("amount", item.amount)
}

fn validate_customer(customer: &str) -> Result<(), TallyError> {
    if customer.is_empty() || customer.len() > CUSTOMER_ID_BYTES_MAX {
        return Err(invalid(format!(
            "customer id is {} bytes; it must be 1 to {CUSTOMER_ID_BYTES_MAX}",
            customer.len()
        )));
    }
    if customer.chars().any(char::is_control) {
        return Err(invalid("customer id contains a control character".into()));
    }
    Ok(())
}

fn validate_slug(what: &str, slug: &str) -> Result<(), TallyError> {
    if slug.is_empty() || slug.len() > SLUG_BYTES_MAX {
        return Err(invalid(format!(
            "{what} slug is {} bytes; it must be 1 to {SLUG_BYTES_MAX}",
            slug.len()
        )));
    }
    Ok(())
}

/// Zero is a normal amount (an empty completion): it is allowed and changes nothing.
fn validate_amount(what: &str, amount: u64) -> Result<(), TallyError> {
    if amount > AMOUNT_MAX {
        return Err(invalid(format!(
            "{what} is {amount}; the limit is {AMOUNT_MAX}"
        )));
    }
    Ok(())
}

fn invalid(reason: String) -> TallyError {
    TallyError::InvalidRequest { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(amount: u64) -> ReportItem {
        ReportItem {
            customer: "acme".into(),
            feature: "tokens".into(),
            amount,
            idempotency_key: None,
            only_if_allowed: false,
        }
    }

    #[test]
    fn wire_types_hold_no_shared_pointers_or_maps() {
        let source = include_str!("message.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        for banned in [
            "Rc<",
            "Arc<",
            "HashMap<",
            "BTreeMap<",
            "HashSet<",
            "BTreeSet<",
        ] {
            let uses = code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .any(|line| line.contains(banned));
            assert!(!uses, "message.rs uses {banned} in a wire type");
        }
    }

    #[test]
    fn only_reads_and_keyed_writes_are_idempotent() {
        let keyed = report(1).with_idempotency_key([7; 16]);
        assert!(Request::Report(keyed.clone()).is_idempotent());
        assert!(!Request::Report(report(1)).is_idempotent());
        assert!(Request::ReportBatch(vec![keyed.clone(), keyed.clone()]).is_idempotent());
        assert!(!Request::ReportBatch(vec![keyed, report(1)]).is_idempotent());
        assert!(Request::Stats.is_idempotent());
        assert!(Request::Check(CheckRequest {
            customer: "acme".into(),
            feature: "tokens".into(),
            amount: 1
        })
        .is_idempotent());
        assert!(!Request::Release(ReleaseRequest { hold: 1 }).is_idempotent());
        assert!(!Request::CreateCustomer(CustomerPlan {
            customer: "acme".into(),
            plan: "pro".into()
        })
        .is_idempotent());
    }

    #[test]
    fn zero_is_a_normal_amount_and_an_oversized_one_is_invalid() {
        assert!(validate_request(&Request::Report(report(0))).is_ok());
        assert!(validate_request(&Request::Report(report(AMOUNT_MAX + 1))).is_err());
        assert!(validate_request(&Request::Report(report(AMOUNT_MAX))).is_ok());
    }

    #[test]
    fn empty_and_oversized_batches_are_invalid() {
        assert!(validate_request(&Request::ReportBatch(vec![])).is_err());
        let big = vec![report(1); BATCH_ITEMS_MAX + 1];
        let err = validate_request(&Request::ReportBatch(big)).unwrap_err();
        assert!(err.to_string().contains("4097 items"), "{err}");
    }

    #[test]
    fn overlong_customer_id_names_its_size_and_the_limit() {
        let mut item = report(1);
        item.customer = "x".repeat(CUSTOMER_ID_BYTES_MAX + 1);
        let err = validate_request(&Request::Report(item)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: customer id is 129 bytes; it must be 1 to 128"
        );
    }

    #[test]
    fn admin_is_granted_everything_and_client_not_admin_calls() {
        assert!(RoleRequired::Admin.is_granted_to(Role::Admin));
        assert!(RoleRequired::Client.is_granted_to(Role::Admin));
        assert!(RoleRequired::Monitor.is_granted_to(Role::Admin));
        assert!(!RoleRequired::Admin.is_granted_to(Role::Client));
        assert!(!RoleRequired::Admin.is_granted_to(Role::Monitor));
        assert!(!RoleRequired::Client.is_granted_to(Role::Monitor));
        assert!(!RoleRequired::Monitor.is_granted_to(Role::Client));
    }
}
