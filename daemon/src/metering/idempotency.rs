//! Idempotency keys: the outcome of every applied keyed request, kept for the dedup window, so a
//! retry returns the first outcome and changes nothing. Pure and bounded; time is passed in.

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
    TopUp(TopUpOutcome),
}

#[derive(Debug)]
struct Record {
    fingerprint: u64,
    outcome: Remembered,
}

/// The keys of one shard.
#[derive(Debug)]
pub struct IdempotencyLog {
    window_ms: u64,
    records: HashMap<IdempotencyKey, Record>,
    by_expiry: VecDeque<(u64, IdempotencyKey)>,
}

impl IdempotencyLog {
    /// An empty log that remembers keys for `window_ms`.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            records: HashMap::new(),
            by_expiry: VecDeque::new(),
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

    /// Remembers the outcome of an applied keyed request.
    pub fn remember(
        &mut self,
        now_ms: u64,
        key: IdempotencyKey,
        fingerprint: u64,
        outcome: Remembered,
    ) {
        let expires_at_ms = now_ms.saturating_add(self.window_ms);
        let previous = self.records.insert(
            key,
            Record {
                fingerprint,
                outcome,
            },
        );
        assert!(
            previous.is_none(),
            "a key is remembered only after a lookup found nothing"
        );
        self.by_expiry.push_back((expires_at_ms, key));
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn purge(&mut self, now_ms: u64) {
        while let Some(&(expires_at_ms, key)) = self.by_expiry.front() {
            if expires_at_ms > now_ms {
                break;
            }
            self.by_expiry.pop_front();
            self.records.remove(&key);
        }
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
        log.remember(0, key, 1, outcome(1));
        assert_eq!(log.lookup(999, &key, 1), Ok(Some(outcome(1))));
        assert!(matches!(
            log.lookup(999, &key, 2),
            Err(TallyError::Conflict { .. })
        ));
        assert_eq!(log.lookup(1_000, &key, 2), Ok(None));
        assert!(log.is_empty());
    }
}
