//! What `stats` reports: the operator console's snapshot.

use rkyv::{Archive, Deserialize, Serialize};

use super::*;

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
    /// Requests, tokens and cost per (feature, model) of features priced by model since the
    /// daemon started, sorted.
    pub models: Vec<ModelUsageLine>,
    /// Webhook delivery, per endpoint.
    pub webhooks: Vec<WebhookStats>,
    /// The latest alerts committed (balance.low, quota.exceeded, …), newest first.
    pub recent_alerts: Vec<AlertView>,
}

/// One webhook endpoint's delivery.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WebhookStats {
    /// The endpoint's id.
    pub endpoint: String,
    /// Its URL.
    pub url: String,
    /// Events in the outbox it has not taken yet.
    pub pending: u64,
    /// Events it took since the daemon started.
    pub delivered: u64,
    /// Events given up on (dead-lettered) since the daemon started.
    pub failed: u64,
    /// Attempts answered with an error or not at all since the daemon started.
    pub attempts_failed: u64,
    /// From the change's commit to the endpoint's 2xx, for the last event delivered, in ms.
    pub last_lag_ms: u64,
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

/// Admin: what to do with webhook endpoints.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    /// Every endpoint, with its delivery figures.
    List,
    /// A new endpoint taking `events` (empty: every event) from now on.
    Add {
        /// An http:// or https:// URL.
        url: String,
        /// Event names.
        events: Vec<String>,
    },
    /// Forget an endpoint added through the API or this command.
    Remove {
        /// Its id.
        id: String,
    },
    /// Send one signed `webhook.test` event.
    Test {
        /// The endpoint's id.
        id: String,
    },
    /// The events an endpoint never took.
    Failed {
        /// The endpoint's id.
        id: String,
    },
    /// Send an endpoint's dead letters again, one attempt each.
    Redeliver {
        /// The endpoint's id.
        id: String,
    },
}

/// An endpoint as `webhooks list` shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WebhookEndpointView {
    /// `wh_…`.
    pub id: String,
    /// The receiver.
    pub url: String,
    /// Event names (empty: every event).
    pub events: Vec<String>,
    /// Whether it was defined in `config.toml` (changed only there).
    pub configured: bool,
    /// Whether events are delivered to it.
    pub active: bool,
}

/// A dead letter.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WebhookFailureView {
    /// `evt_…`.
    pub event_id: String,
    /// The event's name.
    pub event: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the last one failed, ms since the Unix epoch.
    pub last_attempt_ms: u64,
    /// Why.
    pub reason: String,
}

/// The answer to a [`WebhookCommand`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WebhookAnswer {
    /// `List`.
    Endpoints(Vec<WebhookEndpointView>),
    /// `Add`: the endpoint and its signing secret (shown this once).
    Added {
        /// The endpoint.
        endpoint: WebhookEndpointView,
        /// What its signatures are keyed with.
        secret: String,
    },
    /// `Remove`.
    Removed,
    /// `Test`: `None` when the endpoint answered 2xx, else why not.
    Tested(Option<String>),
    /// `Failed`.
    Failures(Vec<WebhookFailureView>),
    /// `Redeliver`: each dead letter's event id and, when it was refused again, why.
    Redelivered(Vec<(String, Option<String>)>),
}

/// Monitor (or admin): the alerts committed after `after`, waiting up to `wait_ms` for one.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WatchRequest {
    /// The outbox number to continue after (`None`: from the oldest kept).
    pub after: Option<u64>,
    /// Answer at once with no alerts and where the outbox stands (`next_after`): to follow
    /// from now on.
    pub from_now: bool,
    /// Only this customer's.
    pub customer: Option<String>,
    /// Only these event names (empty: every one).
    pub events: Vec<String>,
    /// How long to wait when none is there yet, at most [`WATCH_WAIT_MS_MAX`].
    pub wait_ms: u32,
}

/// Longest wait of one `watch_alerts`.
pub const WATCH_WAIT_MS_MAX: u32 = 5_000;

/// One alert, as a product or `tally watch` sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct AlertView {
    /// `evt_…`, as in the webhook envelope.
    pub id: String,
    /// Its outbox number (continue after it).
    pub number: u64,
    /// Commet's event name.
    pub event: String,
    /// The customer (empty for events about no customer).
    pub customer: String,
    /// When the change happened, ms since the Unix epoch.
    pub at_ms: u64,
    /// The webhook's `data`, JSON.
    pub data: String,
}

/// The answer to a `watch_alerts`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct AlertBatch {
    /// The matching alerts, oldest first.
    pub alerts: Vec<AlertView>,
    /// The last number looked at (matching or not): continue after it.
    pub next_after: Option<u64>,
}
