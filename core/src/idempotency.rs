//! Idempotency keys: the outcome of every applied keyed request, kept for the dedup window, so a
//! retry returns the first outcome and changes nothing. Pure and bounded; time is passed in.
//! Forgotten keys are reported so the store can delete them too.

use std::collections::{HashMap, VecDeque};

use tally_protocol::message::{IdempotencyKey, ReportOutcome, TallyError, TopUpOutcome};

/// Most keys one shard remembers; past it keyed requests are answered `Overloaded` rather than
/// forgetting a key early (which could count a retry twice).
pub const KEYS_PER_SHARD_MAX: usize = 4_000_000;

/// The outcome a key stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Remembered {
    /// A report or a settle.
    Report(ReportOutcome),
    /// A top-up.
    TopUp(Box<TopUpOutcome>),
}

/// Everything known about one applied key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Fingerprint of the request's content; the same key with other content is a conflict.
    pub fingerprint: u64,
    /// When the key is forgotten.
    pub expires_at_ms: u64,
    /// Placement hash of what the key guards (a customer's hash or a hold id): which shard owns it.
    pub placement: u64,
    /// The first outcome.
    pub outcome: Remembered,
}

/// The keys of one shard.
#[derive(Debug)]
pub struct IdempotencyLog {
    window_ms: u64,
    records: HashMap<IdempotencyKey, KeyRecord>,
    by_expiry: VecDeque<(u64, IdempotencyKey)>,
    forgotten: Vec<IdempotencyKey>,
}

impl IdempotencyLog {
    /// An empty log that remembers keys for `window_ms`.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            records: HashMap::new(),
            by_expiry: VecDeque::new(),
            forgotten: Vec::new(),
        }
    }

    /// The first outcome of `key` if it was applied within the window; `Conflict` when the key
    /// was used for different content; `Overloaded` when a new key cannot be remembered.
    pub fn lookup(
        &mut self,
        now_ms: u64,
        key: &IdempotencyKey,
        fingerprint: u64,
    ) -> Result<Option<Remembered>, TallyError> {
        self.purge(now_ms);
        match self.records.get(key) {
            Some(record) if record.fingerprint == fingerprint => Ok(Some(record.outcome.clone())),
            Some(_) => Err(TallyError::Conflict {
                reason: format!(
                    "idempotency key {} was already used for a different request",
                    hex_key(key)
                ),
            }),
            None if self.records.len() >= KEYS_PER_SHARD_MAX => Err(TallyError::Overloaded),
            None => Ok(None),
        }
    }

    /// Remembers the outcome of an applied keyed request; returns the record to persist.
    pub fn remember(
        &mut self,
        now_ms: u64,
        key: IdempotencyKey,
        fingerprint: u64,
        placement: u64,
        outcome: Remembered,
    ) -> KeyRecord {
        let record = KeyRecord {
            fingerprint,
            expires_at_ms: now_ms.saturating_add(self.window_ms),
            placement,
            outcome,
        };
        self.restore(key, record.clone());
        record
    }

    /// Puts back a record read from the store (or just made).
    pub fn restore(&mut self, key: IdempotencyKey, record: KeyRecord) {
        self.by_expiry.push_back((record.expires_at_ms, key));
        let previous = self.records.insert(key, record);
        assert!(
            previous.is_none(),
            "a key is remembered only after a lookup found nothing"
        );
    }

    /// Keys forgotten since the last call, for the store to delete.
    pub fn drain_forgotten(&mut self) -> Vec<IdempotencyKey> {
        std::mem::take(&mut self.forgotten)
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Forgets keys whose window ended at or before `now_ms`.
    pub fn purge(&mut self, now_ms: u64) {
        // The queue is in expiry order: keys are remembered with `now + window` as time moves
        // forward, and recovery sorts it once (`sort_after_restore`).
        while let Some(&(expires_at_ms, key)) = self.by_expiry.front() {
            if expires_at_ms > now_ms {
                break;
            }
            self.by_expiry.pop_front();
            if self
                .records
                .get(&key)
                .is_some_and(|r| r.expires_at_ms == expires_at_ms)
            {
                self.records.remove(&key);
                self.forgotten.push(key);
            }
        }
    }

    /// Sorts the expiry queue after records were restored in arbitrary order.
    pub fn sort_after_restore(&mut self) {
        self.by_expiry.make_contiguous().sort_unstable();
    }
}

fn hex_key(key: &IdempotencyKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_protocol::message::Standing;

    fn outcome(seq: u64) -> Remembered {
        Remembered::Report(ReportOutcome {
            seq,
            duplicate: false,
            amount: 1,
            charged: 1,
            standing: Standing::Flag { enabled: true },
        })
    }

    #[test]
    fn a_key_is_forgotten_after_the_window_and_conflicts_inside_it() {
        let mut log = IdempotencyLog::new(1_000);
        let key = [7u8; 16];
        assert_eq!(log.lookup(0, &key, 1), Ok(None));
        log.remember(0, key, 1, 0, outcome(1));
        assert_eq!(log.lookup(999, &key, 1), Ok(Some(outcome(1))));
        assert!(matches!(
            log.lookup(999, &key, 2),
            Err(TallyError::Conflict { .. })
        ));
        assert_eq!(log.lookup(1_000, &key, 2), Ok(None));
        assert!(log.is_empty());
        assert_eq!(log.drain_forgotten(), vec![key]);
    }
}
