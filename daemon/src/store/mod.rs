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
//! the next commit number: one insert per commit instead of one per row and per event (inserting
//! into fjall's memtable and compacting keys spread over every customer cost ~3 µs per record on
//! this machine, most of a durable report's cost). The committer keeps what the log holds since
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
//! - `transactions`: `[len][id][number BE]` → [`Transaction`].
//! - `meta`: `format` → [`records::STORE_FORMAT`]; `clock_floor` → the newest event time
//!   checkpointed (BE), below which no shard's clock goes after a restart.

pub mod prices;
pub mod records;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};
use rkyv::util::AlignedVec;
use tally_protocol::message::{IdempotencyKey, LIST_EVENTS_MAX};

use crate::metering::billing::{Invoice, Transaction};
use crate::metering::engine::{Changes, ShardCore};
use crate::metering::idempotency::KeyRecord;
use crate::metering::table::CustomerRows;
use prices::PriceRecovery;
use records::{
    ArchivedStoredEvent, LoggedEvent, LoggedRow, RecordError, StoredCommit, StoredEvent,
    StoredSegment, SEGMENT_EVENTS_MAX, STORE_FORMAT, STORE_FORMAT_2,
};

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

/// The commit log's memtable: three checkpoints' worth ([`CHECKPOINT_BYTES`]). A log record is
/// deleted by its checkpoint about one tail after it was written, so in a memtable this size most
/// records die before it is flushed, and a flush keeps only their tombstones (lsm-tree drops a
/// value shadowed in the same flush); the log is also flushed a third as often, and each flush
/// of any keyspace has fjall fsync its journal under the lock that commits wait for. Reports at
/// 100,000/s open loop over 1,000 customers (alternating, 12 pairs): daemon-side p99 3.9–5.2 →
/// 2.5–3.5 ms, 30% fewer bytes written to the disk; 32 MiB gained less than half of that, 64 and
/// 96 MiB no more. The cost: ~10 B more per customer resident a minute after loading 1M (189
/// against 179 B, medians of 5), and up to 32 MiB more journal to replay after a crash (restarts
/// within the same spread). Fixed when the keyspace is created, like [`MEMTABLE_BYTES_MAX`].
pub const LOG_MEMTABLE_BYTES_MAX: u64 = 3 * CHECKPOINT_BYTES as u64;

/// Memtable bytes (all keyspaces) below which a quiet daemon keeps its memtables: see
/// [`Store::flush_memtables_over`]. Flushing less would only make small tables to compact.
pub const QUIET_FLUSH_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// fjall's block cache (its default is 32 MiB). The daemon serves from memory and reads the
/// store only to recover (once, in order), to list events and invoices (admin calls) and in the
/// janitor's passes over every segment key — scans that only fill the cache with blocks read
/// once (9.5 MB of it 8 s after loading 1M customers; 65 s after, past what was then the
/// janitor's first pass, the live heap was 27 MB larger with the default than with this cap).
pub const CACHE_BYTES: u64 = 8 * 1024 * 1024;

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

/// Moves a format-2 store's events (one record each, keyspace `events`) into one-event segments,
/// a chunk per atomic batch (each event is moved exactly once, so an interrupted migration
/// resumes where it stopped), then marks the store as the current format.
fn migrate_from_format_2(db: &Database, meta: &Keyspace) -> Result<(), StoreError> {
    const CHUNK: usize = 10_000;
    let events = db.keyspace("events", data_keyspace)?;
    let segments = db.keyspace("segments", data_keyspace)?;
    let mut moved = 0usize;
    // Each chunk starts after the last key moved, not over the deleted ones again.
    let mut after: Option<Slice> = None;
    loop {
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        let range = match after.take() {
            Some(key) => events.range::<Slice, _>((Bound::Excluded(key), Bound::Unbounded)),
            None => events.iter(),
        };
        for guard in range.take(CHUNK) {
            let (key, value) = guard.into_inner()?;
            after = Some(key.clone());
            let segment = StoredSegment {
                events: vec![records::decode_event(&value)?],
            };
            batch.insert(&segments, key.clone(), records::encode_segment(&segment));
            batch.remove(&events, key);
        }
        let chunk = batch.len() / 2;
        batch.commit()?;
        moved += chunk;
        if chunk < CHUNK {
            break;
        }
    }
    meta.insert("format", STORE_FORMAT)?;
    db.persist(PersistMode::SyncAll)?;
    db.delete_keyspace(events)?;
    tracing::info!(
        events = moved,
        "migrated the store from format 2 (events into segments)"
    );
    Ok(())
}

