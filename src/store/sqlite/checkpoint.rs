//! The checkpoint thread: copies the WAL into the database off the writer's path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::open_conn;

/// How often the checkpoint thread copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL size (in frames: 32 MiB with 2 KiB pages, 64 MiB with 4 KiB ones) past which the
/// checkpoint thread restarts the WAL from its beginning, so it stays bounded under a sustained
/// load.
const WAL_RESTART_FRAMES: i64 = 16_384;
/// After a waiting restart that could not restart the WAL (a reader's snapshot held it), how
/// long only restarts that do not wait are tried.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// Checkpoints the WAL off the writer's path. With SQLite's automatic checkpoint, every ~1000
/// pages one `COMMIT` also fsyncs the WAL, copies it and fsyncs the database: a 4-13 ms stall of
/// the writer (and so of every request waiting on it). Here a passive checkpoint runs every
/// 100 ms on its own connection, never waiting for the writer; a restart (which needs a moment
/// without a writer, and is tried without waiting) bounds the WAL.
pub(super) fn checkpoint_loop(path: PathBuf, running: Arc<AtomicBool>) {
    let conn = match open_conn(&path, false) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the checkpoint connection; the WAL will grow");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::ZERO);
    // (busy, frames in the WAL) after a checkpoint in `mode`.
    let checkpoint = |mode: &str| -> Option<(bool, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
        })
        .ok()
    };
    // No waiting restart before this: one that waited in vain met a reader holding an old
    // snapshot (a `runyard backup`, a long read), and a restart waits holding the WAL's write
    // lock, so each such wait stalls the writer for its whole length.
    let mut no_wait_until = std::time::Instant::now();
    while running.load(Ordering::Acquire) {
        std::thread::sleep(CHECKPOINT_EVERY);
        match checkpoint("PASSIVE") {
            Some((_, n))
                if n > 4 * WAL_RESTART_FRAMES && std::time::Instant::now() >= no_wait_until =>
            {
                // Restarts keep missing a gap between writes: wait a little for one.
                let _ = conn.busy_timeout(Duration::from_millis(100));
                if checkpoint("RESTART").is_none_or(|(busy, _)| busy) {
                    no_wait_until = std::time::Instant::now() + RESTART_BACKOFF;
                }
                let _ = conn.busy_timeout(Duration::ZERO);
            }
            Some((_, n)) if n > WAL_RESTART_FRAMES => {
                let _ = checkpoint("RESTART");
            }
            _ => {}
        }
    }
}
