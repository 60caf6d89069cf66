//! The janitor thread: deletes usage events past their retention (whole segments), a bounded
//! chunk at a time, one pass a minute, so the event store stays as large as configured and no
//! more. It runs beside the committer (segments are immutable once checkpointed, so the two
//! never touch the same key) and never on a thread that serves requests.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::Clock;
use crate::committer::StoreHealth;
use crate::store::Store;

/// Pause between chunks.
pub const JANITOR_INTERVAL: Duration = Duration::from_millis(200);
/// Pause after a pass over every segment, before the next one starts: retention is counted in
/// days, and a pass reads every segment key (scanning back to back cost ~7% of a core under
/// a sustained write load).
pub const JANITOR_PASS_INTERVAL: Duration = Duration::from_secs(60);
/// Event segments examined per chunk.
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
                let mut pause = JANITOR_INTERVAL;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(pause) {
                    if health.failure().is_some() {
                        continue;
                    }
                    let cutoff_ms = clock.now_ms().saturating_sub(retention_ms);
                    match store.purge_events(cutoff_ms, cursor.as_deref(), JANITOR_KEYS_PER_CHUNK) {
                        Ok((deleted, next)) => {
                            if deleted > 0 {
                                tracing::debug!(deleted, "deleted events past their retention");
                            }
                            pause = match next {
                                Some(_) => JANITOR_INTERVAL,
                                None => {
                                    // A pass done: its key scans' pages go back until the next.
                                    crate::memory::release_idle();
                                    JANITOR_PASS_INTERVAL
                                }
                            };
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
