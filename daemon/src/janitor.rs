//! The janitor thread: deletes usage events past their retention, a bounded chunk at a time, so
//! the event log stays as large as configured and no more. It runs beside the committer (events
//! are immutable once written, so the two never touch the same key) and never on a thread that
//! serves requests.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::Clock;
use crate::committer::StoreHealth;
use crate::store::Store;

/// Pause between chunks.
pub const JANITOR_INTERVAL: Duration = Duration::from_millis(200);
/// Event keys examined per chunk.
pub const JANITOR_KEYS_PER_CHUNK: usize = 10_000;

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
                let mut cursor: Option<Vec<u8>> = None;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(JANITOR_INTERVAL) {
                    if health.failure().is_some() {
                        continue;
                    }
                    let cutoff_ms = clock.now_ms().saturating_sub(retention_ms);
                    match store.purge_events(cutoff_ms, cursor.as_deref(), JANITOR_KEYS_PER_CHUNK) {
                        Ok((deleted, next)) => {
                            if deleted > 0 {
                                tracing::debug!(deleted, "deleted events past their retention");
                            }
                            cursor = next;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "deleting old events failed; will retry")
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
