//! The on-disk records and key layout. The disk format is Tally's own (rkyv, validated on every
//! read), independent of the wire; the one exception is an idempotency key's remembered outcome,
//! kept as the wire bytes of the answer it stands for (tagged with the protocol version), because
//! a retry must get exactly that answer back.

use std::sync::Arc;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use tally_protocol::codec::decode;
use tally_protocol::message::{
    IdempotencyKey, ModelUsage, ModelUsageLine, Response, UsageEventView, PROTOCOL_VERSION,
};

use super::prices::PriceRecovery;
use crate::metering::billing::{Invoice, Transaction};
use crate::metering::customer::{Customer, CustomerParts, Hold, HoldRequest};
use crate::metering::engine::UsageEvent;
use crate::metering::idempotency::{KeyRecord, Remembered};
use crate::metering::models::ModelPrice;

/// Value of the `format` key in the `meta` keyspace; a folder without it is not a Tally store.
pub const STORE_FORMAT: &[u8] = b"tally-store-4";
/// The previous format (holds without model requests, no model lines), migrated on open.
pub const STORE_FORMAT_3: &[u8] = b"tally-store-3";
/// The format before (one record per event, no commit log), migrated on open.
pub const STORE_FORMAT_2: &[u8] = b"tally-store-2";

/// Most events in one stored segment (a run of one customer's events).
pub const SEGMENT_EVENTS_MAX: usize = 512;

/// A customer's whole state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredCustomer {
    id: String,
    plan: String,
    seq: u64,
    anchor_ms: u64,
    period_start_ms: u64,
    period_end_ms: u64,
    usage: Vec<(String, u64)>,
    granted_credits: i64,
    purchased_credits: i64,
    balance_units: i64,
    next_hold: u32,
    holds: Vec<StoredHold>,
    invoices_issued: u64,
    transactions_made: u64,
    model_lines: Vec<StoredModelLine>,
    last_refill_units: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct StoredHold {
    id: u64,
    feature: String,
    amount: u64,
    held: i64,
    expires_at_ms: u64,
    request: Option<StoredHoldRequest>,
}

/// A hold's model request, with the prices (cost units per token) it was opened at.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct StoredHoldRequest {
    model: String,
    /// Input, output (covered), cache read and cache write tokens.
    tokens: [u64; 4],
    /// Per input, output, cache read and cache write token.
    prices: [u64; 4],
    reported_output: Option<u64>,
}

/// One (feature, model)'s usage in the current period.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StoredModelLine {
    feature: String,
    model: String,
    requests: u64,
    /// Input, output, cache read and cache write tokens.
    tokens: [u64; 4],
    cost_units: u64,
    charged: i64,
}

impl From<&ModelUsageLine> for StoredModelLine {
    fn from(line: &ModelUsageLine) -> Self {
        StoredModelLine {
            feature: line.feature.clone(),
            model: line.model.clone(),
            requests: line.requests,
            tokens: [
                line.input_tokens,
                line.output_tokens,
                line.cache_read_tokens,
                line.cache_write_tokens,
            ],
            cost_units: line.cost_units,
            charged: line.charged,
        }
    }
}

impl From<&ArchivedStoredModelLine> for ModelUsageLine {
    fn from(line: &ArchivedStoredModelLine) -> Self {
        let [input, output, cache_read, cache_write] =
            line.tokens.map(rkyv::rend::u64_le::to_native);
        ModelUsageLine {
            feature: line.feature.to_string(),
            model: line.model.to_string(),
            requests: line.requests.to_native(),
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            cost_units: line.cost_units.to_native(),
            charged: line.charged.to_native(),
        }
    }
}

/// A model-priced period's lines of an invoice (`invoice_models` keyspace, beside the invoice).
pub fn encode_model_lines(lines: &[ModelUsageLine]) -> Vec<u8> {
    encode(&lines.iter().map(StoredModelLine::from).collect::<Vec<_>>())
}

