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
//! # Commit log and checkpoints
//! A group commit's customer rows and events go into **one** record of the `log` keyspace, under
//! the next commit number: one insert per commit instead of one per row and per event (records
//! spread over every customer were most of a durable report's cost; docs/performance.md, store
//! format 3). The committer keeps what the log holds since
//! the last checkpoint in a [`Tail`]; [`Store::checkpoint`] writes it out — each customer's newest
//! row into `customers`, its events as segments into `segments`, in small batches — and then
//! deletes those log records in one last batch (a crash part-way leaves them all, and the replay
//! rewrites the same keys). Recovery reads the rows, taking a customer's newest row from the
//! log where the log has one, and leaves the log (a crash leaves at most a few tails) to the
//! committer as its first tail, checkpointed before any later one, so rows never go back in
//! time.
//!
//! # Layout (keyspaces)
//! - `log`: commit number BE → [`records::StoredCommit`] (rows and events not yet checkpointed).
//! - `customers`: customer id → [`records::StoredCustomer`] (whole state, holds included).
//! - `segments`: `[len][id][at_ms BE][seq BE]` of the first event → [`records::StoredSegment`]
//!   (one customer's events from one checkpoint, at most [`records::SEGMENT_EVENTS_MAX`]).
//! - `keys`: 16-byte idempotency key → [`records::StoredKey`].
//! - `invoices`: `[len][id][period start BE][number BE]` → [`Invoice`].
//! - `invoice_models`: the same key → the invoice's usage per model (only periods that had any).
//! - `transactions`: `[len][id][number BE]` → [`Transaction`].
//! - `meta`: `format` → [`records::STORE_FORMAT`]; `clock_floor` → the newest event time
//!   checkpointed (BE), below which no shard's clock goes after a restart.

//! # Files
//! - `mod.rs`: the store, opening it, its tuning constants and errors.
//! - [`commit_log`]: group commits into the log; [`Tail`]; reading log records back.
//! - [`checkpoint`]: tails written out into rows and segments.
//! - [`recovery`]: what a start reads back.
//! - [`queries`]: listing events, invoices and transactions.
//! - [`retention`] and [`flush`]: deleting expired segments; flushing memtables.
//! - [`prices`]: the plans' price versions and the customers' price splits.
//! - [`records`], [`billing_records`]: the disk records (rkyv) and key layouts.
//! - [`migrate`], [`faults`]: upgrading an older store; fault injection for tests.

pub mod billing_records;
pub mod checkpoint;
pub mod commit_log;
pub mod faults;
pub mod flush;
pub mod migrate;
pub mod outbox;
pub mod prices;
pub mod profiles;
pub mod queries;
pub mod records;
pub mod recovery;
pub mod retention;

pub use checkpoint::CHECKPOINT_BYTES;
pub use commit_log::{writes_for, Tail, Write};
pub use faults::StoreFaults;
pub use recovery::Recovered;
pub use retention::PurgedChunk;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rkyv::util::AlignedVec;

use migrate::{migrate_from_format_2, migrate_from_format_3};
use records::{RecordError, STORE_FORMAT, STORE_FORMAT_2, STORE_FORMAT_3};

/// Folder under the data dir that holds the fjall database.
pub const STORE_DIR: &str = "store";
/// Journal bytes fjall keeps before flushing memtables (its floor is 64 MiB). After a crash,
/// opening the store replays at most this much journal, which bounds recovery time.
pub const JOURNAL_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Most bytes one keyspace's memtable holds before it is flushed (fjall's default: 64 MiB).
/// Smaller: less journal to replay after a crash and less resident, for a somewhat higher tail
/// under sustained writes (figures in ARCHITECTURE.md, "Threads and time"). Fixed when a
/// keyspace is created.
pub const MEMTABLE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The commit log's memtable: three checkpoints' worth ([`CHECKPOINT_BYTES`]), so most log
/// records are deleted by their checkpoint before a flush and the flush writes their tombstones
/// only; fewer flushes, fewer journal fsyncs under the commit lock (docs/performance.md, "a
/// commit log that dies in memory"). Fixed when the keyspace is created.
pub const LOG_MEMTABLE_BYTES_MAX: u64 = 3 * CHECKPOINT_BYTES as u64;

