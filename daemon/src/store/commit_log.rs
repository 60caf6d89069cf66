//! The commit log: a group commit's writes as one atomic batch — its customer rows and events in
//! **one** `log` record, keys, invoices and transactions beside it — and the [`Tail`] of log
//! records a checkpoint will write out. Reading the log back (in place where fjall keeps the
//! bytes aligned) is shared by recovery and checkpoints.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use fjall::{PersistMode, Slice};
use rkyv::util::AlignedVec;
use tally_protocol::message::IdempotencyKey;

use super::records::{
    self, ArchivedStoredEvent, LoggedEvent, LoggedRow, StoredCommit, StoredEvent,
};
use super::{Store, StoreError};
use crate::metering::engine::{Changes, ShardCore};

/// One write of a group commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A customer's whole state (logged).
    Customer {
        /// The customer.
        id: String,
        /// [`records::encode_customer`].
        record: Vec<u8>,
    },
    /// A usage event (logged).
    Event {
        /// The customer.
        customer: String,
        /// The event.
        event: StoredEvent,
    },
    /// An applied idempotency key.
    Key {
        /// The key.
        key: IdempotencyKey,
        /// [`records::encode_key_record`].
        record: Vec<u8>,
    },
    /// A key whose window ended.
    ForgetKey {
        /// The key.
        key: IdempotencyKey,
    },
    /// A closed period's invoice.
    Invoice {
        /// [`records::invoice_key`].
        key: Vec<u8>,
        /// [`records::encode_invoice`].
        record: Vec<u8>,
        /// [`records::encode_model_lines`] of a period with usage priced by model.
        models: Option<Vec<u8>>,
    },
    /// An alert for the webhook outbox (numbered when persisted).
    Alert(super::outbox::StoredAlert),
    /// A purchase or top-up.
    Transaction {
        /// [`records::transaction_key`].
        key: Vec<u8>,
        /// [`records::encode_transaction`].
        record: Vec<u8>,
    },
}

/// The store writes that persist `changes` of `core` (customer rows re-read from `core`).
pub fn writes_for(changes: Changes, core: &ShardCore) -> Vec<Write> {
    let mut writes = Vec::with_capacity(
        changes.customers.len() + changes.events.len() + changes.keys_remembered.len(),
    );
    for slot in changes.customers {
        let customer = core.customer_at(slot);
        writes.push(Write::Customer {
            id: customer.id().to_string(),
            record: records::encode_customer(customer),
        });
    }
    for mut event in changes.events {
        writes.push(Write::Event {
            customer: std::mem::take(&mut event.customer),
            event: StoredEvent::from(event),
        });
    }
    for (key, record) in &changes.keys_remembered {
        writes.push(Write::Key {
            key: *key,
            record: records::encode_key_record(record),
        });
    }
    for key in changes.keys_forgotten {
        writes.push(Write::ForgetKey { key });
    }
    for invoice in &changes.invoices {
        writes.push(Write::Invoice {
            key: records::invoice_key(invoice),
            record: records::encode_invoice(invoice),
            models: (!invoice.models.is_empty())
                .then(|| records::encode_model_lines(&invoice.models)),
        });
    }
    for alert in &changes.alerts {
        writes.push(Write::Alert(super::outbox::StoredAlert {
            event: alert.kind.event_name().into(),
            customer: alert.customer.clone(),
            at_ms: alert.at_ms,
            data: serde_json::to_vec(&crate::webhooks::payload::data(alert))
                .expect("JSON values serialize"),
        }));
    }
    for transaction in &changes.transactions {
        writes.push(Write::Transaction {
            key: records::transaction_key(transaction),
            record: records::encode_transaction(transaction),
        });
    }
    writes
}

/// The commit-log records written since the last checkpoint. It shares their bytes with fjall's
/// memtable (a reference count, no copy), so a tail costs next to nothing until its checkpoint
/// groups it by customer. Dropping a tail loses nothing: its log records stay and are replayed
/// at the next start.
#[derive(Debug, Default)]
pub struct Tail {
    pub(super) records: Vec<([u8; 8], Slice)>,
    bytes: usize,
}

impl Tail {
    /// Whether nothing awaits a checkpoint.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of log records since the last checkpoint.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn push(&mut self, key: [u8; 8], record: Slice) {
        self.bytes += record.len();
        self.records.push((key, record));
    }
}