/// Stored model lines, checked.
pub fn decode_model_lines(bytes: &[u8]) -> Result<Vec<ModelUsageLine>, RecordError> {
    let lines: Vec<StoredModelLine> = decode(bytes).map_err(|e| RecordError::Corrupt {
        what: "invoice model lines",
        reason: e.to_string(),
    })?;
    Ok(lines
        .into_iter()
        .map(|line| {
            let [input, output, cache_read, cache_write] = line.tokens;
            ModelUsageLine {
                feature: line.feature,
                model: line.model,
                requests: line.requests,
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
                cost_units: line.cost_units,
                charged: line.charged,
            }
        })
        .collect())
}

/// A customer row of format 3: holds had no model request, and no model lines were kept.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct StoredCustomerV3 {
    id: String,
    plan: String,
    seq: u64,
    anchor_ms: u64,
    period_start_ms: u64,
    period_end_ms: u64,
    usage: Vec<(String, u64)>,
    granted_credits: i64,
    purchased_credits: i64,
    balance_units: i64,
    next_hold: u32,
    holds: Vec<StoredHoldV3>,
    invoices_issued: u64,
    transactions_made: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct StoredHoldV3 {
    id: u64,
    feature: String,
    amount: u64,
    held: i64,
    expires_at_ms: u64,
}

/// `customer` as format 3 wrote it (its holds' model requests and its model lines dropped).
#[cfg(test)]
pub fn encode_customer_v3(customer: &Customer) -> Vec<u8> {
    let now = stored_customer(customer);
    encode(&StoredCustomerV3 {
        id: now.id,
        plan: now.plan,
        seq: now.seq,
        anchor_ms: now.anchor_ms,
        period_start_ms: now.period_start_ms,
        period_end_ms: now.period_end_ms,
        usage: now.usage,
        granted_credits: now.granted_credits,
        purchased_credits: now.purchased_credits,
        balance_units: now.balance_units,
        next_hold: now.next_hold,
        holds: now
            .holds
            .into_iter()
            .map(|h| StoredHoldV3 {
                id: h.id,
                feature: h.feature,
                amount: h.amount,
                held: h.held,
                expires_at_ms: h.expires_at_ms,
            })
            .collect(),
        invoices_issued: now.invoices_issued,
        transactions_made: now.transactions_made,
    })
}

/// A format-3 customer row in the current format (its holds without model requests, no model
/// lines: the same customer).
pub fn upgrade_customer_row_v3(bytes: &[u8]) -> Result<Vec<u8>, RecordError> {
    let old: StoredCustomerV3 = decode(bytes).map_err(|e| RecordError::Corrupt {
        what: "format-3 customer",
        reason: e.to_string(),
    })?;
    Ok(encode(&StoredCustomer {
        id: old.id,
        plan: old.plan,
        seq: old.seq,
        anchor_ms: old.anchor_ms,
        period_start_ms: old.period_start_ms,
        period_end_ms: old.period_end_ms,
        usage: old.usage,
        granted_credits: old.granted_credits,
        purchased_credits: old.purchased_credits,
        balance_units: old.balance_units,
        next_hold: old.next_hold,
        holds: old
            .holds
            .into_iter()
            .map(|h| StoredHold {
                id: h.id,
                feature: h.feature,
                amount: h.amount,
                held: h.held,
                expires_at_ms: h.expires_at_ms,
                request: None,
            })
            .collect(),
        invoices_issued: old.invoices_issued,
        transactions_made: old.transactions_made,
        model_lines: Vec::new(),
        last_refill_units: 0,
    }))
}

/// One usage event.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The customer's sequence number after this usage.
    pub seq: u64,
    /// When it was recorded.
    pub at_ms: u64,
    /// The usage feature.
    pub feature: String,
    /// Units.
    pub amount: u64,
    /// What it cost, in the plan model's unit.
    pub charged: i64,
    /// The idempotency key it came with.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A run of one customer's events, in `(at_ms, seq)` order, stored under its first event's key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StoredSegment {
    /// The events.
    pub events: Vec<StoredEvent>,
}