/// Memtable bytes (all keyspaces) below which a quiet daemon keeps its memtables: see
/// [`Store::flush_memtables_over`]. Flushing less would only make small tables to compact.
pub const QUIET_FLUSH_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// fjall's block cache (its default: 32 MiB). The daemon serves from memory; the store is read
/// in scans (recovery, listings, the janitor) whose blocks are read once, so a larger cache only
/// holds memory (docs/performance.md, "where resident memory goes after a load").
pub const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// fjall's flush/compaction threads (its default here: 2). With 2, its worker 0 spins re-queueing
/// compactions while the other compacts; 4 gave more sustained reports and a lower p99; 1
/// deadlocked under load (figures in ARCHITECTURE.md, "Threads and time").
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

/// Creation options of the commit log's keyspace.
fn log_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(LOG_MEMTABLE_BYTES_MAX)
}

/// The open store.
pub struct Store {
    db: Database,
    /// Where commit-log records are serialized (only the committer writes them).
    commit_buffer: Mutex<AlignedVec>,
    meta: Keyspace,
    log: Keyspace,
    next_log: AtomicU64,
    customers: Keyspace,
    segments: Keyspace,
    keys: Keyspace,
    invoices: Keyspace,
    /// The per-model usage of invoices whose period had usage priced by model, by invoice key.
    invoice_models: Keyspace,
    transactions: Keyspace,
    /// Customers' contact details (the HTTP API's), by id; the engine never reads them.
    profiles: Keyspace,
    outbox: outbox::Outbox,
    next_outbox: AtomicU64,
    outbox_head: tokio::sync::watch::Sender<u64>,
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
            .cache_size(CACHE_BYTES)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        match meta.get("format")? {
            Some(format) if &*format == STORE_FORMAT => {}
            Some(format) if &*format == STORE_FORMAT_3 => migrate_from_format_3(&db, &meta)?,
            Some(format) if &*format == STORE_FORMAT_2 => {
                migrate_from_format_2(&db, &meta)?;
                migrate_from_format_3(&db, &meta)?;
            }
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
        let log = db.keyspace("log", log_keyspace)?;
        let next_log = match log.last_key_value() {
            Some(guard) => records::log_number(&guard.key()?)? + 1,
            None => 0,
        };
        let next_outbox =
            match meta.get("outbox_next")? {
                Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                    RecordError::Corrupt {
                        what: "outbox_next",
                        reason: format!("{} bytes, not 8", bytes.len()),
                    }
                })?),
                None => 0,
            };
        Ok(Store {
            outbox: outbox::Outbox {
                events: db.keyspace("outbox", data_keyspace)?,
                cursors: db.keyspace("webhook_cursors", KeyspaceCreateOptions::default)?,
                failed: db.keyspace("webhook_failed", KeyspaceCreateOptions::default)?,
                endpoints: db.keyspace("webhook_endpoints", KeyspaceCreateOptions::default)?,
            },
            next_outbox: AtomicU64::new(next_outbox),
            outbox_head: tokio::sync::watch::channel(next_outbox).0,
            commit_buffer: Mutex::new(AlignedVec::new()),
            log,
            next_log: AtomicU64::new(next_log),
            customers: db.keyspace("customers", data_keyspace)?,
            segments: db.keyspace("segments", data_keyspace)?,
            keys: db.keyspace("keys", data_keyspace)?,
            invoices: db.keyspace("invoices", data_keyspace)?,
            invoice_models: db.keyspace("invoice_models", data_keyspace)?,
            transactions: db.keyspace("transactions", data_keyspace)?,
            profiles: db.keyspace("profiles", KeyspaceCreateOptions::default)?,
            meta,
            db,
            faults,
        })
    }

    /// Roughly how many event segments are stored (cheap; for logs).
    pub fn approximate_segment_count(&self) -> usize {
        self.segments.approximate_len()
    }

    /// fsyncs everything written so far (the `periodic` durability mode's timer).
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        self.db.persist(PersistMode::SyncData)?;
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
    use std::sync::Arc;

    use commit_log::readable_records;
    use prices::PriceRecovery;
    use records::{LoggedEvent, StoredCommit, StoredEvent};

    use crate::config::{Config, DEFAULT_CONFIG_TOML};
    use crate::metering::catalogue::Catalogue;
    use crate::metering::customer::Customer;
    use crate::metering::table::CustomerTable;

    fn catalogue() -> Arc<Catalogue> {
        Config::parse(DEFAULT_CONFIG_TOML, Path::new("."), "config.toml")
            .unwrap()
            .catalogue
    }

    fn event(seq: u64, at_ms: u64) -> StoredEvent {
        StoredEvent {
            seq,
            at_ms,
            feature: "tokens".into(),
            amount: seq,
            charged: 0,
            idempotency_key: None,
        }
    }

    fn row(customer: &Customer) -> Write {
        Write::Customer {
            id: customer.id().to_string(),
            record: records::encode_customer(customer),
        }
    }

    fn logged(customer: &str, event: StoredEvent) -> Write {
        Write::Event {
            customer: customer.into(),
            event,
        }
    }

    /// Commits `writes` and checkpoints them at once.
    fn persist_and_checkpoint(store: &Store, writes: Vec<Write>) {
        let mut tail = Tail::default();
        store
            .persist(writes, PersistMode::Buffer, &mut tail)
            .unwrap();
        store.checkpoint(&mut tail, PersistMode::Buffer).unwrap();
        assert!(tail.is_empty());
    }

    #[test]
    fn a_checkpoint_reads_logged_records_in_place_and_copies_only_misaligned_ones() {
        let commit = StoredCommit {
            customers: vec![],
            events: vec![LoggedEvent {
                customer: "acme".into(),
                event: event(7, 1_000),
            }],
        };
        let encoded = records::encode_commit(&commit, AlignedVec::new());
        // What the committer logs: fjall's heap copy, aligned for reading in place.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let mut tail = Tail::default();
        store
            .persist(
                vec![logged("acme", event(7, 1_000))],
                PersistMode::Buffer,
                &mut tail,
            )
            .unwrap();
        assert!(
            records::is_commit_aligned(&tail.records[0].1),
            "fjall no longer keeps records 8-aligned: checkpoints still work, but copy them all"
        );
        // 8 bytes into a 16-aligned buffer (aligned enough), and 1 byte in (a record read back
        // from disk may sit at any offset).
        let at = |offset: usize| {
            let mut buffer = AlignedVec::<16>::new();
            buffer.extend_from_slice(&vec![0; offset]);
            buffer.extend_from_slice(&encoded);
            buffer
        };
        let (eight, one) = (at(8), at(1));
        let (in_place, misaligned) = (&eight[8..], &one[1..]);
        let mut arena = AlignedVec::new();
        let readable = readable_records([in_place, misaligned].into_iter(), &mut arena);
        assert!(std::ptr::eq(readable[0], in_place), "read where it lies");
        assert!(!std::ptr::eq(readable[1], misaligned), "copied");
        for bytes in readable {
            let read = records::access_commit(bytes).unwrap();
            assert_eq!(read.events[0].event.seq, 7);
            assert_eq!(read.events[0].customer.as_str(), "acme");
        }
        assert_eq!(
            arena.len(),
            encoded.len(),
            "only the misaligned record was copied"
        );
    }

    /// Recovers as the daemon does: the rows, then the log's checkpoint (the committer's first).
    fn recover_one(store: &Store, catalogue: &Catalogue) -> (CustomerTable, Recovered) {
        let mut recovered = store
            .recover(
                &mut PriceRecovery::new(catalogue, &Default::default(), 0),
                0,
                1,
                |_| 0,
            )
            .unwrap();
        store
            .checkpoint(&mut recovered.log, PersistMode::SyncData)
            .unwrap();
        let rows = recovered.customers.pop().unwrap();
        (CustomerTable::index(rows).unwrap(), recovered)
    }

    fn all_events(store: &Store, customer: &str, from_ms: u64, to_ms: u64) -> Vec<StoredEvent> {
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut from = (from_ms, 0);
        loop {
            let (page, more) = store.list_events(customer, from, to_ms).unwrap();
            if let Some(last) = page.last() {
                from = (last.at_ms, last.seq + 1);
            }
            events.extend(page);
            if !more {
                return events;
            }
        }
    }

    #[test]
    fn a_commit_left_in_the_log_comes_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let mut customer = Customer::new("acme", catalogue.plan("pro").unwrap().clone(), 5);
        assert!(customer.set_used("tokens", 42));
        let mut keyed = event(2, 1_000);
        keyed.idempotency_key = Some([3; 16]);
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let writes = vec![row(&customer), logged("acme", keyed.clone())];
            let mut tail = Tail::default();
            store
                .persist(writes, PersistMode::SyncData, &mut tail)
                .unwrap();
            assert!(!tail.is_empty());
            // Dropped without a checkpoint, as in a crash: the log record must carry it all.
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue);
        assert_eq!(recovered.log_records_replayed, 1);
        assert_eq!(recovered.clock_floor_ms, 1_000);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get("acme"), Some(&customer));
        assert_eq!(all_events(&store, "acme", 0, 2_000), vec![keyed]);
        assert!(all_events(&store, "acme", 1_001, 2_000).is_empty());
        assert!(all_events(&store, "acm", 0, u64::MAX).is_empty());
        drop(store);
        // `recover_one` checkpointed the log it read: nothing is read from the log twice.
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue);
        assert_eq!(recovered.log_records_replayed, 0);
        assert_eq!(table.get("acme"), Some(&customer));
        assert_eq!(all_events(&store, "acme", 0, 2_000).len(), 1);
    }

    #[test]
    fn the_newest_row_wins_whether_checkpointed_or_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let plan = catalogue.plan("pro").unwrap().clone();
        let mut customer = Customer::new("acme", plan, 5);
        let mut rows = Vec::new();
        for used in [1, 2, 3, 4] {
            assert!(customer.set_used("tokens", used));
            rows.push(customer.clone());
        }
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let mut tail = Tail::default();
            // The first two rows are checkpointed, the last two left in the log.
            for (i, customer) in rows.iter().enumerate() {
                store
                    .persist(vec![row(customer)], PersistMode::SyncData, &mut tail)
                    .unwrap();
                if i == 1 {
                    store.checkpoint(&mut tail, PersistMode::Buffer).unwrap();
                    assert!(tail.is_empty());
                }
            }
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue);
        assert_eq!(recovered.log_records_replayed, 2);
        assert_eq!(table.get("acme"), Some(&rows[3]));
    }

    #[test]
    fn recovery_reads_the_logs_rows_and_leaves_the_log_to_be_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let plan = catalogue.plan("pro").unwrap().clone();
        let mut acme = Customer::new("acme", plan.clone(), 5);
        let beta = Customer::new("beta", plan.clone(), 5);
        let gamma = Customer::new("gamma", plan, 5);
        let mut acme_rows = Vec::new();
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let mut tail = Tail::default();
            for (seq, writes) in [
                (1, vec![row(&beta)]),
                (2, vec![]),
                (3, vec![row(&gamma)]),
                (4, vec![]),
            ] {
                assert!(acme.set_used("tokens", seq));
                acme_rows.push(acme.clone());
                let mut writes = writes;
                writes.push(row(&acme));
                writes.push(logged("acme", event(seq, seq * 1_000)));
                store
                    .persist(writes, PersistMode::SyncData, &mut tail)
                    .unwrap();
                if seq == 2 {
                    // acme (used 2) and beta checkpointed; the rest stays in the log.
                    store.checkpoint(&mut tail, PersistMode::SyncData).unwrap();
                }
            }
        }
        for _crash_again in 0..2 {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let mut recovered = store
                .recover(
                    &mut PriceRecovery::new(&catalogue, &Default::default(), 0),
                    0,
                    1,
                    |_| 0,
                )
                .unwrap();
            assert_eq!(recovered.log_records_replayed, 2);
            assert_eq!(
                recovered.clock_floor_ms, 4_000,
                "from the log's newest event"
            );
            let table = CustomerTable::index(recovered.customers.pop().unwrap()).unwrap();
            assert_eq!(table.len(), 3);
            assert_eq!(
                table.get("acme"),
                Some(&acme_rows[3]),
                "the log's newest row"
            );
            assert_eq!(table.get("beta"), Some(&beta));
            assert_eq!(
                table.get("gamma"),
                Some(&gamma),
                "a customer only in the log"
            );
            // Nothing written yet: the log's events are listed after its checkpoint.
            assert_eq!(all_events(&store, "acme", 0, u64::MAX).len(), 2);
            assert!(!recovered.log.is_empty());
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue);
        assert_eq!(recovered.log_records_replayed, 2);
        assert_eq!(table.get("acme"), Some(&acme_rows[3]));
        let seqs: Vec<u64> = all_events(&store, "acme", 0, u64::MAX)
            .iter()
            .map(|event| event.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        drop(store);
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue);
        assert_eq!(recovered.log_records_replayed, 0);
        assert_eq!(recovered.clock_floor_ms, 4_000);
        assert_eq!(table.get("acme"), Some(&acme_rows[3]));
    }

    #[test]
    fn listing_reads_across_segments_and_pages_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let mut expected = Vec::new();
        let mut seq = 0;
        // Three checkpoints, the first larger than a segment; neighbours with similar ids.
        for run in [700u64, 100, 1_300] {
            let mut writes = Vec::new();
            for _ in 0..run {
                seq += 1;
                let at_ms = 1_000 + seq / 3;
                expected.push(event(seq, at_ms));
                writes.push(logged("acme", event(seq, at_ms)));
                writes.push(logged("acm", event(seq, at_ms)));
                writes.push(logged("acmeX", event(seq, at_ms)));
            }
            persist_and_checkpoint(&store, writes);
        }
        assert_eq!(all_events(&store, "acme", 0, u64::MAX), expected);
        for (from_ms, to_ms) in [
            (1_000, 1_001),
            (1_100, 1_400),
            (1_233, 1_234),
            (1_400, 2_000),
        ] {
            let want: Vec<_> = expected
                .iter()
                .filter(|e| (from_ms..to_ms).contains(&e.at_ms))
                .cloned()
                .collect();
            assert_eq!(all_events(&store, "acme", from_ms, to_ms), want);
        }
        // A cursor inside a millisecond resumes after the last event it saw.
        let (page, _) = store.list_events("acme", (1_200, 601), 1_201).unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![601, 602]
        );
    }

    #[test]
    fn a_quiet_flush_writes_the_memtables_out_only_past_its_threshold_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let catalogue = catalogue();
        let plan = catalogue.plan("pro").unwrap();
        let writes = (0..100)
            .map(|i| row(&Customer::new(format!("c{i}"), plan.clone(), 5)))
            .collect();
        persist_and_checkpoint(&store, writes);
        let buffered = store.db.write_buffer_size();
        assert!(buffered > 0);
        assert!(!store.flush_memtables_over(buffered + 1).unwrap());
        assert_eq!(
            store.customers.table_count(),
            0,
            "below the threshold: kept"
        );
        // fjall frees its write-buffer count just after a flush completes: the tables are what
        // the test can see without racing its worker.
        assert!(store.flush_memtables_over(buffered).unwrap());
        assert_eq!(
            store.customers.table_count(),
            1,
            "the rows are in a disk table"
        );
        let (table, _) = recover_one(&store, &catalogue);
        assert_eq!(table.len(), 100);
        store.faults.fail_writes(true);
        assert!(
            store.flush_memtables_over(0).is_err(),
            "a failing store says so"
        );
    }

    #[test]
    fn purging_deletes_only_segments_wholly_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        for customer in ["a", "b", "c"] {
            for at_ms in [100u64, 200, 300] {
                let writes = vec![logged(customer, event(at_ms, at_ms))];
                persist_and_checkpoint(&store, writes);
            }
        }
        // One segment straddling the cutoff: kept whole until its newest event is old enough.
        let writes = vec![logged("d", event(1, 200)), logged("d", event(2, 300))];
        persist_and_checkpoint(&store, writes);
        let mut cursor = None;
        let mut deleted = 0;
        let mut oldest_kept = Vec::new();
        loop {
            let chunk = store.purge_events(250, cursor.as_deref(), 2).unwrap();
            deleted += chunk.deleted;
            oldest_kept.push(chunk.oldest_kept_ms);
            cursor = chunk.next;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(deleted, 6);
        // Chunks of two keys in key order: a100 a200 | a300 b100 | b200 b300 | c100 c200 |
        // c300 d200 | (end). Each says when its oldest kept segment began.
        assert_eq!(
            oldest_kept,
            vec![None, Some(300), Some(300), None, Some(200), None]
        );
        for customer in ["a", "b", "c"] {
            let events = all_events(&store, customer, 0, u64::MAX);
            assert_eq!(
                events.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
                vec![300]
            );
        }
        assert_eq!(all_events(&store, "d", 0, u64::MAX).len(), 2);
    }

    #[test]
    fn a_format_2_store_is_migrated_without_losing_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let customer = Customer::new("acme", catalogue.plan("pro").unwrap().clone(), 5);
        let events: Vec<StoredEvent> = (1..=25_000).map(|seq| event(seq, 1_000 + seq)).collect();
        {
            let db = Database::builder(dir.path().join(STORE_DIR))
                .open()
                .unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            meta.insert("format", STORE_FORMAT_2).unwrap();
            let customers = db.keyspace("customers", data_keyspace).unwrap();
            customers
                .insert("acme", records::encode_customer_v3(&customer))
                .unwrap();
            let stored = db.keyspace("events", data_keyspace).unwrap();
            for event in &events {
                stored
                    .insert(
                        records::event_key("acme", event.at_ms, event.seq),
                        records::encode_event(event),
                    )
                    .unwrap();
            }
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        assert_eq!(all_events(&store, "acme", 0, u64::MAX), events);
        let (table, _) = recover_one(&store, &catalogue);
        assert_eq!(table.get("acme"), Some(&customer));
        drop(store);
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        assert_eq!(all_events(&store, "acme", 0, u64::MAX).len(), events.len());
    }

    #[test]
    fn a_format_3_store_is_migrated_with_its_rows_and_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let pro = catalogue.plan("pro").unwrap().clone();
        let checkpointed = Customer::new("acme", pro.clone(), 5);
        let mut logged = Customer::new("bolt", pro, 5);
        let terms = logged.plan().usage["tokens"];
        logged.record("tokens", terms, 40);
        let hold = crate::metering::customer::Hold {
            feature: "tokens".into(),
            amount: 7,
            held: 0,
            expires_at_ms: 99,
            request: None,
        };
        logged.open_hold(9, terms, hold);
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            store
                .customers
                .insert("acme", records::encode_customer_v3(&checkpointed))
                .unwrap();
            let commit = StoredCommit {
                customers: vec![records::LoggedRow {
                    customer: "bolt".into(),
                    record: records::encode_customer_v3(&logged),
                }],
                events: Vec::new(),
            };
            let bytes = records::encode_commit(&commit, rkyv::util::AlignedVec::new());
            store
                .log
                .insert(records::log_key(0), bytes.as_slice())
                .unwrap();
            store.meta.insert("format", STORE_FORMAT_3).unwrap();
            store.db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        assert_eq!(&*store.meta.get("format").unwrap().unwrap(), STORE_FORMAT);
        let (table, _) = recover_one(&store, &catalogue);
        assert_eq!(table.get("acme"), Some(&checkpointed));
        assert_eq!(table.get("bolt"), Some(&logged));
        assert_eq!(table.get("bolt").unwrap().holds()[&9].amount, 7);
    }

    #[test]
    fn a_corrupt_log_record_refuses_recovery_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = catalogue();
        let customer = Customer::new("acme", catalogue.plan("pro").unwrap().clone(), 5);
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            persist_and_checkpoint(&store, vec![row(&customer)]);
            store
                .log
                .insert(records::log_key(7), b"not a commit".as_slice())
                .unwrap();
            store.db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let refused = store.recover(
            &mut PriceRecovery::new(&catalogue, &Default::default(), 0),
            0,
            1,
            |_| 0,
        );
        assert!(matches!(
            refused,
            Err(StoreError::Record(RecordError::Corrupt {
                what: "commit log",
                ..
            }))
        ));
        let row = store.customers.get("acme").unwrap().unwrap();
        assert_eq!(&*row, records::encode_customer(&customer).as_slice());
        assert!(store.log.get(records::log_key(7)).unwrap().is_some());
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
    fn injected_faults_fail_writes_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let faults = StoreFaults::default();
        let store = Store::open(dir.path(), faults.clone()).unwrap();
        let mut tail = Tail::default();
        store
            .persist(
                vec![logged("a", event(1, 1))],
                PersistMode::Buffer,
                &mut tail,
            )
            .unwrap();
        faults.fail_writes(true);
        let write = Write::ForgetKey { key: [0; 16] };
        assert!(matches!(
            store.persist(vec![write], PersistMode::Buffer, &mut tail),
            Err(StoreError::InjectedFault)
        ));
        assert!(matches!(
            store.checkpoint(&mut tail, PersistMode::Buffer),
            Err(StoreError::InjectedFault)
        ));
        assert!(!tail.is_empty());
    }

    /// Customers `c0..` with a row each in every commit, and one event each per commit
    /// (`seq` = the commit's number, from 1).
    fn commits_of_many_customers(
        store: &Store,
        customers: &mut [Customer],
        commits: std::ops::Range<u64>,
        tail: &mut Tail,
    ) {
        for seq in commits {
            let mut writes = Vec::new();
            for customer in customers.iter_mut() {
                assert!(customer.set_used("tokens", seq));
                writes.push(row(customer));
                writes.push(logged(customer.id(), event(seq, seq * 1_000)));
            }
            store.persist(writes, PersistMode::Buffer, tail).unwrap();
        }
    }

    /// Every customer is back as last written, with the events `seqs` listed once each.
    fn assert_every_customer_back(
        store: &Store,
        table: &CustomerTable,
        customers: &[Customer],
        seqs: &[u64],
    ) {
        for customer in customers {
            assert_eq!(table.get(customer.id()), Some(customer));
            let listed: Vec<u64> = all_events(store, customer.id(), 0, u64::MAX)
                .iter()
                .map(|event| event.seq)
                .collect();
            assert_eq!(listed, seqs, "{}", customer.id());
        }
    }

    fn many_customers(count: usize) -> Vec<Customer> {
        let plan = catalogue().plan("pro").unwrap().clone();
        (0..count)
            .map(|i| Customer::new(format!("c{i}"), plan.clone(), 5))
            .collect()
    }

    #[test]
    fn a_checkpoint_of_many_customers_writes_every_row_and_event_and_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut customers = many_customers(1_000);
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let mut tail = Tail::default();
            commits_of_many_customers(&store, &mut customers, 1..4, &mut tail);
            // 1,000 rows and 1,000 segments: a batch of 1,024 items, then the rest with the
            // deletions.
            store.checkpoint(&mut tail, PersistMode::SyncData).unwrap();
            assert!(tail.is_empty());
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue());
        assert_eq!(recovered.log_records_replayed, 0);
        assert_eq!(recovered.clock_floor_ms, 3_000);
        assert_eq!(table.len(), customers.len());
        assert_every_customer_back(&store, &table, &customers, &[1, 2, 3]);
    }

    #[test]
    fn a_checkpoint_cut_short_is_replayed_whole_and_lists_every_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut customers = many_customers(600);
        {
            let faults = StoreFaults::default();
            let store = Store::open(dir.path(), faults.clone()).unwrap();
            let mut handed_over = Tail::default();
            commits_of_many_customers(&store, &mut customers, 1..3, &mut handed_over);
            // The committer goes on while the checkpoint runs: the replay's tail will be longer
            // than the one cut short.
            let mut later = Tail::default();
            commits_of_many_customers(&store, &mut customers, 3..5, &mut later);
            faults.crash_checkpoint_after(1);
            assert!(matches!(
                store.checkpoint(&mut handed_over, PersistMode::SyncData),
                Err(StoreError::InjectedFault)
            ));
            let listed = customers
                .iter()
                .filter(|customer| !all_events(&store, customer.id(), 0, u64::MAX).is_empty())
                .count();
            assert!(
                0 < listed && listed < customers.len(),
                "one batch of the checkpoint was written, not all: {listed} customers listed"
            );
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        let (table, recovered) = recover_one(&store, &catalogue());
        assert_eq!(recovered.log_records_replayed, 4);
        assert_eq!(table.len(), customers.len());
        assert_every_customer_back(&store, &table, &customers, &[1, 2, 3, 4]);
    }

    #[test]
    fn a_checkpoint_behind_the_log_writes_the_rest_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut customers = many_customers(600);
        let faults = StoreFaults::default();
        let store = Store::open(dir.path(), faults.clone()).unwrap();
        let mut tail = Tail::default();
        commits_of_many_customers(&store, &mut customers, 1..3, &mut tail);
        // 1,200 rows and segments: two batches unless behind, one (with the deletions) when
        // behind from the first batch's end on.
        faults.crash_checkpoint_after(1);
        store
            .checkpoint_unless_behind(&mut tail, PersistMode::Buffer, || true)
            .unwrap();
        assert!(tail.is_empty());
        for customer in &customers {
            assert_eq!(all_events(&store, customer.id(), 0, u64::MAX).len(), 2);
        }
    }
}
