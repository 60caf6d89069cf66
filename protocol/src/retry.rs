//! When and how long the client waits before retrying an `Overloaded` answer, and between
//! attempts to reconnect: exponential backoff with jitter, so clients that were refused together
//! do not come back together.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Retries of requests the daemon answered `Overloaded` (nothing was applied). Only requests
/// that are safe to repeat are retried (see [`crate::message::Request::is_idempotent`]); the
/// others surface `Overloaded` to the caller at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 turns retrying off.
    pub retries: u32,
    /// The first delay's upper bound; each retry doubles it.
    pub base_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four retries, 2, 4, 8, 16 ms at most: a shard drains thousands of requests in that time.
    fn default() -> Self {
        Self {
            retries: 4,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// No retries: every `Overloaded` reaches the caller.
    pub const NONE: RetryPolicy = RetryPolicy {
        retries: 0,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The wait before retry number `retry` (0-based): uniformly between half and all of
    /// `min(max_delay, base_delay × 2^retry)`, picked by `random`.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        backoff(self.base_delay, self.max_delay, retry, random)
    }
}

/// How a client reconnects after losing its connection (a daemon restart, a network fault, a
/// `Goodbye(ShuttingDown)`): the first attempt at once, then with backoff and jitter until it
/// connects or the client is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The wait before the second attempt; each later one doubles it.
    pub base_delay: Duration,
    /// No wait between attempts is longer than this.
    pub max_delay: Duration,
    /// How long a call made while the client reconnects waits for the connection before it
    /// fails with the client's `Error::Connect`.
    pub call_wait: Duration,
}

impl Default for ReconnectPolicy {
    /// 50 ms, doubling to 2 s between attempts; calls wait up to 10 s (a restart takes ~1–3 s).
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            call_wait: Duration::from_secs(10),
        }
    }
}

impl ReconnectPolicy {
    /// The wait after failed attempt number `attempt` (0-based), picked by `random`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        backoff(self.base_delay, self.max_delay, attempt, random)
    }
}

/// Uniformly between half and all of `min(max, base × 2^n)`, picked by `random`: exponential
/// backoff with jitter, so clients refused together do not come back together.
fn backoff(base: Duration, max: Duration, n: u32, random: u64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << n.min(20)).min(max);
    let ceiling_ns = ceiling.as_nanos() as u64;
    let half = ceiling_ns / 2;
    Duration::from_nanos(half + random % (ceiling_ns - half + 1))
}

/// A random number for jitter, without a dependency: the standard library seeds every
/// `RandomState` from the OS.
pub fn jitter_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let policy = RetryPolicy {
            retries: 8,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(10),
        };
        let top: Vec<u64> = (0..5)
            .map(|retry| policy.delay(retry, u64::MAX).as_millis() as u64)
            .collect();
        // The largest pick of each ceiling: 2, 4, 8, then the 10 ms cap.
        assert!(top.iter().zip([2, 4, 8, 10, 10]).all(|(d, c)| *d <= c));
        assert_eq!(policy.delay(0, 0), Duration::from_millis(1));
        assert_eq!(policy.delay(10, 0), Duration::from_millis(5));
    }

    proptest! {
        #[test]
        fn every_delay_lies_between_half_and_all_of_its_ceiling(retry in 0u32..64, random: u64) {
            let policy = RetryPolicy::default();
            let ceiling = policy
                .base_delay
                .saturating_mul(1u32 << retry.min(20))
                .min(policy.max_delay);
            let delay = policy.delay(retry, random);
            prop_assert!(delay <= ceiling);
            prop_assert!(delay >= ceiling / 2);
        }
    }

    #[test]
    fn jitter_seeds_differ() {
        assert_ne!(jitter_seed(), jitter_seed());
    }
}
