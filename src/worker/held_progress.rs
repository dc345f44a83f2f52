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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::job::{Command, Job};
use crate::store::{Store, StoreError};

/// The waits under way in this process: each job's, by the number of its wait, with the version
/// of the write that held the value.
static WAITING: LazyLock<Mutex<HashMap<Uuid, (u64, u64)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_WAIT: AtomicU64 = AtomicU64::new(0);

/// How long a held event is tried for while the store does not answer (Redis away).
const TRY_FOR: Duration = Duration::from_secs(10);

/// After a write to `job` (`job` as written, by the hook or the reporter): sends the held
/// progress event when it is due, if one is held and none is awaited here already. A write that
/// left nothing held (its own event sent it) ends the wait here: a job reporting every 100 ms
/// against the default 200 ms sends each held value with its next report, and a flush after it
/// was one store write more per interval, refused (review of session 54, M2).
///
/// Two writes' follow-ups may come in another order than the writes (two hook reports at once):
/// only a write newer than the one that held the value ends the wait (review of session 54: an
/// older write's follow-up ended the newer's wait, its value then sent by the next renewal).
pub fn follow(store: &Arc<dyn Store>, job: &Job) {
    let Some(due) = job.progress_due.filter(|_| job.status.is_active()) else {
        let mut waiting = WAITING.lock();
        if waiting
            .get(&job.id)
            .is_some_and(|&(_, held_by)| held_by < job.version)
        {
            waiting.remove(&job.id);
        }
        return;
    };
    let wait_no = {
        let mut waiting = WAITING.lock();
        if waiting.contains_key(&job.id) {
            return;
        }
        let n = NEXT_WAIT.fetch_add(1, Ordering::Relaxed);
        waiting.insert(job.id, (n, job.version));
        n
    };
    // Both times are the store's clock: what was left of the interval when the report was
    // written, however this process's clock differs; and a quarter of the interval more, for a
    // job reporting at about the interval to send it with its next report instead.
    let interval = due.saturating_sub(job.progress_event_at);
    let left = due
        .saturating_sub(job.updated_at)
        .saturating_add(interval / 4);
    let wait = Duration::from_micros(u64::try_from(left).unwrap_or(0));
    let store = Arc::downgrade(store);
    let id = job.id;
    tokio::spawn(async move {
        // Dropped with its runtime mid-wait (a server stopped in-process), the wait leaves the
        // registry: a later held value of the job is followed again.
        let mine = Mine(id, wait_no);
        tokio::time::sleep(wait).await;
        // Out of the registry before the write (a report held after it is followed again);
        // nothing to do when a write since sent it, or a later wait took over.
        if mine.take() {
            send(store, id).await;
        }
    });
}

/// A wait's entry in [`WAITING`]: (job, wait number).
struct Mine(Uuid, u64);

impl Mine {
    /// Takes the wait out of the registry; whether it was still this one.
    fn take(&self) -> bool {
        let mut waiting = WAITING.lock();
        let mine = waiting.get(&self.0).is_some_and(|&(n, _)| n == self.1);
        if mine {
            waiting.remove(&self.0);
        }
        mine
    }
}

impl Drop for Mine {
    fn drop(&mut self) {
        self.take();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{now_us, JobStatus};
    use crate::store::sqlite::SqliteStore;
    use crate::store::StoreSettings;

    fn waiting(id: Uuid) -> Option<u64> {
        WAITING.lock().get(&id).map(|&(n, _)| n)
    }

    /// A held value is awaited once; a write that sent it ends the wait (no flush after it);
    /// a wait dropped mid-way leaves the registry.
    #[tokio::test]
    async fn a_write_that_sent_the_held_value_ends_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).unwrap());
        let mut job = Job::new("t", "r", now_us());
        job.status = JobStatus::Running;
        job.updated_at = now_us();
        job.progress_event_at = job.updated_at;
        job.progress_due = Some(job.updated_at + 3_600_000_000);
        job.version = 5;
        follow(&store, &job);
        let first = waiting(job.id).expect("awaited");
        follow(&store, &job);
        assert_eq!(waiting(job.id), Some(first), "one wait a job");
        let mut sent = job.clone();
        sent.progress_due = None;
        // An older write's follow-up, come late, ends nothing.
        sent.version = job.version - 1;
        follow(&store, &sent);
        assert_eq!(waiting(job.id), Some(first));
        sent.version = job.version + 1;
        follow(&store, &sent);
        assert_eq!(
            waiting(job.id),
            None,
            "sent by the write: nothing to wait for"
        );
        follow(&store, &job);
        let second = waiting(job.id).expect("awaited again");
        assert_ne!(second, first);
        // The first wait, were it still there, would not take the second one's place.
        drop(Mine(job.id, first));
        assert_eq!(waiting(job.id), Some(second));
        drop(Mine(job.id, second));
        assert_eq!(waiting(job.id), None);
        // Not active: nothing awaited.
        job.status = JobStatus::Success;
        follow(&store, &job);
        assert_eq!(waiting(job.id), None);
    }
}
