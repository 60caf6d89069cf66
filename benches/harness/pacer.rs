//! Releases open-loop requests close to their intended times. tokio's timer fires on 1-ms ticks,
//! so at 100,000 requests/s the harness released ~100 requests at once every millisecond: the
//! daemon saw clumps rather than a fixed arrival rate, committed each clump as one group and
//! answered it as one (the last of a clump waits for all before it, at both ends). Here one
//! thread sleeps until the earliest due time and wakes the tasks due within the next [`GRAIN`]:
//! requests go out up to 100 µs early, or late by the OS's sleep precision (tens of µs).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How far ahead of its time a request may be released: what is due within it goes out in one
/// wake-up. Releasing each request on its own (every 10 µs at 100,000/s) cost the pacer ~0.2
/// core and the client and server thread as much again in wake-ups, on a machine of 2 cores
/// that the daemon shares.
const GRAIN: Duration = Duration::from_micros(100);

/// The pacing thread and the times it waits for.
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Schedule>,
    /// Signalled when an earlier due time is added, or on stop.
    changed: Condvar,
}

/// Waiting tasks by due time.
#[derive(Default)]
struct Schedule {
    waiting: BinaryHeap<Due>,
    stopping: bool,
}

/// One waiting task; the heap's top is the earliest.
struct Due {
    at: Instant,
    waker: Waker,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl Schedule {
    /// Takes the wakers due at `now`, earliest first.
    fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while self.waiting.peek().is_some_and(|next| next.at <= now) {
            due.extend(self.waiting.pop().map(|d| d.waker));
        }
        due
    }
}

impl Pacer {
    /// Starts the pacing thread.
    pub fn start() -> Pacer {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || pace(&shared))
                .expect("spawning the pacer thread")
        };
        Pacer {
            shared,
            thread: Some(thread),
        }
    }

    /// Completes at `at`, or up to [`GRAIN`] before it (at once if it has passed).
    pub fn until(&self, at: Instant) -> Until<'_> {
        Until {
            pacer: self,
            at,
            is_registered: false,
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.state.lock().expect("pacer lock").stopping = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pace(shared: &Shared) {
    let mut schedule = shared.state.lock().expect("pacer lock");
    // Whatever is read here (a stop, a new earliest time) is read under the lock the wait below
    // gives up: a signal sent while the wake-ups ran unlocked is not lost.
    while !schedule.stopping {
        let due = schedule.take_due(Instant::now() + GRAIN);
        if !due.is_empty() {
            drop(schedule);
            due.into_iter().for_each(Waker::wake);
            schedule = shared.state.lock().expect("pacer lock");
            continue;
        }
        let next = schedule.waiting.peek().map(|next| next.at);
        schedule = match next {
            None => shared.changed.wait(schedule).expect("pacer lock"),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now() + GRAIN);
                shared
                    .changed
                    .wait_timeout(schedule, wait.max(GRAIN))
                    .expect("pacer lock")
                    .0
            }
        };
    }
}

/// A wait for a due time ([`Pacer::until`]).
pub struct Until<'a> {
    pacer: &'a Pacer,
    at: Instant,
    is_registered: bool,
}

impl Future for Until<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Polled again once registered: the pacer released it (up to GRAIN early).
        if self.is_registered || Instant::now() >= self.at {
            return Poll::Ready(());
        }
        self.is_registered = true;
        let shared = &self.pacer.shared;
        let mut schedule = shared.state.lock().expect("pacer lock");
        let is_earliest = schedule.waiting.peek().is_none_or(|next| self.at < next.at);
        schedule.waiting.push(Due {
            at: self.at,
            waker: cx.waker().clone(),
        });
        drop(schedule);
        if is_earliest {
            shared.changed.notify_one();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
        }
    }

    #[test]
    fn takes_what_is_due_and_leaves_the_rest() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        for ms in [30, 10, 20, 10] {
            schedule.waiting.push(Due {
                at: t0 + Duration::from_millis(ms),
                waker: Waker::from(woken.clone()),
            });
        }
        assert!(schedule.take_due(t0 + Duration::from_millis(5)).is_empty());
        let due = schedule.take_due(t0 + Duration::from_millis(20));
        assert_eq!(due.len(), 3);
        assert_eq!(
            schedule.waiting.peek().map(|next| next.at),
            Some(t0 + Duration::from_millis(30))
        );
        due.into_iter().for_each(Waker::wake);
        assert_eq!(woken.0.load(AtomicOrdering::SeqCst), 3);
        assert_eq!(schedule.take_due(t0 + Duration::from_millis(30)).len(), 1);
        assert!(schedule.waiting.is_empty());
    }

    #[test]
    fn the_pacer_wakes_a_waiting_task_whose_next_poll_completes_it() {
        let pacer = Pacer::start();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        // A time that has passed completes at once, leaving nothing to wake.
        assert!(Pin::new(&mut pacer.until(Instant::now()))
            .poll(&mut cx)
            .is_ready());
        assert!(pacer.shared.state.lock().unwrap().waiting.is_empty());
        // Due within a grain: the pacer thread wakes it (a bound turns a lost wake-up into a
        // failure, not a hang; it takes well under a millisecond).
        let mut soon = pacer.until(Instant::now() + GRAIN / 2);
        assert!(Pin::new(&mut soon).poll(&mut cx).is_pending());
        let bound = Instant::now() + Duration::from_secs(10);
        while woken.0.load(AtomicOrdering::SeqCst) == 0 {
            assert!(Instant::now() < bound, "the pacer never woke the task");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(Pin::new(&mut soon).poll(&mut cx).is_ready());
        // Released up to a grain early, a wait completes on the poll after its wake-up whatever
        // the clock says (it used to wait for its exact time and was never woken again).
        let mut later = pacer.until(Instant::now() + Duration::from_secs(3_600));
        assert!(Pin::new(&mut later).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut later).poll(&mut cx).is_ready());
        drop(pacer);
    }
}
