//! The webhook outbox: every alert, numbered in commit order, written in the same atomic batch
//! as the change that caused it — so none is lost in a crash and none exists for a change that
//! was not persisted. Beside it, each endpoint's cursor (the last event it took) and its dead
//! letters (events given up on after the retry window).
//!
//! - `outbox`: number BE → [`StoredAlert`]; `meta/outbox_next` → the next number (never reused,
//!   also after the events before it are purged).
//! - `webhook_cursors`: endpoint id → number BE of the last event done with (delivered, skipped
//!   or dead-lettered).
//! - `webhook_failed`: `[endpoint id][0][number BE]` → [`StoredFailure`].

use std::sync::atomic::Ordering;

use fjall::{Keyspace, OwnedWriteBatch, PersistMode};
use rkyv::{Archive, Deserialize, Serialize};
use tally_protocol::codec::decode;

use super::records::{encode, RecordError};
use super::{Store, StoreError};

/// Most events one purge deletes (the rest in the next one).
const PURGE_MAX: usize = 10_000;

/// One alert as the outbox keeps it: Commet's event name and its `data` already rendered (the
/// envelope is put around it when delivered).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// Commet's event name (`balance.low`, …).
    pub event: String,
    /// The customer.
    pub customer: String,
    /// When the change happened.
    pub at_ms: u64,
    /// The event's `data`, JSON.
    pub data: Vec<u8>,
}

/// An event an endpoint never took.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredFailure {
    /// The event's outbox number.
    pub number: u64,
    /// Commet's event name.
    pub event: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the last attempt failed.
    pub last_attempt_ms: u64,
    /// Why it failed (status or transport error).
    pub reason: String,
}

/// An endpoint added through the API (`webhook_endpoints`: id → this, JSON).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct StoredEndpoint {
    /// `wh_…`.
    pub id: String,
    /// The receiver.
    pub url: String,
    /// What signatures are keyed with.
    pub secret: String,
    /// The event names it takes; `None`: every one.
    pub events: Option<Vec<String>>,
    /// The owner's note.
    pub description: Option<String>,
    /// Whether events are delivered to it.
    pub active: bool,
    /// The API version it asked for, if any.
    pub api_version: Option<String>,
    /// When it was created.
    pub created_at_ms: u64,
}

/// The outbox keyspaces and where numbering stands.
pub(super) struct Outbox {
    pub(super) events: Keyspace,
    pub(super) cursors: Keyspace,
    pub(super) failed: Keyspace,
    pub(super) endpoints: Keyspace,
}

fn decode_alert(bytes: &[u8]) -> Result<StoredAlert, RecordError> {
    decode(bytes).map_err(|e| RecordError::Corrupt {
        what: "outbox event",
        reason: e.to_string(),
    })
}

