//! The data dir: decide whether a folder may hold Tally's state, and hold it exclusively while the
//! daemon runs. A wrong path must fail loudly instead of starting with zero balances, and two
//! daemons on one store would double-apply nothing but corrupt everything.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::config::StorageConfig;
use crate::credentials::DEV_DIR;
use crate::daemon::{ADDR_FILE, ADDR_FILE_TEMPORARY};
use crate::store::STORE_DIR;

/// Lock file in the data dir, held (advisory `flock`) by the running daemon; it holds its pid.
pub const LOCK_FILE: &str = "tallyd.lock";

/// Entries tallyd itself creates next to the store; a folder holding only these is not foreign.
const OWN_ENTRIES: [&str; 4] = [DEV_DIR, ADDR_FILE, ADDR_FILE_TEMPORARY, LOCK_FILE];

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Missing, foreign, or unusable.
    #[error("data dir {path}: {reason}")]
    Unusable {
        /// The folder.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Another daemon holds the lock.
    #[error("data dir {path} is in use by another tallyd{}; stop it first, or give this one its own [storage] data_dir", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    InUse {
        /// The folder.
        path: PathBuf,
        /// The pid written by the holder, when readable.
        holder: Option<u32>,
    },
}

/// Holds the data dir for this process; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Checks the data dir, creating it only when `create_if_missing` allows, and locks it.
pub fn open(storage: &StorageConfig) -> Result<DataDirLock, DataDirError> {
    let path = &storage.data_dir;
    let unusable = |reason: String| DataDirError::Unusable {
        path: path.clone(),
        reason,
    };
    if path.exists() && !path.is_dir() {
        return Err(unusable("exists but is not a folder".into()));
    }
    if !path.exists() {
        if !storage.create_if_missing {
            return Err(unusable(
                "does not exist; create it, fix [storage] data_dir, or set create_if_missing = true"
                    .into(),
            ));
        }
        std::fs::create_dir_all(path).map_err(|e| unusable(format!("cannot create it: {e}")))?;
        tracing::warn!(path = %path.display(), "CREATED A NEW, EMPTY DATA DIR: every customer starts from zero (create_if_missing = true; turn it off in production)");
    } else if !path.join(STORE_DIR).exists() {
        if let Some(foreign) = foreign_entry(path).map_err(|e| unusable(e.to_string()))? {
            return Err(unusable(format!(
                "exists and holds `{foreign}` but no Tally store (no {STORE_DIR}/ inside); point [storage] data_dir at a Tally data dir, or at a new folder"
            )));
        }
        if !storage.create_if_missing {
            return Err(unusable(format!(
                "holds no Tally store (no {STORE_DIR}/ inside); fix [storage] data_dir, or set create_if_missing = true to start a new one"
            )));
        }
        tracing::warn!(path = %path.display(), "STARTING A NEW, EMPTY STORE in an existing folder: every customer starts from zero");
    }
    lock(path)
}

/// The first entry of `dir` that tallyd did not make, if any.
fn foreign_entry(dir: &Path) -> std::io::Result<Option<String>> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !OWN_ENTRIES.contains(&name.as_str()) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn lock(dir: &Path) -> Result<DataDirLock, DataDirError> {
    let unusable = |e: std::io::Error| DataDirError::Unusable {
        path: dir.to_path_buf(),
        reason: format!("cannot open {LOCK_FILE}: {e}"),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(unusable)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DataDirError::InUse {
                path: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(unusable(e)),
    }
    // The pid is only a hint for the message above; the lock itself is what excludes.
    file.set_len(0).map_err(unusable)?;
    file.rewind().map_err(unusable)?;
    writeln!(file, "{}", std::process::id()).map_err(unusable)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    fn storage(dir: &Path, create_if_missing: bool) -> StorageConfig {
        StorageConfig {
            data_dir: dir.to_path_buf(),
            durability: Durability::Sync,
            create_if_missing,
            event_retention_ms: u64::MAX,
        }
    }

    #[test]
    fn a_missing_dir_is_created_only_when_allowed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let refused = open(&storage(&dir, false)).unwrap_err().to_string();
        assert!(refused.contains("does not exist"), "{refused}");
        assert!(!dir.exists());
        open(&storage(&dir, true)).unwrap();
        assert!(dir.join(LOCK_FILE).exists());
    }

    #[test]
    fn a_folder_of_other_files_is_refused_even_when_creating_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let refused = open(&storage(dir.path(), true)).unwrap_err().to_string();
        assert!(refused.contains("notes.txt"), "{refused}");
        assert!(refused.contains("no Tally store"), "{refused}");
        assert!(!dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn an_empty_existing_folder_needs_create_if_missing() {
        let dir = tempfile::tempdir().unwrap();
        let refused = open(&storage(dir.path(), false)).unwrap_err().to_string();
        assert!(refused.contains("holds no Tally store"), "{refused}");
        open(&storage(dir.path(), true)).unwrap();
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(&storage(dir.path(), true)).unwrap();
        let refused = open(&storage(dir.path(), true)).unwrap_err();
        let DataDirError::InUse { holder, .. } = &refused else {
            panic!("expected InUse, got {refused}")
        };
        assert_eq!(*holder, Some(std::process::id()));
        assert!(refused.to_string().contains("in use by another tallyd"));
        drop(first);
        open(&storage(dir.path(), true)).unwrap();
    }
}