/// An event in the commit log, with the customer it belongs to.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// The customer.
    pub customer: String,
    /// The event.
    pub event: StoredEvent,
}

/// A customer row in the commit log: the row's bytes exactly as the `customers` keyspace will
/// hold them, so a checkpoint copies them without encoding again.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoggedRow {
    /// The customer.
    pub customer: String,
    /// [`encode_customer`].
    pub record: Vec<u8>,
}

/// One group commit's customer rows and events: a single record of the commit log, written
/// under a monotonic key, until a checkpoint moves them to their own keyspaces.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StoredCommit {
    /// Every changed customer's whole state, in the order of the changes (a later row of the
    /// same customer is newer).
    pub customers: Vec<LoggedRow>,
    /// The usage events, in the order they happened.
    pub events: Vec<LoggedEvent>,
}

impl StoredCommit {
    /// Whether there is nothing to log.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty() && self.events.is_empty()
    }
}

/// An applied idempotency key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredKey {
    fingerprint: u64,
    expires_at_ms: u64,
    placement: u64,
    protocol_version: u32,
    /// rkyv bytes of `Response::Report` or `Response::TopUp`.
    outcome: Vec<u8>,
}

/// Why a stored record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a valid record.
    #[error("corrupt {what} record: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The record refers to a plan the catalogue no longer has.
    #[error("customer `{customer}` is on plan `{plan}`, which config.toml no longer defines; restore the plan to start")]
    UnknownPlan {
        /// The customer.
        customer: String,
        /// Its plan.
        plan: String,
    },
}

pub(super) fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value)
        .expect("records serialize into memory")
        .into_vec()
}

/// A customer as stored.
pub fn encode_customer(customer: &Customer) -> Vec<u8> {
    encode(&stored_customer(customer))
}

fn stored_customer(customer: &Customer) -> StoredCustomer {
    StoredCustomer {
        id: customer.id().to_string(),
        plan: customer.plan().slug.clone(),
        seq: customer.seq(),
        anchor_ms: customer.anchor_ms(),
        period_start_ms: customer.period_start_ms(),
        period_end_ms: customer.period_end_ms(),
        usage: customer
            .usage()
            .filter(|&(_, units)| units > 0)
            .map(|(feature, units)| (feature.to_string(), units))
            .collect(),
        granted_credits: customer.granted_credits(),
        purchased_credits: customer.purchased_credits(),
        balance_units: customer.balance_units(),
        next_hold: customer.next_hold(),
        invoices_issued: customer.invoices_issued(),
        transactions_made: u64::from(customer.transactions_made()),
        holds: customer
            .holds()
            .iter()
            .map(|(&id, h)| StoredHold {
                id,
                feature: h.feature.clone(),
                amount: h.amount,
                held: h.held,
                expires_at_ms: h.expires_at_ms,
                request: h.request.as_deref().map(|r| StoredHoldRequest {
                    model: r.usage.model.clone(),
                    tokens: [
                        r.usage.input_tokens,
                        r.usage.output_tokens,
                        r.usage.cache_read_tokens,
                        r.usage.cache_write_tokens,
                    ],
                    prices: [
                        r.price.input,
                        r.price.output,
                        r.price.cache_read,
                        r.price.cache_write,
                    ],
                    reported_output: r.reported_output,
                }),
            })
            .collect(),
        model_lines: customer
            .model_lines()
            .iter()
            .map(StoredModelLine::from)
            .collect(),
        last_refill_units: customer.last_refill_units(),
    }
}

