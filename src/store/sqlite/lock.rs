//! One server process per data dir. The lock is taken twice: on `runyard.lock` (what older
//! versions take, so an old and a new server exclude each other) and on the directory itself,
//! which, unlike the file, cannot be deleted and made anew under a running server (a deleted
//! `runyard.lock` let a second server in, sharing the database and its leases).

use std::fs::File;
use std::path::Path;

use fs4::fs_std::FileExt;

use super::StoreError;

/// Held for the store's life: dropping it releases both locks.
pub(super) struct DirLock {
    _file: File,
    _dir: File,
}

/// Locks `dir` for this process, or says that another process holds it.
pub(super) fn lock(dir: &Path) -> Result<DirLock, StoreError> {
    let in_use = || {
        StoreError::Unavailable(format!(
            "data_dir {} is in use by another runyard process",
            dir.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("runyard.lock"))
        .map_err(|e| StoreError::Unavailable(format!("cannot open lock file: {e}")))?;
    if !file.try_lock_exclusive().unwrap_or(false) {
        return Err(in_use());
    }
    let d = File::open(dir).map_err(|e| {
        StoreError::Unavailable(format!("cannot open data_dir {}: {e}", dir.display()))
    })?;
    if !d.try_lock_exclusive().unwrap_or(false) {
        return Err(in_use());
    }
    Ok(DirLock {
        _file: file,
        _dir: d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_also_after_the_lock_file_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let refused = lock(dir.path())
            .err()
            .expect("a second lock must be refused");
        assert!(
            refused
                .to_string()
                .contains("in use by another runyard process"),
            "{refused}"
        );
        std::fs::remove_file(dir.path().join("runyard.lock")).unwrap();
        let refused = lock(dir.path())
            .err()
            .expect("refused after runyard.lock was deleted");
        assert!(
            refused
                .to_string()
                .contains("in use by another runyard process"),
            "{refused}"
        );
        drop(first);
        lock(dir.path()).expect("free once the first is dropped");
    }
}
