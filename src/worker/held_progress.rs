//! The trailing progress event. `events.progress_interval` allows one progress event per job per
//! interval; a report coming sooner is stored (a read of the job shows it) but its event is held
//! back, the job's `progress_due` saying when it may go. Whoever wrote that report (the hook for
//! a job's own reports, the worker for its reporter's) asks for the held event here, and it is
//! sent when due ([`Command::ProgressFlush`]) unless a later progress event carried it first:
//! event streams and `progress` webhooks end on the last value reported, not on one that may be
//! as old as the job's whole run.
//!
//! One wait per job at a time in this process (the registry is process-wide and keyed by job
//! id, as [`super::reports`]). Should the process end during the wait (an API node restarted
//! in front of Redis), the held value is still in the job's record, with its time: the job's
//! worker sends it with its next lease renewal (every `worker.lease_ttl / 3`), once its time has
//! passed. A value still held when the job ends goes with the job's last status event only.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::job::{Command, Job};
use crate::store::{Store, StoreError};

static WAITING: LazyLock<Mutex<HashSet<Uuid>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// How long a held event is tried for while the store does not answer (Redis away).
const TRY_FOR: Duration = Duration::from_secs(10);

/// After a write that left `job` (as written) with a progress report held back, sends the
/// held event when it is due. Nothing to do when none is held or one is already awaited here.
pub fn follow(store: &Arc<dyn Store>, job: &Job) {
    let Some(due) = job.progress_due else {
        return;
    };
    if !job.status.is_active() || !WAITING.lock().insert(job.id) {
        return;
    }
    // Both times are the store's clock: what was left of the interval when the report was
    // written, however this process's clock differs.
    let left = u64::try_from(due.saturating_sub(job.updated_at)).unwrap_or(0);
    let wait = Duration::from_micros(left);
    let store = Arc::downgrade(store);
    let id = job.id;
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        // Out of the registry before the write: a report held after it is followed again.
        WAITING.lock().remove(&id);
        send(store, id).await;
    });
}

async fn send(store: Weak<dyn Store>, id: Uuid) {
    let until = tokio::time::Instant::now() + TRY_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(s) = store.upgrade() else {
            return; // The server has stopped.
        };
        match s.apply(id, Command::ProgressFlush).await {
            // Sent; or refused: a later event carried it, or the job is no longer active.
            Ok(_) | Err(StoreError::Transition(_)) | Err(StoreError::NotFound) => return,
            Err(e) if tokio::time::Instant::now() + pause < until => {
                tracing::debug!(job_id = %id, error = %e, "held progress event not sent yet");
            }
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "held progress event not sent");
                return;
            }
        }
        drop(s);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