/// A stored customer, checked and tied to the current catalogue. Built straight from the
/// validated archive (no intermediate owned record): recovery decodes a row per customer, and
/// the owned detour cost an allocation per string. `scratch` holds an unaligned row's aligned
/// copy; pass the same one for every row.
pub fn decode_customer(
    bytes: &[u8],
    prices: &mut PriceRecovery<'_>,
    scratch: &mut AlignedVec,
) -> Result<Customer, RecordError> {
    let bytes = if (bytes.as_ptr() as usize).is_multiple_of(16) {
        bytes
    } else {
        scratch.clear();
        scratch.extend_from_slice(bytes);
        &scratch[..]
    };
    let stored = rkyv::access::<ArchivedStoredCustomer, rancor::Error>(bytes).map_err(|e| {
        RecordError::Corrupt {
            what: "customer",
            reason: e.to_string(),
        }
    })?;
    let period = (
        stored.period_start_ms.to_native(),
        stored.period_end_ms.to_native(),
    );
    let period_prices = prices
        .catalogue
        .prices_over_period(stored.plan.as_str(), period.0, period.1)
        .ok_or_else(|| RecordError::UnknownPlan {
            customer: stored.id.to_string(),
            plan: stored.plan.to_string(),
        })?;
    let plan = &period_prices.first;
    let mut customer = Customer::restore(CustomerParts {
        id: stored.id.as_str().into(),
        plan: Arc::clone(plan),
        seq: stored.seq.to_native(),
        anchor_ms: stored.anchor_ms.to_native(),
        period_start_ms: stored.period_start_ms.to_native(),
        period_end_ms: stored.period_end_ms.to_native(),
        granted_credits: stored.granted_credits.to_native(),
        purchased_credits: stored.purchased_credits.to_native(),
        balance_units: stored.balance_units.to_native(),
        holds: stored
            .holds
            .iter()
            .map(|h| {
                let hold = Hold {
                    feature: h.feature.to_string(),
                    amount: h.amount.to_native(),
                    held: h.held.to_native(),
                    expires_at_ms: h.expires_at_ms.to_native(),
                    request: h.request.as_ref().map(|r| {
                        let [input, output, cache_read, cache_write] =
                            r.tokens.map(rkyv::rend::u64_le::to_native);
                        let [p_input, p_output, p_cache_read, p_cache_write] =
                            r.prices.map(rkyv::rend::u64_le::to_native);
                        Box::new(HoldRequest {
                            usage: ModelUsage {
                                model: r.model.to_string(),
                                input_tokens: input,
                                output_tokens: output,
                                cache_read_tokens: cache_read,
                                cache_write_tokens: cache_write,
                            },
                            price: ModelPrice {
                                input: p_input,
                                output: p_output,
                                cache_read: p_cache_read,
                                cache_write: p_cache_write,
                            },
                            reported_output: r.reported_output.as_ref().map(|o| o.to_native()),
                        })
                    }),
                };
                (h.id.to_native(), hold)
            })
            .collect(),
        next_hold: stored.next_hold.to_native(),
        invoices_issued: stored.invoices_issued.to_native(),
        transactions_made: u32::try_from(stored.transactions_made.to_native()).map_err(|_| {
            RecordError::Corrupt {
                what: "customer",
                reason: format!(
                    "customer `{}` counts {} transactions, more than a customer can make",
                    stored.id, stored.transactions_made
                ),
            }
        })?,
        model_lines: stored
            .model_lines
            .iter()
            .map(ModelUsageLine::from)
            .collect(),
        last_refill_units: stored.last_refill_units.to_native(),
    });
    // Only a customer whose period a price change splits needs its usage as a list.
    let usage = || {
        stored
            .usage
            .iter()
            .map(|entry| (entry.0.to_string(), entry.1.to_native()))
            .collect()
    };
    customer.enter_prices(period_prices, |since_ms| {
        prices.usage_at(stored.id.as_str(), since_ms, usage)
    });
    // A feature the plan no longer has is dropped: nothing could read or bill it any more.
    for entry in stored.usage.iter() {
        customer.set_used(entry.0.as_str(), entry.1.to_native());
    }
    Ok(customer)
}

