//! The wire vocabulary: every request, response and error that crosses a Tally connection, and the
//! limits that bound them. Plain data only — no IO, no async — so the daemon's core and the client
//! can share these types; the bytes they become are the codec's business.
//!
//! Wire types hold strings, vectors, enums and owned boxes only: no shared pointers (`Rc`, `Arc`)
//! and no maps, whose archived validation is where rkyv's 2026 advisories (RUSTSEC-2026-0233/4/5,
//! fixed in 0.8.17; the workspace requires 0.8.18) lived. A test below keeps it so.

use rkyv::{Archive, Deserialize, Serialize};

mod answers;
mod billing;
mod errors;
mod requests;
mod stats;
mod validate;

pub use answers::*;
pub use billing::*;
pub use errors::*;
pub use requests::*;
pub use stats::*;
pub use validate::*;

/// ALPN protocol id that both ends of a Tally QUIC connection must offer.
pub const ALPN: &[u8] = b"tally/1";
/// Version of the message layout below; the handshake refuses any other.
pub const PROTOCOL_VERSION: u32 = 3;
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
    /// Output tokens streamed so far against a hold opened with a model request; grows the hold
    /// or answers where to cut the answer off (role client).
    Progress(ProgressRequest),
    /// Admin: re-read the model catalogue from the daemon's configuration file.
    ReloadModels,
    /// Admin: list, add, remove, test webhook endpoints; their dead letters.
    Webhooks(WebhookCommand),
    /// Monitor (or admin): alerts as they are committed (a long poll).
    WatchAlerts(WatchRequest),
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
            | Request::Stats
            | Request::Progress(_)
            | Request::WatchAlerts(_) => true,
            Request::Report(item) => item.idempotency_key.is_some(),
            Request::ReportBatch(items) => items.iter().all(|i| i.idempotency_key.is_some()),
            Request::Settle(settle) => settle.idempotency_key.is_some(),
            Request::TopUp(top_up) => top_up.idempotency_key.is_some(),
            Request::Reserve(_)
            | Request::Release(_)
            | Request::CreateCustomer(_)
            | Request::ChangePlan(_)
            | Request::ClosePeriod(_)
            | Request::ReloadModels
            | Request::Webhooks(_) => false,
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
            | Request::Release(_)
            | Request::Progress(_) => RoleRequired::Client,
            Request::Stats | Request::WatchAlerts(_) => RoleRequired::Monitor,
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
            Request::Progress(_) => "progress",
            Request::ReloadModels => "reload_models",
            Request::Webhooks(_) => "webhooks",
            Request::WatchAlerts(_) => "watch_alerts",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(amount: u64) -> ReportItem {
        ReportItem {
            model: None,
            customer: "acme".into(),
            feature: "tokens".into(),
            amount,
            idempotency_key: None,
            only_if_allowed: false,
        }
    }

    #[test]
    fn wire_types_hold_no_shared_pointers_or_maps() {
        let this = include_str!("mod.rs");
        let code = [
            &this[..this.find("#[cfg(test)]").unwrap()],
            include_str!("answers.rs"),
            include_str!("billing.rs"),
            include_str!("errors.rs"),
            include_str!("requests.rs"),
            include_str!("stats.rs"),
        ]
        .concat();
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
            assert!(!uses, "message/ uses {banned} in a wire type");
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
            model: None,
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