/// Creation options of every data keyspace.
fn data_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES_MAX)
}

/// Creation options of the commit log's keyspace.
fn log_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(LOG_MEMTABLE_BYTES_MAX)
}

/// Switches that make every write fail, or the next checkpoint stop part-way, for tests of the
/// failure paths at the storage boundary.
#[derive(Debug, Clone, Default)]
pub struct StoreFaults {
    failing: Arc<AtomicBool>,
    /// While `true`, every group commit waits before writing (a disk that stopped answering).
    stalled: Arc<(Mutex<bool>, std::sync::Condvar)>,
    /// Checkpoint batches still allowed before the checkpoint "crashes"; `None`: no limit.
    checkpoint_batches: Arc<Mutex<Option<usize>>>,
}

impl StoreFaults {
    /// From now on, every write fails (or succeeds again with `false`).
    pub fn fail_writes(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    /// The next checkpoint stops after writing `batches` of its batches, as a crash would, and
    /// every write fails from then on.
    pub fn crash_checkpoint_after(&self, batches: usize) {
        *self.checkpoint_batches.lock().expect("the faults' lock") = Some(batches);
    }

    /// From now on, every group commit waits before it writes, until called with `false`.
    pub fn stall_persists(&self, stall: bool) {
        let (stalled, changed) = &*self.stalled;
        *stalled.lock().expect("the faults' lock") = stall;
        changed.notify_all();
    }

    fn wait_while_stalled(&self) {
        let (stalled, changed) = &*self.stalled;
        let guard = stalled.lock().expect("the faults' lock");
        drop(
            changed
                .wait_while(guard, |stalled| *stalled)
                .expect("the faults' lock"),
        );
    }

    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Whether a checkpoint may commit its next batch.
    fn allows_checkpoint_batch(&self) -> bool {
        let mut left = self.checkpoint_batches.lock().expect("the faults' lock");
        match left.as_mut() {
            None => true,
            Some(0) => {
                *left = None;
                self.fail_writes(true);
                false
            }
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// What one [`Store::purge_events`] chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedChunk {
    /// Segments deleted.
    pub deleted: usize,
    /// Where the next chunk starts; `None` after the last key (a pass is over).
    pub next: Option<Vec<u8>>,
    /// The first event time of the oldest segment the chunk kept (none can expire before the
    /// cutoff passes it).
    pub oldest_kept_ms: Option<u64>,
}

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
    for mut event in changes.events {
        writes.push(Write::Event {
            customer: std::mem::take(&mut event.customer),
            event: records::stored_event(event),
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

/// Above this many bytes of log since the last checkpoint, the committer hands its tail to the
/// checkpoint thread. It bounds the tails in memory, and the log a restart after a crash has to
/// replay. Larger tails find more changes of the same customer to fold into one row and one
/// segment: with 100,000 customers under uniform reports (one 5-s run each), 8 / 16 / 32 MiB
/// gave 103k / 106k / 119k reports/s at p99 15.9 / 11.4 / 9.2 ms; the memory probe (1M
/// customers, one run each) read 476 B at 8 and 513 B at 32 MiB, within its run-to-run spread.
pub const CHECKPOINT_BYTES: usize = 16 * 1024 * 1024;

/// A checkpoint writes its rows and segments in about this many batches, none smaller than
/// [`CHECKPOINT_BATCH_ITEMS`] items or [`CHECKPOINT_BATCH_BYTES`] bytes, until it falls behind.
/// fjall holds its journal's lock while it writes a batch and inserts it into the memtables, and
/// also through a commit's fsync, so a commit waits behind a checkpoint's batch and each batch
/// behind the commit under way. In one batch, a checkpoint of the zipf mix's tails (100,000
/// customers) made the daemon's slowest 0.1% of durable answers wait 40–220 ms; in batches,
/// 13–22 ms in all but one of six runs (40 ms). Batches of a fixed 256 items, with no catching up, made a checkpoint of reports
/// spread over 100,000 customers ~550 batches, each waiting for a commit: 0.9–1.5 s instead of
/// 0.25–0.3 s, the committer waited for it, and reports fell from 85k to 34k/s. A floor of 256
/// items cost sustained reports over 1,000 customers ~3% (three pairs); 1,024 is within noise.
const CHECKPOINT_BATCHES: usize = 32;
const CHECKPOINT_BATCH_ITEMS: usize = 1024;
const CHECKPOINT_BATCH_BYTES: usize = 1024 * 1024;

/// The most items and bytes of one checkpoint batch, for a checkpoint of `customers` customers
/// out of a tail of `tail_bytes`: a row and (mostly) one segment per customer, and the rows and
/// segments take at most the tail's bytes.
fn checkpoint_batch_limits(customers: usize, tail_bytes: usize) -> (usize, usize) {
    (
        (2 * customers / CHECKPOINT_BATCHES).max(CHECKPOINT_BATCH_ITEMS),
        (tail_bytes / CHECKPOINT_BATCHES).max(CHECKPOINT_BATCH_BYTES),
    )
}

/// The commit-log records written since the last checkpoint. It shares their bytes with fjall's
/// memtable (a reference count, no copy), so a tail costs next to nothing until its checkpoint
/// groups it by customer. Dropping a tail loses nothing: its log records stay and are replayed
/// at the next start.
#[derive(Debug, Default)]
pub struct Tail {
    records: Vec<([u8; 8], Slice)>,
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

    fn push(&mut self, key: [u8; 8], record: Slice) {
        self.bytes += record.len();
        self.records.push((key, record));
    }
}

/// Each of `records` where [`records::access_commit`] can read it: in place when it is aligned
/// for that, else copied into `arena`.
fn readable_records<'a>(
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
struct TailCustomer<'a> {
    row: Option<&'a [u8]>,
    events: Vec<&'a ArchivedStoredEvent>,
}

/// Commit-log records (oldest first, readable in place) grouped by customer — a later row of a
/// customer replaces an earlier one, events append — and the newest event time among them.
fn group_by_customer<'a>(
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
            .cache_size(CACHE_BYTES)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        match meta.get("format")? {
            Some(format) if &*format == STORE_FORMAT => {}
            Some(format) if &*format == STORE_FORMAT_2 => migrate_from_format_2(&db, &meta)?,
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
        Ok(Store {
            commit_buffer: Mutex::new(AlignedVec::new()),
            log,
            next_log: AtomicU64::new(next_log),
            customers: db.keyspace("customers", data_keyspace)?,
            segments: db.keyspace("segments", data_keyspace)?,
            keys: db.keyspace("keys", data_keyspace)?,
            invoices: db.keyspace("invoices", data_keyspace)?,
            transactions: db.keyspace("transactions", data_keyspace)?,
            meta,
            db,
            faults,
        })
    }

    /// Every record the commit log holds, oldest first.
    fn read_log(&self) -> Result<Tail, StoreError> {
        let mut tail = Tail::default();
        for guard in self.log.iter() {
            let (key, value) = guard.into_inner()?;
            tail.push(records::log_key(records::log_number(&key)?), value);
        }
        Ok(tail)
    }

    /// Writes `tail` out — each customer's newest row, its events as segments, the clock floor —
    /// and deletes the log records it came from. The tail is empty after.
    ///
    /// Rows and segments go in about [`CHECKPOINT_BATCHES`] batches, and the deletions all in
    /// the last one, after every row and segment. A crash part-way leaves every log record of
    /// the tail, so the next start replays them from the same first record, and makes the same
    /// writes or more: a row is a customer's whole state, newest last; a segment's key is its
    /// first event, and a customer's events are cut into segments from the same first event, so
    /// a replayed segment replaces the partial one under its key (the replayed tail is the whole
    /// log recovery found, [`Recovered::log`], so it ends where the one cut short did, or later).
    /// Deleting the records in more than one batch would break that: a replay from a later first
    /// record would cut different segments.
    pub fn checkpoint(&self, tail: &mut Tail, mode: PersistMode) -> Result<(), StoreError> {
        self.checkpoint_unless_behind(tail, mode, || false)
    }

    /// [`Store::checkpoint`], but once `behind()` says so at the end of a batch, the rest goes
    /// in one batch: the checkpoints are falling behind the log, and the committer would soon
    /// wait for them rather than for a batch.
    pub fn checkpoint_unless_behind(
        &self,
        tail: &mut Tail,
        mode: PersistMode,
        behind: impl Fn() -> bool,
    ) -> Result<(), StoreError> {
        if tail.is_empty() {
            return Ok(());
        }
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        // Grouped by customer, read in place rather than decoded into owned rows and
        // events. The records the committer logged are read where fjall keeps them; only those
        // read back from disk (recovery), at any offset, are copied first — copying every tail
        // into a reused buffer kept twice the largest tail alive for good.
        let mut arena = AlignedVec::new();
        let readable = readable_records(
            tail.records.iter().map(|(_, record)| &record[..]),
            &mut arena,
        );
        let (customers, clock_floor_ms) = group_by_customer(&readable)?;
        let commit = |batch: fjall::OwnedWriteBatch| {
            if !self.faults.allows_checkpoint_batch() {
                return Err(StoreError::InjectedFault);
            }
            Ok::<_, StoreError>(batch.commit()?)
        };
        let (mut items_max, mut bytes_max) = checkpoint_batch_limits(customers.len(), tail.bytes());
        let mut batch = self.db.batch().durability(Some(mode));
        let mut batch_bytes = 0;
        for (id, customer) in customers {
            if batch.len() >= items_max || batch_bytes >= bytes_max {
                if behind() {
                    (items_max, bytes_max) = (usize::MAX, usize::MAX);
                } else {
                    commit(std::mem::replace(
                        &mut batch,
                        self.db.batch().durability(Some(mode)),
                    ))?;
                    batch_bytes = 0;
                }
            }
            if let Some(row) = customer.row {
                batch_bytes += id.len() + row.len();
                batch.insert(&self.customers, id.as_bytes(), row);
            }
            for run in customer.events.chunks(SEGMENT_EVENTS_MAX) {
                let first = run[0];
                let key = records::event_key(id, first.at_ms.to_native(), first.seq.to_native());
                let segment = StoredSegment {
                    events: run
                        .iter()
                        .map(|event| records::owned_event(event))
                        .collect(),
                };
                let segment = records::encode_segment(&segment);
                batch_bytes += key.len() + segment.len();
                batch.insert(&self.segments, key, segment);
            }
        }
        if clock_floor_ms > 0 {
            batch.insert(&self.meta, "clock_floor", clock_floor_ms.to_be_bytes());
        }
        for (key, _) in &tail.records {
            batch.remove(&self.log, *key);
        }
        commit(batch)?;
        *tail = Tail::default();
        Ok(())
    }

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
            recovered.customers[shard_of_customer(&customer.id)].push(customer);
        }
        for row in logged_rows.into_values() {
            let customer = records::decode_customer(row, prices, &mut scratch)?;
            recovered.customers[shard_of_customer(&customer.id)].push(customer);
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

    /// Roughly how many event segments are stored (cheap; for logs).
    pub fn approximate_segment_count(&self) -> usize {
        self.segments.approximate_len()
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
                Write::Invoice { key, record } => {
                    batch.insert(&self.invoices, key.as_slice(), record.as_slice());
                }
                Write::Transaction { key, record } => {
                    batch.insert(&self.transactions, key.as_slice(), record.as_slice());
                }
            }
        }
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

    /// A customer's checkpointed events from `(at_ms, seq)` = `from` up to `at_ms < to_ms`, oldest
    /// first, at most [`LIST_EVENTS_MAX`]; the flag says whether more follow. (Events still in
    /// the commit log are not seen: the router has the owning shard ask for a checkpoint first.)
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
        let prefix = records::event_prefix(customer);
        let start = records::event_key(customer, from.0, from.1);
        // The segment holding `from` may begin before it: start at the last one that begins at
        // or before `from` (every key between the prefix and `start` is this customer's).
        let begin = match self.segments.range(prefix..=start.clone()).next_back() {
            Some(guard) => guard.key()?.to_vec(),
            None => start,
        };
        let end = records::event_key(customer, to_ms, 0);
        for guard in self.segments.range(begin..end) {
            let (_, value) = guard.into_inner()?;
            for event in records::decode_segment(&value)? {
                if (event.at_ms, event.seq) < from {
                    continue;
                }
                if event.at_ms >= to_ms {
                    return Ok((events, false));
                }
                if events.len() == LIST_EVENTS_MAX {
                    return Ok((events, true));
                }
                events.push(event);
            }
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

    /// Deletes the segments whose every event was recorded before `cutoff_ms` (a segment holding
    /// a newer one waits for it: a segment spans one checkpoint, a few seconds at most) among the
    /// next `limit` segments after `cursor` (from the start when `None`).
    pub fn purge_events(
        &self,
        cutoff_ms: u64,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<PurgedChunk, StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        let range = match cursor {
            Some(after) => self.segments.range(after.to_vec()..),
            None => self.segments.iter(),
        };
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut seen = 0;
        let mut last = None;
        let mut oldest_kept_ms: Option<u64> = None;
        for guard in range {
            // The key holds the first event's time: only a segment that begins before the
            // cutoff is read for its newest.
            let (key, value) = guard.into_inner_if(|key| {
                records::segment_time(key).is_some_and(|first_ms| first_ms < cutoff_ms)
            })?;
            if cursor.is_some_and(|after| &*key == after) {
                continue;
            }
            let is_expired = match value {
                Some(value) => records::decode_segment(&value)?
                    .last()
                    .is_none_or(|event| event.at_ms < cutoff_ms),
                None => false,
            };
            if is_expired {
                batch.remove(&self.segments, key.clone());
            } else if let Some(first_ms) = records::segment_time(&key) {
                oldest_kept_ms =
                    Some(oldest_kept_ms.map_or(first_ms, |oldest| oldest.min(first_ms)));
            }
            last = Some(key.to_vec());
            seen += 1;
            if seen == limit {
                break;
            }
        }
        let deleted = batch.len();
        batch.commit()?;
        Ok(PurgedChunk {
            deleted,
            next: if seen == limit { last } else { None },
            oldest_kept_ms,
        })
    }

    /// Flushes every memtable to disk tables so the next start has no journal to replay (clean
    /// shutdown only; a crash replays the journal instead).
    pub fn flush_for_shutdown(&self) -> Result<(), StoreError> {
        self.flush_memtables()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// If the memtables hold at least `min_bytes`, flushes them to disk tables and waits for it;
    /// says whether it did. For a daemon gone quiet: its memtables (up to
    /// [`MEMTABLE_BYTES_MAX`] per keyspace) hold copies of rows and events the daemon no longer
    /// needs in memory, allocated among the bursts' short-lived buffers — until a memtable
    /// fills, which a quiet daemon never does, they keep those pages resident too.
    pub fn flush_memtables_over(&self, min_bytes: u64) -> Result<bool, StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        // `write_buffer_size` and `rotate_memtable_and_wait` are fjall's doc-hidden API (the
        // shutdown flush uses the latter too); Cargo.lock pins the version they were read from.
        if self.db.write_buffer_size() < min_bytes {
            return Ok(false);
        }
        self.flush_memtables()?;
        Ok(true)
    }

    fn flush_memtables(&self) -> Result<(), StoreError> {
        for keyspace in [
            &self.meta,
            &self.log,
            &self.customers,
            &self.segments,
            &self.keys,
            &self.invoices,
            &self.transactions,
        ] {
            keyspace.rotate_memtable_and_wait()?;
        }
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
            id: customer.id.to_string(),
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
                .insert("acme", records::encode_customer(&customer))
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
                writes.push(logged(&customer.id, event(seq, seq * 1_000)));
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
            assert_eq!(table.get(&customer.id), Some(customer));
            let listed: Vec<u64> = all_events(store, &customer.id, 0, u64::MAX)
                .iter()
                .map(|event| event.seq)
                .collect();
            assert_eq!(listed, seqs, "{}", customer.id);
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
                .filter(|customer| !all_events(&store, &customer.id, 0, u64::MAX).is_empty())
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
            assert_eq!(all_events(&store, &customer.id, 0, u64::MAX).len(), 2);
        }
    }
}
