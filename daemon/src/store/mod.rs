//! The fjall store: customer state, idempotency keys and raw usage events under
//! `<data_dir>/store`. It owns the key layout and recovery reads; it does not decide when to write
//! (the committer does) and knows nothing of actors or the wire.
//!
//! # Guarantees
//! [`Store::persist`] writes one atomic batch: every customer row, event and key record of a group
//! commit lands together or not at all, so a retried key can never be counted zero times or
//! twice. With `PersistMode::SyncData` the batch is on disk when it returns; with `Buffer` it is
//! in the OS (survives a process kill, not a power cut). A failed write poisons fjall: the daemon
//! must restart and recover, never retry.
//!
//! # Layout (keyspaces)
//! - `customers`: customer id → [`records::StoredCustomer`] (whole state, holds included).
//! - `events`: `[len][id][at_ms BE][seq BE]` → [`records::StoredEvent`].
//! - `keys`: 16-byte idempotency key → [`records::StoredKey`].
//! - `invoices`: `[len][id][period start BE][number BE]` → [`Invoice`].
//! - `transactions`: `[len][id][number BE]` → [`Transaction`].
//! - `meta`: `format` → [`records::STORE_FORMAT`].

pub mod records;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rkyv::util::AlignedVec;
use tally_protocol::message::{IdempotencyKey, LIST_EVENTS_MAX};

use crate::metering::billing::{Invoice, Transaction};
use crate::metering::catalogue::Catalogue;
use crate::metering::engine::{Changes, ShardCore};
use crate::metering::idempotency::KeyRecord;
use crate::metering::table::CustomerRows;
use records::{RecordError, StoredEvent, STORE_FORMAT};

/// Folder under the data dir that holds the fjall database.
pub const STORE_DIR: &str = "store";
/// Journal bytes fjall keeps before flushing memtables (its floor is 64 MiB). After a crash,
/// opening the store replays at most this much journal, which bounds recovery time.
pub const JOURNAL_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Most bytes one keyspace's memtable holds before it is sealed and flushed (fjall's default is
/// 64 MiB). Smaller memtables flush sooner, so after a crash fewer journal entries are unflushed
/// and replayed (10M reports over 1M customers: 265 ms of replay against 0.7–1.4 s at 64 MiB),
/// and less is resident (419 against 628 bytes per customer at 1M), for a higher tail under
/// sustained writes (p99 12 against 9 ms at 4×64 reports in flight, with 2 fjall workers). fjall keeps the size a
/// keyspace was created with: stores created before this setting keep 64 MiB.
pub const MEMTABLE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// fjall's flush/compaction threads. Its default is min(cores, 4), 2 here, and its worker 0
/// leaves compactions to the others by putting them back on the queue — so while the one other
/// worker compacts, worker 0 spins taking and re-queueing the same message (`worker_tick` and
/// `flume` send: 8.6% of all samples, self time, in a profile of sustained reports on 2 cores).
/// More workers take those messages sooner: with 4, sustained reports gained ~8% and lost ~30%
/// of their p99, batches ~5% (same-sitting A/B, 2 runs each). Compared across two sittings, the
/// row read after a crash went from 726–1,583 to 417–541 ms (1M customers) and resident memory
/// from 379 to 434 bytes per customer. One worker would not spin but deadlocked under load (it
/// blocks sending to its own full queue).
pub const FJALL_WORKERS: usize = 4;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall failed (IO, corruption, or poisoned after an earlier failure).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A record could not be read back.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The folder holds something that is not a Tally store.
    #[error("{path} is not a Tally store (no format marker); refusing to use it")]
    NotAStore {
        /// The folder.
        path: PathBuf,
    },
    /// A store written by another version of Tally.
    #[error(
        "{path} holds store format `{found}`; this tallyd reads `{}`",
        String::from_utf8_lossy(STORE_FORMAT)
    )]
    FormatMismatch {
        /// The folder.
        path: PathBuf,
        /// The format found.
        found: String,
    },
    /// A write failed on purpose (fault injection in tests).
    #[error("injected write failure")]
    InjectedFault,
}

