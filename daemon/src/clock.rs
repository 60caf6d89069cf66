//! Injected time. The engine never reads the system clock; the shard asks a `Clock`, and tests
//! hand in a [`ManualClock`] they move by hand, so hold expiry and periods are testable without
//! sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is after 1970")
            .as_millis() as u64
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock stopped at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the clock.
    pub fn set_ms(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The sandbox's test clock: another clock moved forward by an offset that only grows, so a
/// product can close a billing period from its SDK without waiting a month.
pub struct TestClock {
    inner: Arc<dyn Clock>,
    offset_ms: AtomicU64,
}

impl TestClock {
    /// `inner`, not moved yet.
    pub fn new(inner: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            offset_ms: AtomicU64::new(0),
        }
    }

    /// Moves time forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// How far time has been moved.
    pub fn offset_ms(&self) -> u64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms().saturating_add(self.offset_ms())
    }
}

/// A clock that never goes back: it answers the newest time it has seen (or `floor_ms`) when the
/// wall clock steps backwards. One customer's events then stay in time order — stored segments
/// and event listings rely on it — and a period, once closed, stays closed.
#[derive(Debug)]
pub struct NeverBackwards<C: ?Sized> {
    latest: AtomicU64,
    inner: Arc<C>,
}

impl<C: Clock + ?Sized> NeverBackwards<C> {
    /// `inner`, never earlier than `floor_ms`.
    pub fn new(inner: Arc<C>, floor_ms: u64) -> Self {
        Self {
            latest: AtomicU64::new(floor_ms),
            inner,
        }
    }
}

impl<C: Clock + ?Sized> Clock for NeverBackwards<C> {
    fn now_ms(&self) -> u64 {
        let now = self.inner.now_ms();
        now.max(self.latest.fetch_max(now, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_clock_adds_what_it_was_moved() {
        let wall = Arc::new(ManualClock::new(1_000));
        let clock = TestClock::new(wall.clone());
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance_ms(500);
        wall.advance_ms(1);
        assert_eq!((clock.now_ms(), clock.offset_ms()), (1_501, 500));
    }

    #[test]
    fn never_backwards_holds_the_newest_time_and_the_floor() {
        let wall = Arc::new(ManualClock::new(1_000));
        let clock = NeverBackwards::new(wall.clone(), 1_500);
        assert_eq!(clock.now_ms(), 1_500);
        wall.set_ms(2_000);
        assert_eq!(clock.now_ms(), 2_000);
        wall.set_ms(1_200);
        assert_eq!(clock.now_ms(), 2_000);
        wall.set_ms(2_001);
        assert_eq!(clock.now_ms(), 2_001);
    }
}
