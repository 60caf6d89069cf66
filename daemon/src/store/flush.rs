//! Flushing memtables: at shutdown (so a restart replays nothing) and when a quiet daemon's
//! memtables would otherwise keep their pages resident.

use fjall::PersistMode;

use super::{Store, StoreError};

impl Store {
    /// Flushes every memtable to disk tables so the next start has no journal to replay (clean
    /// shutdown only; a crash replays the journal instead).
    pub fn flush_for_shutdown(&self) -> Result<(), StoreError> {
        self.flush_memtables()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// If the memtables hold at least `min_bytes`, flushes them to disk tables and waits for it;
    /// says whether it did. For a daemon gone quiet: its memtables (up to
    /// [`MEMTABLE_BYTES_MAX`] per keyspace) hold copies of rows and events the daemon no longer
    /// needs in memory, allocated among the bursts' short-lived buffers — until a memtable
    /// fills, which a quiet daemon never does, they keep those pages resident too.
    pub fn flush_memtables_over(&self, min_bytes: u64) -> Result<bool, StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        // `write_buffer_size` and `rotate_memtable_and_wait` are fjall's doc-hidden API (the
        // shutdown flush uses the latter too); Cargo.lock pins the version they were read from.
        if self.db.write_buffer_size() < min_bytes {
            return Ok(false);
        }
        self.flush_memtables()?;
        Ok(true)
    }

    pub(super) fn flush_memtables(&self) -> Result<(), StoreError> {
        for keyspace in [
            &self.meta,
            &self.log,
            &self.customers,
            &self.segments,
            &self.keys,
            &self.invoices,
            &self.invoice_models,
            &self.transactions,
        ] {
            keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
    }
}
