//! The janitor thread: deletes usage events past their retention (whole segments), a bounded
//! chunk at a time, so the event store stays as large as configured and no more. It runs beside
//! the committer (segments are immutable once checkpointed, so the two never touch the same key)
//! and never on a thread that serves requests. A pass reads every segment key, so it makes one
//! only when a segment can have expired ([`PassSchedule`]), and at least once an hour.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::Clock;
use crate::committer::StoreHealth;
use crate::platform::memory;
use crate::store::Store;

/// Pause between chunks.
pub const JANITOR_INTERVAL: Duration = Duration::from_millis(200);
/// The shortest pause after a pass over every segment (a segment straddling the cutoff expires
/// within a checkpoint's few seconds of it; retention is counted in days), and after an error.
pub const JANITOR_PASS_INTERVAL: Duration = Duration::from_secs(60);
/// The longest pause between passes, whatever the schedule says (see [`PassSchedule`]). A pass
/// over 3M segment keys is 300 chunks, a minute of pauses alone; passes back to back cost ~7%
/// of a core under a sustained write load, and each refills fjall's block cache.
pub const JANITOR_PASS_INTERVAL_MAX: Duration = Duration::from_secs(3_600);
/// Event segments examined per chunk.
pub const JANITOR_KEYS_PER_CHUNK: usize = 10_000;

/// When the next pass over every segment is worth making. A pass learns the first event time of
/// the oldest segment it kept: nothing it kept can expire before the cutoff passes that time.
/// Segments checkpointed during the pass behind its cursor hold events from about its start on
/// (at most a checkpoint older), so the pass's start bounds them too. With months of retention
/// that is a pass an hour ([`JANITOR_PASS_INTERVAL_MAX`], which also catches a segment whose
/// events waited longer in the commit log) instead of one a minute.
#[derive(Debug)]
pub struct PassSchedule {
    retention_ms: u64,
    /// Clock time from which the next pass may start.
    next_pass_ms: u64,
    /// The pass under way: when it started, and the oldest kept segment's first event so far.
    pass: Option<(u64, u64)>,
}

impl PassSchedule {
    /// A schedule whose first pass is due at once.
    pub fn new(retention_ms: u64) -> Self {
        Self {
            retention_ms,
            next_pass_ms: 0,
            pass: None,
        }
    }

    /// Whether a chunk should be examined now: a pass is under way or due.
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.pass.is_some() || now_ms >= self.next_pass_ms
    }

    /// Notes a chunk examined at `now_ms` (the first of a pass starts it) that kept segments
    /// beginning at `oldest_kept_ms` at the earliest.
    pub fn examined(&mut self, now_ms: u64, oldest_kept_ms: Option<u64>) {
        let (_, oldest) = self.pass.get_or_insert((now_ms, now_ms));
        if let Some(kept) = oldest_kept_ms {
            *oldest = (*oldest).min(kept);
        }
    }

    /// Ends the pass at `now_ms` and schedules the next.
    pub fn finish_pass(&mut self, now_ms: u64) {
        let oldest = self.pass.take().map_or(now_ms, |(_, oldest)| oldest);
        let latest = now_ms.saturating_add(JANITOR_PASS_INTERVAL_MAX.as_millis() as u64);
        self.next_pass_ms = oldest.saturating_add(self.retention_ms).min(latest);
    }

    /// How long to wait before looking again at `now_ms` (between passes).
    pub fn pause(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.next_pass_ms.saturating_sub(now_ms))
            .clamp(JANITOR_PASS_INTERVAL, JANITOR_PASS_INTERVAL_MAX)
    }
}