/// Each of `records` where [`records::access_commit`] can read it: in place when it is aligned
/// for that, else copied into `arena`.
pub(super) fn readable_records<'a>(
    records: impl Iterator<Item = &'a [u8]> + Clone,
    arena: &'a mut AlignedVec,
) -> Vec<&'a [u8]> {
    let mut copies = Vec::new();
    for record in records.clone().filter(|r| !records::is_commit_aligned(r)) {
        let start = arena.len().next_multiple_of(records::COMMIT_ALIGN);
        arena.resize(start, 0);
        arena.extend_from_slice(record);
        copies.push(start..arena.len());
    }
    let arena: &'a AlignedVec = arena;
    let mut copies = copies.into_iter();
    records
        .map(|record| {
            if records::is_commit_aligned(record) {
                record
            } else {
                &arena[copies.next().expect("a copy of every misaligned record")]
            }
        })
        .collect()
}

/// One customer's share of a tail: its newest row and its events in order, read in place.
#[derive(Default)]
pub(super) struct TailCustomer<'a> {
    pub(super) row: Option<&'a [u8]>,
    pub(super) events: Vec<&'a ArchivedStoredEvent>,
}

/// Commit-log records (oldest first, readable in place) grouped by customer — a later row of a
/// customer replaces an earlier one, events append — and the newest event time among them.
pub(super) fn group_by_customer<'a>(
    records: &[&'a [u8]],
) -> Result<(HashMap<&'a str, TailCustomer<'a>>, u64), StoreError> {
    let mut customers: HashMap<&str, TailCustomer<'_>> = HashMap::new();
    let mut clock_floor_ms = 0;
    for &bytes in records {
        let commit = records::access_commit(bytes)?;
        for row in commit.customers.iter() {
            customers.entry(row.customer.as_str()).or_default().row = Some(row.record.as_slice());
        }
        for logged in commit.events.iter() {
            clock_floor_ms = clock_floor_ms.max(logged.event.at_ms.to_native());
            customers
                .entry(logged.customer.as_str())
                .or_default()
                .events
                .push(&logged.event);
        }
    }
    Ok((customers, clock_floor_ms))
}

impl Store {
    /// Every record the commit log holds, oldest first.
    pub(super) fn read_log(&self) -> Result<Tail, StoreError> {
        let mut tail = Tail::default();
        for guard in self.log.iter() {
            let (key, value) = guard.into_inner()?;
            tail.push(records::log_key(records::log_number(&key)?), value);
        }
        Ok(tail)
    }

    /// Writes `writes` as one atomic batch — customer rows and events as one commit-log record,
    /// the rest in place — and persists it per `mode` before returning. The logged rows and
    /// events are added to `tail` for the next [`Store::checkpoint`].
    pub fn persist(
        &self,
        writes: Vec<Write>,
        mode: PersistMode,
        tail: &mut Tail,
    ) -> Result<(), StoreError> {
        self.faults.wait_while_stalled();
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        let mut batch = self.db.batch().durability(Some(mode));
        let mut commit = StoredCommit::default();
        let mut alerts = Vec::new();
        for write in writes {
            match write {
                Write::Customer { id, record } => commit.customers.push(LoggedRow {
                    customer: id,
                    record,
                }),
                Write::Event { customer, event } => {
                    commit.events.push(LoggedEvent { customer, event });
                }
                Write::Key { key, record } => {
                    batch.insert(&self.keys, key.as_slice(), record.as_slice());
                }
                Write::ForgetKey { key } => batch.remove(&self.keys, key.as_slice()),
                Write::Invoice {
                    key,
                    record,
                    models,
                } => {
                    if let Some(models) = models {
                        batch.insert(&self.invoice_models, key.as_slice(), models.as_slice());
                    }
                    batch.insert(&self.invoices, key.as_slice(), record.as_slice());
                }
                Write::Transaction { key, record } => {
                    batch.insert(&self.transactions, key.as_slice(), record.as_slice());
                }
                Write::Alert(alert) => alerts.push(alert),
            }
        }
        let outbox_next = self.outbox_alerts(&mut batch, alerts);
        let logged = if commit.is_empty() {
            None
        } else {
            let key = records::log_key(self.next_log.fetch_add(1, Ordering::Relaxed));
            let mut buffer = self.commit_buffer.lock().expect("the commit buffer lock");
            let encoded = records::encode_commit(&commit, std::mem::take(&mut *buffer));
            let record = Slice::from(&encoded[..]);
            *buffer = encoded;
            batch.insert(&self.log, key, record.clone());
            Some((key, record))
        };
        batch.commit()?;
        if let Some((key, record)) = logged {
            tail.push(key, record);
        }
        if let Some(next) = outbox_next {
            self.outbox_persisted(next);
        }
        Ok(())
    }
}
