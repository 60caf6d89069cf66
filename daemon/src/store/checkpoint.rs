//! Checkpoints: a tail's records written out — each customer's newest row into `customers`, its
//! events as segments — in small batches so commits get through, then the log records deleted
//! in one last batch (a crash part-way keeps them all, and the replay rewrites the same keys).

use fjall::PersistMode;
use rkyv::util::AlignedVec;

use super::commit_log::{group_by_customer, readable_records, Tail};
use super::records::{self, StoredSegment, SEGMENT_EVENTS_MAX};
use super::{Store, StoreError};

/// Above this many bytes of log since the last checkpoint, the committer hands its tail to the
/// checkpoint thread: it bounds the tails in memory and the log to replay after a crash, and a
/// larger tail folds more changes of a customer into one row (docs/performance.md, checkpoints).
pub const CHECKPOINT_BYTES: usize = 16 * 1024 * 1024;

/// A checkpoint writes its rows and segments in about this many batches, none smaller than
/// [`CHECKPOINT_BATCH_ITEMS`] items or [`CHECKPOINT_BATCH_BYTES`] bytes, until it falls behind:
/// fjall holds its journal's lock through a batch and through a commit's fsync, so one big batch
/// stalls commits and many small ones each wait for a commit (docs/performance.md, "checkpoints
/// that let commits through").
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

impl Store {
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
}