/// Creation options of every data keyspace.
fn data_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES_MAX)
}

/// A switch that makes every write fail, for tests of the failure path at the storage boundary.
#[derive(Debug, Clone, Default)]
pub struct StoreFaults(Arc<AtomicBool>);

impl StoreFaults {
    /// From now on, every write fails (or succeeds again with `false`).
    pub fn fail_writes(&self, fail: bool) {
        self.0.store(fail, Ordering::SeqCst);
    }

    fn is_failing(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One write of a group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A customer's whole state.
    Customer {
        /// The customer's id.
        id: String,
        /// [`records::encode_customer`].
        record: Vec<u8>,
    },
    /// A usage event.
    Event {
        /// [`records::event_key`].
        key: Vec<u8>,
        /// [`records::encode_event`].
        record: Vec<u8>,
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
    },
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
            id: customer.id.to_string(),
            record: records::encode_customer(customer),
        });
    }
    for event in &changes.events {
        writes.push(Write::Event {
            key: records::event_key(&event.customer, event.at_ms, event.seq),
            record: records::encode_event(event),
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
        });
    }
    for transaction in &changes.transactions {
        writes.push(Write::Transaction {
            key: records::transaction_key(transaction),
            record: records::encode_transaction(transaction),
        });
    }
    writes
}

/// What recovery read back.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every customer, already split by the shard that owns it (indexed later, by each shard).
    pub customers: Vec<CustomerRows>,
    /// Keys still inside their window.
    pub keys: Vec<(IdempotencyKey, KeyRecord)>,
    /// Keys found expired (to be deleted).
    pub expired_keys: Vec<IdempotencyKey>,
}

/// The open store.
pub struct Store {
    db: Database,
    customers: Keyspace,
    events: Keyspace,
    keys: Keyspace,
    invoices: Keyspace,
    transactions: Keyspace,
    faults: StoreFaults,
}

impl Store {
    /// Opens (or, in a folder without one, creates) the store under `data_dir`.
    pub fn open(data_dir: &Path, faults: StoreFaults) -> Result<Store, StoreError> {
        let path = data_dir.join(STORE_DIR);
        let is_new = !path.exists();
        let db = Database::builder(&path)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .worker_threads(FJALL_WORKERS)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        match meta.get("format")? {
            Some(format) if &*format == STORE_FORMAT => {}
            Some(format) => {
                return Err(StoreError::FormatMismatch {
                    path,
                    found: String::from_utf8_lossy(&format).into_owned(),
                })
            }
            None if is_new => {
                meta.insert("format", STORE_FORMAT)?;
                db.persist(PersistMode::SyncAll)?;
            }
            None => return Err(StoreError::NotAStore { path }),
        }
        Ok(Store {
            customers: db.keyspace("customers", data_keyspace)?,
            events: db.keyspace("events", data_keyspace)?,
            keys: db.keyspace("keys", data_keyspace)?,
            invoices: db.keyspace("invoices", data_keyspace)?,
            transactions: db.keyspace("transactions", data_keyspace)?,
            db,
            faults,
        })
    }

