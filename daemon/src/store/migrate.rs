//! Upgrading an older store in place when it is opened.

use std::ops::Bound;

use fjall::{Database, Keyspace, PersistMode, Slice};

use super::records::{self, StoredCommit, StoredSegment, STORE_FORMAT, STORE_FORMAT_3};
use super::{data_keyspace, StoreError};

/// Moves a format-2 store's events (one record each, keyspace `events`) into one-event segments,
/// a chunk per atomic batch (each event is moved exactly once, so an interrupted migration
/// resumes where it stopped), then marks the store as format 3 (which is upgraded next).
pub(super) fn migrate_from_format_2(db: &Database, meta: &Keyspace) -> Result<(), StoreError> {
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
    meta.insert("format", STORE_FORMAT_3)?;
    db.persist(PersistMode::SyncAll)?;
    db.delete_keyspace(events)?;
    tracing::info!(
        events = moved,
        "migrated the store from format 2 (events into segments)"
    );
    Ok(())
}

/// Rewrites a format-3 store's customer rows — in `customers` and inside the commit log's
/// records — in the current format, in one atomic batch with the new format mark: a crash
/// leaves the store wholly format 3 or wholly current. Rows are one per customer (the log is
/// bounded by checkpoints), so one batch holds them.
pub(super) fn migrate_from_format_3(db: &Database, meta: &Keyspace) -> Result<(), StoreError> {
    let customers = db.keyspace("customers", data_keyspace)?;
    let log = db.keyspace("log", super::log_keyspace)?;
    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
    let mut rows = 0usize;
    for guard in customers.iter() {
        let (key, value) = guard.into_inner()?;
        batch.insert(&customers, key, records::upgrade_customer_row_v3(&value)?);
        rows += 1;
    }
    let mut arena = rkyv::util::AlignedVec::<16>::new();
    for guard in log.iter() {
        let (key, value) = guard.into_inner()?;
        arena.clear();
        arena.extend_from_slice(&value);
        let old = records::access_commit(&arena)?;
        let mut commit: StoredCommit = rkyv::deserialize::<StoredCommit, rkyv::rancor::Error>(old)
            .map_err(|e| records::RecordError::Corrupt {
                what: "commit log",
                reason: e.to_string(),
            })?;
        for row in &mut commit.customers {
            row.record = records::upgrade_customer_row_v3(&row.record)?;
            rows += 1;
        }
        let bytes = records::encode_commit(&commit, rkyv::util::AlignedVec::new());
        batch.insert(&log, key, bytes.as_slice());
    }
    batch.insert(meta, "format", STORE_FORMAT);
    batch.commit()?;
    db.persist(PersistMode::SyncAll)?;
    tracing::info!(
        rows,
        "migrated the store from format 3 (holds remember model requests)"
    );
    Ok(())
}
