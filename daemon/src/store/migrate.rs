//! Upgrading an older store in place when it is opened.

use std::ops::Bound;

use fjall::{Database, Keyspace, PersistMode, Slice};

use super::records::{self, StoredSegment, STORE_FORMAT};
use super::{data_keyspace, StoreError};

/// Moves a format-2 store's events (one record each, keyspace `events`) into one-event segments,
/// a chunk per atomic batch (each event is moved exactly once, so an interrupted migration
/// resumes where it stopped), then marks the store as the current format.
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
    meta.insert("format", STORE_FORMAT)?;
    db.persist(PersistMode::SyncAll)?;
    db.delete_keyspace(events)?;
    tracing::info!(
        events = moved,
        "migrated the store from format 2 (events into segments)"
    );
    Ok(())
}