/// The running janitor; stop it before dropping the store.
pub struct Janitor {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Janitor {
    /// Starts deleting events older than `retention_ms` before the clock's now.
    pub fn start(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        retention_ms: u64,
        health: StoreHealth,
    ) -> Janitor {
        let (stop, stopped) = channel();
        let thread = std::thread::Builder::new()
            .name("tallyd-janitor".into())
            .spawn(move || {
                let mut schedule = PassSchedule::new(retention_ms);
                let mut cursor: Option<Vec<u8>> = None;
                let mut pause = JANITOR_INTERVAL;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(pause) {
                    if health.failure().is_some() {
                        continue;
                    }
                    let now_ms = clock.now_ms();
                    if !schedule.is_due(now_ms) {
                        pause = schedule.pause(now_ms);
                        continue;
                    }
                    let cutoff_ms = now_ms.saturating_sub(retention_ms);
                    match store.purge_events(cutoff_ms, cursor.as_deref(), JANITOR_KEYS_PER_CHUNK) {
                        Ok(chunk) => {
                            if chunk.deleted > 0 {
                                tracing::debug!(
                                    deleted = chunk.deleted,
                                    "deleted events past their retention"
                                );
                            }
                            schedule.examined(now_ms, chunk.oldest_kept_ms);
                            cursor = chunk.next;
                            pause = if cursor.is_some() {
                                JANITOR_INTERVAL
                            } else {
                                schedule.finish_pass(now_ms);
                                // Its key scans' pages go back until the next pass.
                                memory::release_idle();
                                schedule.pause(now_ms)
                            };
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "deleting old events failed; will retry");
                            pause = JANITOR_PASS_INTERVAL;
                        }
                    }
                }
            })
            .expect("spawning the janitor thread");
        Janitor { stop, thread }
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    const HOUR_MS: u64 = 3_600_000;

    fn one_pass(schedule: &mut PassSchedule, now_ms: u64, chunks: &[Option<u64>]) {
        assert!(schedule.is_due(now_ms));
        for kept in chunks {
            schedule.examined(now_ms, *kept);
        }
        schedule.finish_pass(now_ms);
    }

    #[test]
    fn a_pass_is_due_at_start_and_then_when_its_oldest_kept_segment_can_expire() {
        let retention_ms = 30 * DAY_MS;
        let start_ms = 1_000 * DAY_MS;
        let mut schedule = PassSchedule::new(retention_ms);
        // Kept segments begun 29 days 23 hours ago: the next pass in an hour, not before.
        let oldest_ms = start_ms - retention_ms + HOUR_MS;
        one_pass(
            &mut schedule,
            start_ms,
            &[None, Some(oldest_ms + 5), Some(oldest_ms)],
        );
        assert!(!schedule.is_due(start_ms + HOUR_MS - 1));
        assert!(schedule.is_due(start_ms + HOUR_MS));
        assert_eq!(schedule.pause(start_ms), JANITOR_PASS_INTERVAL_MAX);
        // Ten minutes until the oldest can expire: wait those.
        let now_ms = start_ms + 50 * 60_000;
        assert_eq!(schedule.pause(now_ms), Duration::from_secs(600));
    }

    #[test]
    fn with_long_retention_a_pass_is_made_once_an_hour_not_once_a_minute() {
        let mut schedule = PassSchedule::new(400 * DAY_MS);
        let start_ms = 1_000 * DAY_MS;
        // Nothing stored, or only recent segments: nothing can expire for months.
        one_pass(&mut schedule, start_ms, &[None]);
        assert_eq!(schedule.pause(start_ms), JANITOR_PASS_INTERVAL_MAX);
        assert!(!schedule.is_due(start_ms + 59 * 60_000));
        assert!(schedule.is_due(start_ms + HOUR_MS));
        one_pass(&mut schedule, start_ms + HOUR_MS, &[Some(start_ms)]);
        assert!(!schedule.is_due(start_ms + 2 * HOUR_MS - 1));
        assert!(schedule.is_due(start_ms + 2 * HOUR_MS));
    }

    #[test]
    fn segments_past_the_cutoff_still_kept_bring_the_next_pass_a_minute_later() {
        let retention_ms = 30 * DAY_MS;
        let now_ms = 1_000 * DAY_MS;
        let mut schedule = PassSchedule::new(retention_ms);
        // A segment straddling the cutoff (begun before it, newest event after) was kept.
        one_pass(&mut schedule, now_ms, &[Some(now_ms - retention_ms - 10)]);
        assert!(schedule.is_due(now_ms));
        assert_eq!(schedule.pause(now_ms), JANITOR_PASS_INTERVAL);
    }

    #[test]
    fn a_pass_under_way_stays_due_and_its_start_bounds_the_next() {
        let retention_ms = HOUR_MS / 2;
        let start_ms = 1_000 * DAY_MS;
        let mut schedule = PassSchedule::new(retention_ms);
        schedule.examined(start_ms, Some(start_ms + 5 * HOUR_MS));
        assert!(schedule.is_due(start_ms), "mid-pass");
        // Segments written behind the cursor began at about the pass's start, not later.
        schedule.finish_pass(start_ms + 60_000);
        assert!(!schedule.is_due(start_ms + retention_ms - 1));
        assert!(schedule.is_due(start_ms + retention_ms));
    }
}