/// Segment key (and format 2's event key): `[id length][id][at_ms big-endian][seq big-endian]` of
/// the segment's first event, so one customer's segments are contiguous and in time order.
pub fn event_key(customer: &str, at_ms: u64, seq: u64) -> Vec<u8> {
    let mut key = event_prefix(customer);
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The time of a segment key's first event, or `None` for a malformed key.
pub fn segment_time(key: &[u8]) -> Option<u64> {
    let id_length = usize::from(*key.first()?);
    let at = key.get(1 + id_length..1 + id_length + 8)?;
    Some(u64::from_be_bytes(at.try_into().ok()?))
}

/// Invoice key: `[id length][id][period start BE][number BE]`: a re-close of the same period
/// after a crash writes the same key, so a period never has two invoices.
pub fn invoice_key(invoice: &Invoice) -> Vec<u8> {
    let mut key = event_prefix(&invoice.customer);
    key.extend_from_slice(&invoice.period_start_ms.to_be_bytes());
    key.extend_from_slice(&invoice.number.to_be_bytes());
    key
}

/// Transaction key: `[id length][id][number BE]`.
pub fn transaction_key(transaction: &Transaction) -> Vec<u8> {
    let mut key = event_prefix(&transaction.customer);
    key.extend_from_slice(&transaction.number.to_be_bytes());
    key
}

pub use super::billing_records::{
    decode_invoice, decode_transaction, encode_invoice, encode_transaction,
};

/// The key prefix of all of a customer's events (and invoices, and transactions).
pub fn event_prefix(customer: &str) -> Vec<u8> {
    let id = customer.as_bytes();
    let length = u8::try_from(id.len()).expect("customer ids are at most 128 bytes");
    let mut key = Vec::with_capacity(1 + id.len() + 16);
    key.push(length);
    key.extend_from_slice(id);
    key
}

/// The core's event as stored (moves the feature name; an event is stored once).
impl From<UsageEvent> for StoredEvent {
    fn from(event: UsageEvent) -> Self {
        StoredEvent {
            seq: event.seq,
            at_ms: event.at_ms,
            feature: event.feature,
            amount: event.amount,
            charged: event.charged,
            idempotency_key: event.idempotency_key,
        }
    }
}

/// A stored event as the wire lists it.
impl From<StoredEvent> for UsageEventView {
    fn from(event: StoredEvent) -> Self {
        UsageEventView {
            at_ms: event.at_ms,
            seq: event.seq,
            feature: event.feature,
            amount: event.amount,
            charged: event.charged,
            idempotency_key: event.idempotency_key,
        }
    }
}

/// A lone event as format 2 stored it (one record per event); read only to migrate.
pub fn encode_event(event: &StoredEvent) -> Vec<u8> {
    encode(event)
}

/// A format-2 event record, checked.
pub fn decode_event(bytes: &[u8]) -> Result<StoredEvent, RecordError> {
    decode(bytes).map_err(|e| RecordError::Corrupt {
        what: "event",
        reason: e.to_string(),
    })
}

/// A segment as stored.
pub fn encode_segment(segment: &StoredSegment) -> Vec<u8> {
    encode(segment)
}

/// A stored segment, checked.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<StoredEvent>, RecordError> {
    decode::<StoredSegment>(bytes)
        .map(|segment| segment.events)
        .map_err(|e| RecordError::Corrupt {
            what: "event segment",
            reason: e.to_string(),
        })
}

/// A commit-log record as stored, serialized into `buffer` (reused: records are large, and
/// growing a fresh buffer to each one reallocated and copied it several times).
pub fn encode_commit(commit: &StoredCommit, buffer: AlignedVec) -> AlignedVec {
    let mut buffer = buffer;
    buffer.clear();
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(commit, buffer)
        .expect("records serialize into memory")
}

/// The alignment a commit-log record needs to be read in place: its widest fields are `u64`s.
/// fjall keeps a record the committer logged at such an address (its heap copy follows an 8-byte
/// header), so a checkpoint reads those where they lie; records read back from disk can sit at
/// any offset and are copied first.
pub const COMMIT_ALIGN: usize = 8;

