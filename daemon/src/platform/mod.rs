//! What Tally asks of the machine besides its own logic, in one place: the allocator
//! (`allocator`: mimalloc, large blocks on mappings of their own), giving a quiet thread's pages
//! back (`memory`), and busy-polling the server thread after work (`busy_poll`). Each is measured
//! in `docs/performance.md`; each can be turned off without changing any answer.
//!
//! The rest of the daemon touches them through two hooks: a thread runner calls [`worked`] for
//! each piece of work (a shard message, a frame read, an answer queued) and
//! [`memory::release_idle`] once it has been quiet; the poller and the quiet watches read the
//! same per-thread count ([`work_done`]).

pub mod allocator;
pub mod busy_poll;
pub mod memory;

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

/// One thread's work, as its poller and quiet watches see it: a counter bumped per piece of
/// work, and whether the poller sleeps until the next one.
#[derive(Default)]
struct Activity {
    seen: Cell<u64>,
    parked: Cell<bool>,
    wake: Notify,
}

thread_local! {
    static ACTIVITY: Rc<Activity> = Rc::default();
}

fn thread_activity() -> Rc<Activity> {
    ACTIVITY.with(Rc::clone)
}

/// Notes that the calling thread did a piece of work. Cheap: a counter, and a wake-up only for
/// a parked poller.
pub fn worked() {
    ACTIVITY.with(|activity| {
        activity.seen.set(activity.seen.get().wrapping_add(1));
        if activity.parked.replace(false) {
            activity.wake.notify_one();
        }
    });
}

/// The calling thread's work so far ([`worked`]): what a [`memory::QuietWatch`] reads, so that a
/// quiet shard beside a busy one on the same thread does not collect the busy thread's pages.
pub fn work_done() -> u64 {
    ACTIVITY.with(|activity| activity.seen.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_counted_per_thread() {
        let before = work_done();
        worked();
        worked();
        assert_eq!(work_done(), before + 2);
        let elsewhere = std::thread::spawn(|| {
            worked();
            work_done()
        });
        assert_eq!(elsewhere.join().unwrap(), 1);
        assert_eq!(work_done(), before + 2);
    }
}