    /// Reads every customer, placed among `shards` shards by `shard_of_customer(id)`, and every
    /// idempotency key still inside its window at `now_ms`.
    pub fn recover(
        &self,
        catalogue: &Catalogue,
        now_ms: u64,
        shards: usize,
        shard_of_customer: impl Fn(&str) -> usize,
    ) -> Result<Recovered, StoreError> {
        // Into chunks that never move: collecting a million customers in a growing vector
        // copied them on every doubling.
        let mut recovered = Recovered {
            customers: (0..shards).map(|_| CustomerRows::default()).collect(),
            ..Recovered::default()
        };
        let mut scratch = AlignedVec::new();
        for guard in self.customers.iter() {
            let (_, value) = guard.into_inner()?;
            let customer = records::decode_customer(&value, catalogue, &mut scratch)?;
            recovered.customers[shard_of_customer(&customer.id)].push(customer);
        }
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

    /// Roughly how many events are stored (cheap; for logs).
    pub fn approximate_event_count(&self) -> usize {
        self.events.approximate_len()
    }

    /// Writes `writes` as one atomic batch and persists it per `mode` before returning.
    pub fn persist(&self, writes: &[Write], mode: PersistMode) -> Result<(), StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        let mut batch = self.db.batch().durability(Some(mode));
        for write in writes {
            match write {
                Write::Customer { id, record } => {
                    batch.insert(&self.customers, id.as_bytes(), record.as_slice())
                }
                Write::Event { key, record } => {
                    batch.insert(&self.events, key.as_slice(), record.as_slice())
                }
                Write::Key { key, record } => {
                    batch.insert(&self.keys, key.as_slice(), record.as_slice())
                }
                Write::ForgetKey { key } => batch.remove(&self.keys, key.as_slice()),
                Write::Invoice { key, record } => {
                    batch.insert(&self.invoices, key.as_slice(), record.as_slice())
                }
                Write::Transaction { key, record } => {
                    batch.insert(&self.transactions, key.as_slice(), record.as_slice())
                }
            }
        }
        batch.commit()?;
        Ok(())
    }

    /// fsyncs everything written so far (the `periodic` durability mode's timer).
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// A customer's events from `(at_ms, seq)` = `from` up to `at_ms < to_ms`, oldest first, at most
    /// [`LIST_EVENTS_MAX`]; the flag says whether more follow.
    pub fn list_events(
        &self,
        customer: &str,
        from: (u64, u64),
        to_ms: u64,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let mut events = Vec::new();
        if from.0 >= to_ms {
            return Ok((events, false));
        }
        let start = records::event_key(customer, from.0, from.1);
        let end = records::event_key(customer, to_ms, 0);
        for guard in self.events.range(start..end) {
            if events.len() == LIST_EVENTS_MAX {
                return Ok((events, true));
            }
            let (_, value) = guard.into_inner()?;
            events.push(records::decode_event(&value)?);
        }
        Ok((events, false))
    }

    /// The customer's newest `limit` invoices, oldest first.
    pub fn list_invoices(&self, customer: &str, limit: usize) -> Result<Vec<Invoice>, StoreError> {
        let mut invoices = Vec::new();
        for guard in self.invoices.prefix(records::event_prefix(customer)).rev() {
            if invoices.len() == limit {
                break;
            }
            let (_, value) = guard.into_inner()?;
            invoices.push(records::decode_invoice(&value)?);
        }
        invoices.reverse();
        Ok(invoices)
    }

    /// The customer's newest `limit` transactions, oldest first.
    pub fn list_transactions(
        &self,
        customer: &str,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let mut transactions = Vec::new();
        for guard in self
            .transactions
            .prefix(records::event_prefix(customer))
            .rev()
        {
            if transactions.len() == limit {
                break;
            }
            let (_, value) = guard.into_inner()?;
            transactions.push(records::decode_transaction(&value)?);
        }
        transactions.reverse();
        Ok(transactions)
    }

    /// Deletes events recorded before `cutoff_ms` among the next `limit` event keys after
    /// `cursor` (from the start when `None`). Returns how many were deleted and where to go on
    /// (`None` after the last key: start over).
    pub fn purge_events(
        &self,
        cutoff_ms: u64,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        let range = match cursor {
            Some(after) => self.events.range(after.to_vec()..),
            None => self.events.iter(),
        };
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut seen = 0;
        let mut last = None;
        for guard in range {
            let key = guard.key()?;
            if cursor.is_some_and(|after| &*key == after) {
                continue;
            }
            if records::event_time(&key).is_some_and(|at_ms| at_ms < cutoff_ms) {
                batch.remove(&self.events, key.clone());
            }
            last = Some(key.to_vec());
            seen += 1;
            if seen == limit {
                break;
            }
        }
        let deleted = batch.len();
        batch.commit()?;
        Ok((deleted, if seen == limit { last } else { None }))
    }

