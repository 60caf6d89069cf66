//! Busy-polling the server thread for a short while after it had work, so the next datagram or
//! released answer is picked up at once instead of after a wake-up.
//!
//! Why: an idle thread blocks in `epoll_wait`, its core halts, and waking it costs ~20–40 µs on
//! this kind of VM — a large share of a 60-µs check. While polling, the runtime asks the kernel
//! for ready sockets with a zero timeout. The cost is a core kept busy, which a small host's
//! other threads may need, so the poller steps aside for `STEP_ASIDE` whenever more threads are
//! runnable than there are cores (`/proc/loadavg`, read every `CONTENTION_CHECK_EVERY`), and
//! polls only within `[server] busy_poll_us` of the thread's last work (docs/performance.md,
//! "a server thread that does not sleep between requests").

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How long the poller stays away once other threads wait for a core (tokio's timer resolution).
const STEP_ASIDE: Duration = Duration::from_millis(1);
/// How often, while polling, the poller asks whether other threads wait for a core (a `pread`
/// of `/proc/loadavg`, ~2 µs).
const CONTENTION_CHECK_EVERY: Duration = Duration::from_micros(20);

/// What the poller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Let the runtime poll its sockets once more.
    Poll,
    /// Sleep until new work.
    Park,
    /// Other threads wait for a core: sleep for `STEP_ASIDE`.
    StepAside,
}

/// When to poll, park or step aside; time is handed in, so it is tested without sleeping.
#[derive(Debug)]
struct Poller {
    window: Duration,
    seen: u64,
    until: Instant,
    checked: Instant,
}

impl Poller {
    fn new(window: Duration, now: Instant, seen: u64) -> Poller {
        Poller {
            window,
            seen,
            until: now + window,
            checked: now,
        }
    }

    /// The next step at `now`, with the activity counter at `seen`. Only a turn without new
    /// work is spent polling, so only then is `contended` asked, at most every
    /// `CONTENTION_CHECK_EVERY` (a busy thread would pay for the question and gain nothing).
    fn next(&mut self, now: Instant, seen: u64, contended: impl FnOnce() -> bool) -> Next {
        if seen != self.seen {
            self.seen = seen;
            self.until = now + self.window;
            return Next::Poll;
        }
        if now >= self.until {
            return Next::Park;
        }
        if now.saturating_duration_since(self.checked) >= CONTENTION_CHECK_EVERY {
            self.checked = now;
            if contended() {
                return Next::StepAside;
            }
        }
        Next::Poll
    }

    /// Back from parking or stepping aside: the window starts again at `now`.
    fn resumed(&mut self, now: Instant, seen: u64) {
        *self = Poller::new(self.window, now, seen);
    }
}

/// The kernel's count of runnable threads, against the cores this process may use.
struct RunQueue {
    loadavg: File,
    cores: usize,
}