const _: () = assert!(
    std::mem::align_of::<ArchivedStoredCommit>() <= COMMIT_ALIGN
        && std::mem::align_of::<ArchivedLoggedRow>() <= COMMIT_ALIGN
        && std::mem::align_of::<ArchivedLoggedEvent>() <= COMMIT_ALIGN
        && std::mem::align_of::<ArchivedStoredEvent>() <= COMMIT_ALIGN
);

/// Whether `bytes` sit where [`access_commit`] can read them in place.
pub fn is_commit_aligned(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(COMMIT_ALIGN)
}

/// A commit-log record, checked, read in place. `bytes` must be [`COMMIT_ALIGN`]-aligned.
pub fn access_commit(bytes: &[u8]) -> Result<&ArchivedStoredCommit, RecordError> {
    rkyv::access::<ArchivedStoredCommit, rancor::Error>(bytes).map_err(|e| RecordError::Corrupt {
        what: "commit log",
        reason: e.to_string(),
    })
}

/// An owned event from its archived form.
pub fn owned_event(event: &ArchivedStoredEvent) -> StoredEvent {
    StoredEvent {
        seq: event.seq.to_native(),
        at_ms: event.at_ms.to_native(),
        feature: event.feature.to_string(),
        amount: event.amount.to_native(),
        charged: event.charged.to_native(),
        idempotency_key: event.idempotency_key.as_ref().copied(),
    }
}

/// Commit-log key: the commit's number, big-endian, so the log iterates in commit order.
pub fn log_key(number: u64) -> [u8; 8] {
    number.to_be_bytes()
}

