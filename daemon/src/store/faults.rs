//! Switches that make every write fail, the next checkpoint stop part-way, or every group commit
//! wait, for tests of the failure paths at the storage boundary. Off unless a test turns them on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Switches that make every write fail, or the next checkpoint stop part-way, for tests of the
/// failure paths at the storage boundary.
#[derive(Debug, Clone, Default)]
pub struct StoreFaults {
    failing: Arc<AtomicBool>,
    /// While `true`, every group commit waits before writing (a disk that stopped answering).
    stalled: Arc<(Mutex<bool>, std::sync::Condvar)>,
    /// Checkpoint batches still allowed before the checkpoint "crashes"; `None`: no limit.
    checkpoint_batches: Arc<Mutex<Option<usize>>>,
}

impl StoreFaults {
    /// From now on, every write fails (or succeeds again with `false`).
    pub fn fail_writes(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    /// The next checkpoint stops after writing `batches` of its batches, as a crash would, and
    /// every write fails from then on.
    pub fn crash_checkpoint_after(&self, batches: usize) {
        *self.checkpoint_batches.lock().expect("the faults' lock") = Some(batches);
    }

    /// From now on, every group commit waits before it writes, until called with `false`.
    pub fn stall_persists(&self, stall: bool) {
        let (stalled, changed) = &*self.stalled;
        *stalled.lock().expect("the faults' lock") = stall;
        changed.notify_all();
    }

    pub(super) fn wait_while_stalled(&self) {
        let (stalled, changed) = &*self.stalled;
        let guard = stalled.lock().expect("the faults' lock");
        drop(
            changed
                .wait_while(guard, |stalled| *stalled)
                .expect("the faults' lock"),
        );
    }

    pub(super) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Whether a checkpoint may commit its next batch.
    pub(super) fn allows_checkpoint_batch(&self) -> bool {
        let mut left = self.checkpoint_batches.lock().expect("the faults' lock");
        match left.as_mut() {
            None => true,
            Some(0) => {
                *left = None;
                self.fail_writes(true);
                false
            }
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}
