//! Giving freed memory back to the OS when a thread goes quiet.
//!
//! mimalloc (the allocator `tallyd` installs) returns a thread's free pages to the OS only when
//! that same thread later allocates, frees or asks it to collect. A thread that goes quiet after
//! a burst — the server thread after a bulk load, the committer, the checkpointer, the janitor
//! after a pass — would keep its pages resident for as long as it stays quiet. So each of them
//! calls [`release_idle`] once it has been quiet for [`QUIET_AFTER`] (the server thread at each
//! shard sweep that found nothing handled on the thread since the last). A busy thread never
//! calls it: its pages are reused, and purging them would only fault them back in.
//!
//! What `release_idle` does is installed by the process that chose the allocator
//! ([`configure_for_mimalloc`]); without one it does nothing (tests, other allocators).
//!
//! The same call turns transparent huge pages off for the process: a 2 MiB page stays resident
//! whole however little of it is used, and `khugepaged` collapsed sparse ranges back while the
//! daemon sat idle (docs/performance.md, "a quiet daemon's memory").

use std::sync::mpsc::{Receiver, RecvError, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a thread waits for work before it gives its free pages back.
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Gives the calling thread's free pages back, if the process installed a way to.
pub fn release_idle() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}

/// For processes whose `#[global_allocator]` is [`super::allocator::TallyAllocator`] (mimalloc
/// below its large blocks): makes [`release_idle`] ask mimalloc to collect the calling thread's
/// heap (without forcing: pages still in use stay) and unmap the freed large mappings kept for
/// reuse, and turns transparent huge pages off for the process (call it first thing in `main`).
/// Fails only if the kernel refuses the latter (then memory is as before, nothing else).
pub fn configure_for_mimalloc() -> std::io::Result<()> {
    // A second call (a harness starting several daemons) keeps the first: the same fn.
    let _ = RELEASE.set(mimalloc_collect);
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory we own.
    let status = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// The mimalloc crate links libmimalloc but exposes `mi_collect` only with its `extended` feature
// (and one more dependency); the symbol is there either way.
use mimalloc as _;
extern "C" {
    fn mi_collect(force: bool);
}

fn mimalloc_collect() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(false) }
    super::allocator::release_cached();
}

/// The next message on `channel`; if none comes within [`QUIET_AFTER`], gives the thread's free
/// pages back first and then waits as long as it takes.
pub fn recv_releasing_when_quiet<T>(channel: &Receiver<T>) -> Result<T, RecvError> {
    recv_or_when_quiet(channel, QUIET_AFTER, release_idle)
}

/// The next message on `channel`; if none comes within `quiet_after`, runs `when_quiet` first
/// and then waits as long as it takes.
pub fn recv_or_when_quiet<T>(
    channel: &Receiver<T>,
    quiet_after: Duration,
    when_quiet: impl FnOnce(),
) -> Result<T, RecvError> {
    match channel.recv_timeout(quiet_after) {
        Ok(message) => Ok(message),
        Err(RecvTimeoutError::Disconnected) => Err(RecvError),
        Err(RecvTimeoutError::Timeout) => {
            when_quiet();
            channel.recv()
        }
    }
}

/// Tells a periodic task whether its thread was quiet since the task's last tick.
#[derive(Debug, Default)]
pub struct QuietWatch {
    handled_at_last_tick: u64,
}

impl QuietWatch {
    /// `handled` is the thread's work so far ([`super::work_done`]): `true` if it did
    /// not move since the previous tick.
    pub fn tick(&mut self, handled: u64) -> bool {
        let quiet = handled == self.handled_at_last_tick;
        self.handled_at_last_tick = handled;
        quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_quiet_watch_is_quiet_only_for_ticks_with_nothing_handled_since_the_last() {
        let mut watch = QuietWatch::default();
        assert!(watch.tick(0), "nothing handled yet");
        assert!(!watch.tick(3));
        assert!(watch.tick(3));
        assert!(!watch.tick(4));
        assert!(watch.tick(4));
    }

    #[test]
    fn a_waiting_message_is_received_without_the_quiet_step() {
        let (send, receive) = channel();
        send.send(7).unwrap();
        let result = recv_or_when_quiet(&receive, Duration::ZERO, || panic!("not quiet"));
        assert_eq!(result, Ok(7));
        drop(send);
        assert_eq!(recv_releasing_when_quiet(&receive), Err(RecvError));
    }

    #[test]
    fn a_quiet_channel_runs_the_quiet_step_then_waits_for_the_next_message() {
        let (send, receive) = channel();
        let mut quiet_steps = 0;
        let result = recv_or_when_quiet(&receive, Duration::ZERO, || {
            quiet_steps += 1;
            send.send(9).unwrap();
        });
        assert_eq!((result, quiet_steps), (Ok(9), 1));
    }
}