    /// Flushes every memtable to disk tables so the next start has no journal to replay (clean
    /// shutdown only; a crash replays the journal instead).
    pub fn flush_for_shutdown(&self) -> Result<(), StoreError> {
        for keyspace in [
            &self.customers,
            &self.events,
            &self.keys,
            &self.invoices,
            &self.transactions,
        ] {
            keyspace.rotate_memtable_and_wait()?;
        }
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG_TOML};
    use crate::metering::customer::Customer;
    use crate::metering::engine::UsageEvent;
    use crate::metering::table::CustomerTable;

    fn catalogue() -> Arc<Catalogue> {
        Config::parse(DEFAULT_CONFIG_TOML, Path::new("."), "config.toml")
            .unwrap()
            .catalogue
    }

    #[test]
    fn customers_and_events_come_back_exactly_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let mut customer = Customer::new("acme", catalogue.plan("pro").unwrap().clone(), 5);
        assert!(customer.set_used("tokens", 42));
        let event = UsageEvent {
            customer: "acme".into(),
            seq: 2,
            at_ms: 1_000,
            feature: "tokens".into(),
            amount: 42,
            charged: 0,
            idempotency_key: Some([3; 16]),
        };
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let writes = [
                Write::Customer {
                    id: "acme".into(),
                    record: records::encode_customer(&customer),
                },
                Write::Event {
                    key: records::event_key("acme", 1_000, 2),
                    record: records::encode_event(&event),
                },
            ];
            store.persist(&writes, PersistMode::SyncData).unwrap();
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let recovered = store.recover(&catalogue, 0, 2, |_| 1).unwrap();
        let [first, second]: [CustomerRows; 2] = recovered.customers.try_into().unwrap();
        assert!(first.is_empty());
        let second = CustomerTable::index(second).unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second.get("acme"), Some(&customer));
        let (events, more) = store.list_events("acme", (0, 0), 2_000).unwrap();
        assert!(!more);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].amount, 42);
        assert!(store
            .list_events("acme", (1_001, 0), 2_000)
            .unwrap()
            .0
            .is_empty());
        assert!(store
            .list_events("acm", (0, 0), u64::MAX)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn purging_deletes_only_events_before_the_cutoff_and_walks_the_whole_keyspace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let mut writes = Vec::new();
        for customer in ["a", "b", "c"] {
            for at_ms in [100u64, 200, 300] {
                let event = UsageEvent {
                    customer: customer.into(),
                    seq: at_ms,
                    at_ms,
                    feature: "tokens".into(),
                    amount: 1,
                    charged: 0,
                    idempotency_key: None,
                };
                writes.push(Write::Event {
                    key: records::event_key(customer, at_ms, at_ms),
                    record: records::encode_event(&event),
                });
            }
        }
        store.persist(&writes, PersistMode::Buffer).unwrap();
        let mut cursor = None;
        let mut deleted = 0;
        loop {
            let (n, next) = store.purge_events(250, cursor.as_deref(), 2).unwrap();
            deleted += n;
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(deleted, 6);
        for customer in ["a", "b", "c"] {
            let (events, _) = store.list_events(customer, (0, 0), u64::MAX).unwrap();
            assert_eq!(
                events.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
                vec![300]
            );
        }
    }

    #[test]
    fn a_folder_that_is_not_a_tally_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path().join(STORE_DIR))
                .open()
                .unwrap();
            db.keyspace("other", KeyspaceCreateOptions::default)
                .unwrap();
        }
        let refused = Store::open(dir.path(), StoreFaults::default());
        assert!(matches!(refused, Err(StoreError::NotAStore { .. })));
    }

    #[test]
    fn injected_faults_fail_writes() {
        let dir = tempfile::tempdir().unwrap();
        let faults = StoreFaults::default();
        let store = Store::open(dir.path(), faults.clone()).unwrap();
        faults.fail_writes(true);
        let write = Write::ForgetKey { key: [0; 16] };
        assert!(matches!(
            store.persist(&[write], PersistMode::Buffer),
            Err(StoreError::InjectedFault)
        ));
    }
}
