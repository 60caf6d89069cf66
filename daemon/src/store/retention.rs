//! Event retention: deleting whole segments past the retention cutoff, a bounded chunk at a time
//! (the janitor calls it; segments are immutable once checkpointed).

use fjall::PersistMode;

use super::records;
use super::{Store, StoreError};

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

impl Store {
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
}