fn failure_key(endpoint: &str, number: u64) -> Vec<u8> {
    let mut key = endpoint.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

impl Store {
    /// Adds `alerts` to `batch` under the next numbers; returns the number after the last.
    pub(super) fn outbox_alerts(
        &self,
        batch: &mut OwnedWriteBatch,
        alerts: Vec<StoredAlert>,
    ) -> Option<u64> {
        if alerts.is_empty() {
            return None;
        }
        // Only the committer persists, so the numbers it takes here are consecutive.
        let count = alerts.len() as u64;
        let first = self.next_outbox.fetch_add(count, Ordering::Relaxed);
        for (offset, alert) in alerts.into_iter().enumerate() {
            let number = first + offset as u64;
            batch.insert(&self.outbox.events, number.to_be_bytes(), encode(&alert));
        }
        let next = first + count;
        batch.insert(&self.meta, "outbox_next", next.to_be_bytes());
        Some(next)
    }

    /// Tells the delivery tasks that events up to `next` (exclusive) are persisted.
    pub(super) fn outbox_persisted(&self, next: u64) {
        self.outbox_head.send_if_modified(|head| {
            let moved = next > *head;
            *head = (*head).max(next);
            moved
        });
    }

    /// Follows the outbox: the number after the last persisted event, as it moves.
    pub fn watch_outbox(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox_head.subscribe()
    }

    /// Up to `limit` events after `after` (from the first with `None`), oldest first.
    pub fn read_outbox(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, StoredAlert)>, StoreError> {
        let from = after.map_or(0, |n| n.saturating_add(1));
        let mut found = Vec::new();
        for guard in self.outbox.events.range(from.to_be_bytes()..).take(limit) {
            let (key, value) = guard.into_inner()?;
            let number =
                u64::from_be_bytes(key.as_ref().try_into().map_err(|_| RecordError::Corrupt {
                    what: "outbox key",
                    reason: format!("{} bytes, not 8", key.len()),
                })?);
            found.push((number, decode_alert(&value)?));
        }
        Ok(found)
    }

    /// Deletes the events numbered below `done` that happened before `before_ms`, in one
    /// batch; returns how many.
    pub fn purge_outbox(&self, done: u64, before_ms: u64) -> Result<usize, StoreError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut purged = 0;
        for guard in self
            .outbox
            .events
            .range(..done.to_be_bytes())
            .take(PURGE_MAX)
        {
            let (key, value) = guard.into_inner()?;
            if decode_alert(&value)?.at_ms >= before_ms {
                break;
            }
            batch.remove(&self.outbox.events, key);
            purged += 1;
        }
        if purged > 0 {
            batch.commit()?;
        }
        Ok(purged)
    }

    /// The newest `limit` events kept, newest first.
    pub fn recent_outbox(&self, limit: usize) -> Result<Vec<(u64, StoredAlert)>, StoreError> {
        let mut found = Vec::new();
        for guard in self.outbox.events.iter().rev().take(limit) {
            let (key, value) = guard.into_inner()?;
            let number = <[u8; 8]>::try_from(key.as_ref()).map_or(0, u64::from_be_bytes);
            found.push((number, decode_alert(&value)?));
        }
        Ok(found)
    }

    /// Events waiting in the outbox: from the first kept to the last written.
    pub fn outbox_next(&self) -> u64 {
        self.next_outbox.load(Ordering::Relaxed)
    }

    /// The last event `endpoint` is done with.
    pub fn webhook_cursor(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .outbox
            .cursors
            .get(endpoint)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Notes that `endpoint` is done with every event up to `number` — and, with `failure`,
    /// that it never took that one — in one batch. Not synced: after a crash an event may be
    /// delivered again (at least once), never skipped.
    pub fn webhook_done(
        &self,
        endpoint: &str,
        number: u64,
        failure: Option<&StoredFailure>,
    ) -> Result<(), StoreError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        batch.insert(&self.outbox.cursors, endpoint, number.to_be_bytes());
        if let Some(failure) = failure {
            batch.insert(
                &self.outbox.failed,
                failure_key(endpoint, number),
                encode(failure),
            );
        }
        batch.commit()?;
        Ok(())
    }

    /// The endpoints added through the API, by id.
    pub fn webhook_endpoints(&self) -> Result<Vec<StoredEndpoint>, StoreError> {
        let mut found = Vec::new();
        for guard in self.outbox.endpoints.iter() {
            let (_, value) = guard.into_inner()?;
            found.push(
                serde_json::from_slice(&value).map_err(|e| RecordError::Corrupt {
                    what: "webhook endpoint",
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(found)
    }

    /// Keeps `endpoint` (a new one, or new values of one), synced.
    pub fn put_webhook_endpoint(&self, endpoint: &StoredEndpoint) -> Result<(), StoreError> {
        let record = serde_json::to_vec(endpoint).expect("an endpoint serializes");
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.outbox.endpoints, endpoint.id.as_str(), record);
        batch.commit()?;
        Ok(())
    }

    /// Forgets endpoint `id` with its cursor, synced; `false` if there was none.
    pub fn remove_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        if self.outbox.endpoints.get(id)?.is_none() {
            return Ok(false);
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.outbox.endpoints, id);
        batch.remove(&self.outbox.cursors, id);
        batch.commit()?;
        Ok(true)
    }

    /// Starts endpoint `id` at the outbox's head: it takes the events from now on, not the
    /// ones kept for others.
    pub fn start_webhook_at_head(&self, id: &str) -> Result<(), StoreError> {
        match self.next_outbox.load(Ordering::Relaxed).checked_sub(1) {
            Some(last) => self.webhook_done(id, last, None),
            None => Ok(()),
        }
    }

    /// Event `number` of the outbox, if it is still kept.
    pub fn outbox_event(&self, number: u64) -> Result<Option<StoredAlert>, StoreError> {
        match self.outbox.events.get(number.to_be_bytes())? {
            Some(bytes) => Ok(Some(decode_alert(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Forgets `endpoint`'s dead letter of event `number` (it was delivered after all).
    pub fn forget_webhook_failure(&self, endpoint: &str, number: u64) -> Result<(), StoreError> {
        self.outbox.failed.remove(failure_key(endpoint, number))?;
        Ok(())
    }

    /// The events `endpoint` never took, oldest first.
    pub fn webhook_failures(&self, endpoint: &str) -> Result<Vec<StoredFailure>, StoreError> {
        let mut prefix = endpoint.as_bytes().to_vec();
        prefix.push(0);
        let mut found = Vec::new();
        for guard in self.outbox.failed.prefix(prefix) {
            let (_, value) = guard.into_inner()?;
            found.push(decode(&value).map_err(|e| RecordError::Corrupt {
                what: "webhook failure",
                reason: e.to_string(),
            })?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreFaults, Tail, Write};

    fn alert(customer: &str, at_ms: u64) -> Write {
        Write::Alert(StoredAlert {
            event: "balance.low".into(),
            customer: customer.into(),
            at_ms,
            data: b"{}".to_vec(),
        })
    }

    #[test]
    fn the_outbox_numbers_alerts_in_commit_order_across_restarts_and_purges_what_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let mut head = store.watch_outbox();
            let writes = vec![alert("a", 10), alert("b", 20)];
            store
                .persist(writes, PersistMode::SyncAll, &mut Tail::default())
                .unwrap();
            assert!(head.has_changed().unwrap());
            assert_eq!(*head.borrow_and_update(), 2);
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        store
            .persist(
                vec![alert("c", 30)],
                PersistMode::SyncAll,
                &mut Tail::default(),
            )
            .unwrap();
        let numbers: Vec<(u64, String)> = store
            .read_outbox(None, 10)
            .unwrap()
            .into_iter()
            .map(|(n, a)| (n, a.customer))
            .collect();
        assert_eq!(numbers, [(0, "a".into()), (1, "b".into()), (2, "c".into())]);
        assert_eq!(store.read_outbox(Some(0), 1).unwrap()[0].0, 1);

        let failure = StoredFailure {
            number: 1,
            event: "balance.low".into(),
            attempts: 9,
            last_attempt_ms: 99,
            reason: "answered 500".into(),
        };
        store.webhook_done("wh_a", 0, None).unwrap();
        store.webhook_done("wh_a", 1, Some(&failure)).unwrap();
        assert_eq!(store.webhook_cursor("wh_a").unwrap(), Some(1));
        assert_eq!(store.webhook_cursor("wh_b").unwrap(), None);
        assert_eq!(store.webhook_failures("wh_a").unwrap(), [failure]);

        // Taken by everyone up to 1 (done = 2), and older than 25 ms: 0 and 1 go, 2 stays.
        assert_eq!(store.purge_outbox(2, 25).unwrap(), 2);
        let left: Vec<u64> = store
            .read_outbox(None, 10)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, [2]);
        store
            .persist(
                vec![alert("d", 40)],
                PersistMode::SyncAll,
                &mut Tail::default(),
            )
            .unwrap();
        assert_eq!(
            store.read_outbox(Some(2), 10).unwrap()[0].0,
            3,
            "numbers are never reused"
        );
    }
}
