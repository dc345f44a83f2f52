//! A local job's private working directory (`runyard-job-...` in the temp dir): its
//! unguessable name, its removal once the job has ended, and the guard that removes it when a
//! launch fails.

use std::path::PathBuf;

/// Removes a job's private working directory when dropped, unless disarmed.
pub(crate) struct WorkdirGuard(pub(crate) Option<PathBuf>);

impl WorkdirGuard {
    pub(crate) fn disarm(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for WorkdirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            // Only on a failed launch: the directory is empty or absent.
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Only directories runyard makes (`runyard-job-...` in the temp dir), whatever a handle says.
pub(crate) async fn remove_workdir(dir: PathBuf) {
    let ours = dir.parent() == Some(std::env::temp_dir().as_path())
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("runyard-job-"));
    if !ours {
        return;
    }
    let shown = dir.display().to_string();
    match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => tracing::warn!(dir = %shown, error = %e, "cannot remove a job's directory"),
        Err(_) => {}
    }
}

/// 64 random bits from the kernel (the time as a fallback): makes a job's directory name
/// unguessable, so nobody can make it first.
pub(crate) fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // Safety: the kernel writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}
