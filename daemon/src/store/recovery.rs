//! Recovery: every customer's newest row (the log's where it has one, else the checkpointed one),
//! priced by the versions in force over its period; the live idempotency keys; the newest event
//! time. The log itself is left to the committer's first checkpoint.

use std::collections::HashMap;

use rkyv::util::AlignedVec;
use tally_protocol::message::IdempotencyKey;

use super::commit_log::{group_by_customer, readable_records, Tail};
use super::prices::PriceRecovery;
use super::records::{self, RecordError};
use super::{Store, StoreError};
use crate::metering::idempotency::KeyRecord;
use crate::metering::table::CustomerRows;

/// What recovery read back.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every customer, already split by the shard that owns it (indexed later, by each shard).
    pub customers: Vec<CustomerRows>,
    /// Keys still inside their window.
    pub keys: Vec<(IdempotencyKey, KeyRecord)>,
    /// Keys found expired (to be deleted).
    pub expired_keys: Vec<IdempotencyKey>,
    /// The newest event time stored: shard clocks start no earlier, so one customer's events
    /// stay in time order (segments and listings rely on it) even if the wall clock went back.
    pub clock_floor_ms: u64,
    /// Commit-log records whose rows recovery read in place of the checkpointed ones.
    pub log_records_replayed: usize,
    /// Those records, oldest first, still in the log: the committer starts with them as its
    /// tail and has them checkpointed like any other (recovery reads them; it does not wait to
    /// write them out).
    pub log: Tail,
}

impl Store {
    /// Reads every customer, placed among `shards` shards by `shard_of_customer(id)`, and every
    /// idempotency key still inside its window at `now_ms`.
    pub fn recover(
        &self,
        prices: &mut PriceRecovery<'_>,
        now_ms: u64,
        shards: usize,
        shard_of_customer: impl Fn(&str) -> usize,
    ) -> Result<Recovered, StoreError> {
        // The log's newest row of a customer replaces its checkpointed one, and the log's
        // newest event raises the clock floor, as the log's checkpoint will (in the committer,
        // after start-up): writing ~3 tails out first took 0.75–0.9 s of a 2.3–2.8-s restart.
        let log = self.read_log()?;
        let mut arena = AlignedVec::new();
        let readable = readable_records(log.records.iter().map(|(_, r)| &r[..]), &mut arena);
        let (logged, logged_clock_floor_ms) = group_by_customer(&readable)?;
        // Looked up by the `customers` keys, which are bytes.
        let logged_rows: HashMap<&[u8], &[u8]> = logged
            .iter()
            .filter_map(|(id, customer)| Some((id.as_bytes(), customer.row?)))
            .collect();
        let checkpointed_clock_floor_ms = match self.meta.get("clock_floor")? {
            Some(bytes) => {
                u64::from_be_bytes((*bytes).try_into().map_err(|_| RecordError::Corrupt {
                    what: "clock floor",
                    reason: format!("{} bytes, not 8", bytes.len()),
                })?)
            }
            None => 0,
        };
        // Into chunks that never move: collecting a million customers in a growing vector
        // copied them on every doubling.
        let mut recovered = Recovered {
            customers: (0..shards).map(|_| CustomerRows::default()).collect(),
            clock_floor_ms: checkpointed_clock_floor_ms.max(logged_clock_floor_ms),
            log_records_replayed: log.records.len(),
            ..Recovered::default()
        };
        let mut scratch = AlignedVec::new();
        for guard in self.customers.iter() {
            let (id, value) = guard.into_inner()?;
            if logged_rows.contains_key(&*id) {
                continue;
            }
            let customer = records::decode_customer(&value, prices, &mut scratch)?;
            recovered.customers[shard_of_customer(customer.id())].push(customer);
        }
        for row in logged_rows.into_values() {
            let customer = records::decode_customer(row, prices, &mut scratch)?;
            recovered.customers[shard_of_customer(customer.id())].push(customer);
        }
        recovered.log = log;
        tracing::debug!(
            rows = recovered
                .customers
                .iter()
                .map(CustomerRows::len)
                .sum::<usize>(),
            "read and decoded the customer rows"
        );
        for guard in self.keys.iter() {
            let (key, value) = guard.into_inner()?;
            let key = records::decode_key(&key)?;
            let record = records::decode_key_record(&value)?;
            if record.expires_at_ms > now_ms {
                recovered.keys.push((key, record));
            } else {
                recovered.expired_keys.push(key);
            }
        }
        Ok(recovered)
    }
}