impl RunQueue {
    fn open() -> std::io::Result<RunQueue> {
        Ok(RunQueue {
            loadavg: File::open("/proc/loadavg")?,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }

    /// Whether more threads are runnable than there are cores (unreadable: no).
    fn contended(&self) -> bool {
        let mut text = [0u8; 128];
        let read = self.loadavg.read_at(&mut text, 0).unwrap_or(0);
        runnable_threads(&text[..read]).is_some_and(|runnable| runnable > self.cores)
    }
}

/// The running count in `/proc/loadavg` ("0.12 0.03 0.01 3/345 678": the fourth field is
/// runnable/total threads).
fn runnable_threads(loadavg: &[u8]) -> Option<usize> {
    let field = loadavg.split(|b| *b == b' ').nth(3)?;
    let runnable = field.split(|b| *b == b'/').next()?;
    std::str::from_utf8(runnable).ok()?.parse().ok()
}

/// Keeps this thread's runtime polling for `window` after each piece of work, stepping aside
/// while other threads wait for a core. Runs until the runtime ends. Without `/proc/loadavg`
/// it does not poll at all: it could not tell when it takes a core someone else needs.
pub async fn poll_while_busy(window: Duration) {
    let run_queue = match RunQueue::open() {
        Ok(run_queue) => run_queue,
        Err(e) => {
            tracing::info!(error = %e, "not busy-polling: /proc/loadavg is unreadable");
            return;
        }
    };
    let activity = super::thread_activity();
    let mut poller = Poller::new(window, Instant::now(), activity.seen.get());
    loop {
        match poller.next(Instant::now(), activity.seen.get(), || {
            run_queue.contended()
        }) {
            // tokio defers a yielded task until it has polled its sockets (without blocking).
            Next::Poll => tokio::task::yield_now().await,
            Next::Park => {
                activity.parked.set(true);
                activity.wake.notified().await;
                poller.resumed(Instant::now(), activity.seen.get());
            }
            Next::StepAside => {
                tokio::time::sleep(STEP_ASIDE).await;
                poller.resumed(Instant::now(), activity.seen.get());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const WINDOW: Duration = Duration::from_micros(300);

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    #[test]
    fn it_polls_within_the_window_after_work_and_parks_after_it() {
        let start = Instant::now();
        let mut poller = Poller::new(WINDOW, start, 7);
        assert_eq!(poller.next(start + us(10), 7, || false), Next::Poll);
        assert_eq!(poller.next(start + us(299), 7, || false), Next::Poll);
        assert_eq!(poller.next(start + us(300), 7, || false), Next::Park);
    }

    #[test]
    fn new_work_starts_the_window_again() {
        let start = Instant::now();
        let mut poller = Poller::new(WINDOW, start, 0);
        assert_eq!(poller.next(start + us(250), 1, || false), Next::Poll);
        assert_eq!(poller.next(start + us(500), 1, || false), Next::Poll);
        assert_eq!(poller.next(start + us(550), 1, || false), Next::Park);
        poller.resumed(start + us(2_000), 2);
        assert_eq!(poller.next(start + us(2_200), 2, || false), Next::Poll);
        assert_eq!(poller.next(start + us(2_300), 2, || false), Next::Park);
    }

    #[test]
    fn it_steps_aside_when_threads_wait_for_a_core_and_asks_only_every_so_often() {
        let start = Instant::now();
        let mut poller = Poller::new(WINDOW, start, 0);
        let asked = Cell::new(0);
        let contended = || {
            asked.set(asked.get() + 1);
            true
        };
        assert_eq!(poller.next(start + us(5), 0, contended), Next::Poll);
        assert_eq!(asked.get(), 0, "asked before 20 µs passed");
        assert_eq!(poller.next(start + us(20), 0, contended), Next::StepAside);
        assert_eq!(asked.get(), 1);
        assert_eq!(poller.next(start + us(30), 0, contended), Next::Poll);
        assert_eq!(asked.get(), 1);
        // A turn with new work is not spent polling: nothing to ask.
        assert_eq!(poller.next(start + us(60), 1, contended), Next::Poll);
        assert_eq!(asked.get(), 1);
        assert_eq!(poller.next(start + us(61), 1, contended), Next::StepAside);
        assert_eq!(asked.get(), 2);
        // Past the window it parks without asking.
        assert_eq!(poller.next(start + us(400), 1, contended), Next::Park);
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn the_runnable_count_is_read_from_loadavg() {
        assert_eq!(runnable_threads(b"0.12 0.03 0.01 3/345 678\n"), Some(3));
        assert_eq!(runnable_threads(b"1.31 1.47 1.27 12/107 18377"), Some(12));
        assert_eq!(runnable_threads(b"0.12 0.03"), None);
        assert_eq!(runnable_threads(b"a b c x/y z"), None);
        assert_eq!(runnable_threads(b""), None);
    }

    #[test]
    fn work_wakes_a_parked_poller_and_only_a_parked_one() {
        let activity = crate::platform::thread_activity();
        let before = activity.seen.get();
        crate::platform::worked();
        assert_eq!(activity.seen.get(), before + 1);
        assert!(!activity.parked.get());
        activity.parked.set(true);
        crate::platform::worked();
        assert!(!activity.parked.get(), "the wake-up clears the flag");
        // The wake-up was stored for the poller's next wait (tokio's Notify keeps one permit).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), activity.wake.notified())
                .await
                .expect("the stored wake-up");
            // Work while the poller is not parked stores no wake-up.
            crate::platform::worked();
            let waited = tokio::time::timeout(Duration::ZERO, activity.wake.notified()).await;
            assert!(
                waited.is_err(),
                "a wake-up for a poller that was not parked"
            );
        });
    }
}