/// The number of a commit-log key.
pub fn log_number(key: &[u8]) -> Result<u64, RecordError> {
    let number = key.try_into().map_err(|_| RecordError::Corrupt {
        what: "commit log",
        reason: format!("a key of {} bytes, not 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(number))
}

/// An idempotency key's record as stored.
pub fn encode_key_record(record: &KeyRecord) -> Vec<u8> {
    let response = match &record.outcome {
        Remembered::Report(outcome) => Response::Report(outcome.clone()),
        Remembered::TopUp(outcome) => Response::TopUp(outcome.clone()),
    };
    encode(&StoredKey {
        fingerprint: record.fingerprint,
        expires_at_ms: record.expires_at_ms,
        placement: record.placement,
        protocol_version: PROTOCOL_VERSION,
        outcome: encode(&response),
    })
}

/// A stored key record, checked.
pub fn decode_key_record(bytes: &[u8]) -> Result<KeyRecord, RecordError> {
    let corrupt = |reason: String| RecordError::Corrupt {
        what: "idempotency key",
        reason,
    };
    let stored: StoredKey = decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    // Version 3 only added requests and answers after these: a version-2 outcome reads the same.
    if ![2, PROTOCOL_VERSION].contains(&stored.protocol_version) {
        return Err(corrupt(format!(
            "written by protocol version {}, this daemon speaks {PROTOCOL_VERSION}",
            stored.protocol_version
        )));
    }
    let outcome = match decode::<Response>(&stored.outcome).map_err(|e| corrupt(e.to_string()))? {
        Response::Report(outcome) => Remembered::Report(outcome),
        Response::TopUp(outcome) => Remembered::TopUp(outcome),
        other => return Err(corrupt(format!("unexpected outcome {other:?}"))),
    };
    Ok(KeyRecord {
        fingerprint: stored.fingerprint,
        expires_at_ms: stored.expires_at_ms,
        placement: stored.placement,
        outcome,
    })
}

/// Reads a 16-byte idempotency key back from its store key.
pub fn decode_key(bytes: &[u8]) -> Result<IdempotencyKey, RecordError> {
    bytes.try_into().map_err(|_| RecordError::Corrupt {
        what: "idempotency key",
        reason: format!("the key is {} bytes, not 16", bytes.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG_TOML};
    use std::path::Path;

    #[test]
    fn a_row_counting_more_transactions_than_a_customer_can_make_is_corrupt() {
        let catalogue = Config::parse(DEFAULT_CONFIG_TOML, Path::new("."), "config.toml")
            .unwrap()
            .catalogue;
        let customer = Customer::new("acme", catalogue.plan("wallet").unwrap().clone(), 5);
        let mut stored = stored_customer(&customer);
        stored.transactions_made = u64::from(u32::MAX);
        let row = encode(&stored);
        let back = decode_customer(
            &row,
            &mut PriceRecovery::new(&catalogue, &Default::default(), 0),
            &mut AlignedVec::new(),
        )
        .unwrap();
        assert_eq!(back.transactions_made(), u32::MAX);
        stored.transactions_made += 1;
        let row = encode(&stored);
        let error = decode_customer(
            &row,
            &mut PriceRecovery::new(&catalogue, &Default::default(), 0),
            &mut AlignedVec::new(),
        )
        .unwrap_err();
        assert!(
            matches!(&error, RecordError::Corrupt { what: "customer", reason } if reason.contains("acme")),
            "{error}"
        );
    }

    #[test]
    fn a_customer_with_many_usage_features_and_holds_reads_back_as_stored() {
        let toml = format!(
            "{}\n{}",
            crate::config::DEFAULT_CONFIG_TOML,
            include_str!("../../../core/testdata/wide_plan.toml")
        );
        let catalogue = crate::config::Config::parse(&toml, std::path::Path::new("."), "test")
            .expect("the shipped config and a plan of five usage features")
            .catalogue;
        let mut customer = Customer::new("acme", catalogue.plan("wide").unwrap().clone(), 5);
        for (feature, units) in [("tokens", 3), ("embeddings", 11)] {
            assert!(customer.set_used(feature, units));
        }
        let terms = customer.usage_terms(&catalogue, "gpt-4").unwrap();
        let hold = Hold {
            feature: "gpt-4".into(),
            amount: 2,
            held: 0,
            expires_at_ms: 99,
            request: None,
        };
        customer.open_hold(4, terms, hold);
        let row = encode_customer(&customer);
        let back = decode_customer(
            &row,
            &mut PriceRecovery::new(&catalogue, &Default::default(), 0),
            &mut AlignedVec::new(),
        )
        .unwrap();
        assert_eq!(back, customer);
        assert_eq!(back.used("embeddings"), 11);
        assert_eq!(back.holds().len(), 1);
    }

    #[test]
    fn a_hold_of_a_model_request_and_the_periods_model_lines_read_back_as_stored() {
        let catalogue = crate::config::Config::parse(
            crate::config::DEFAULT_CONFIG_TOML,
            std::path::Path::new("."),
            "test",
        )
        .expect("the shipped config")
        .catalogue;
        let mut customer = Customer::new("acme", catalogue.plan("assistant").unwrap().clone(), 5);
        let terms = customer.usage_terms(&catalogue, "chat").unwrap();
        let usage = ModelUsage::new("gpt-4o", 1_200, 256);
        let price = catalogue.models()["gpt-4o"];
        let cost = price.cost(&usage).unwrap();
        let request = HoldRequest {
            usage: usage.clone(),
            price,
            reported_output: Some(100),
        };
        let hold = Hold {
            feature: "chat".into(),
            amount: cost,
            held: 0,
            expires_at_ms: 99,
            request: Some(Box::new(request)),
        };
        customer.open_hold(4, terms, hold);
        customer.add_model_usage("chat", &ModelUsage::new("gpt-4o-mini", 10, 20), 30, 1);
        let row = encode_customer(&customer);
        let back = decode_customer(
            &row,
            &mut PriceRecovery::new(&catalogue, &Default::default(), 0),
            &mut AlignedVec::new(),
        )
        .unwrap();
        assert_eq!(back, customer);
        assert_eq!(back.model_lines()[0].output_tokens, 20);
        let lines = back.model_lines().to_vec();
        assert_eq!(
            decode_model_lines(&encode_model_lines(&lines)).unwrap(),
            lines
        );
    }
}
