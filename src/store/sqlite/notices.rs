//! The embedded store's notices, sent after each commit: to every [`Store::subscribe`] listener,
//! and to each [`Store::subscribe_to`] listener only the notices it acts on. With one channel
//! for all, every commit woke every listener (the claim loop, the promoter, the waiting loop,
//! webhook deliveries): a few wake-ups per job, each a task scheduled on the runtime and often a
//! worker thread woken for it, for notices most of them drop. A filtered listener has its own
//! channel and is woken only when a notice it wants was committed.
//!
//! [`Store::subscribe`]: crate::store::Store::subscribe
//! [`Store::subscribe_to`]: crate::store::Store::subscribe_to

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::store::{Notice, NoticeFilter};

/// Notices held per listener at most before it lags (and is told so).
const ALL: usize = 4096;
/// The same for a filtered listener, which gets far fewer.
const FILTERED: usize = 1024;

/// The store's listeners.
pub(super) struct Listeners {
    all: broadcast::Sender<Notice>,
    filtered: Mutex<Vec<(NoticeFilter, broadcast::Sender<Notice>)>>,
}

impl Listeners {
    pub(super) fn new() -> Self {
        Self {
            all: broadcast::channel(ALL).0,
            filtered: Mutex::new(Vec::new()),
        }
    }

    /// Every notice.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.all.subscribe()
    }

    /// Only the notices `wants` accepts.
    pub(super) fn subscribe_to(&self, wants: NoticeFilter) -> broadcast::Receiver<Notice> {
        let (tx, rx) = broadcast::channel(FILTERED);
        self.filtered.lock().push((wants, tx));
        rx
    }

    /// Sends one commit's notices, in order; forgets the filtered listeners that have gone.
    pub(super) fn send(&self, notices: &[Notice]) {
        if notices.is_empty() {
            return;
        }
        if self.all.receiver_count() > 0 {
            for n in notices {
                let _ = self.all.send(n.clone());
            }
        }
        let mut filtered = self.filtered.lock();
        filtered.retain(|(_, tx)| tx.receiver_count() > 0);
        for (wants, tx) in filtered.iter() {
            for n in notices.iter().filter(|n| wants(n)) {
                let _ = tx.send(n.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::broadcast::error::TryRecvError;

    use crate::job::{now_us, Job, JobStatus};
    use crate::metrics::{MeteredStore, Metrics};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Notice, StoreSettings};

    fn scheduled(n: &Notice) -> bool {
        matches!(
            n,
            Notice::Changed {
                status: JobStatus::Scheduled,
                ..
            }
        )
    }

    /// A listener of scheduled jobs only (the promoter's) is not told of a QUEUED job; it gets
    /// the scheduled one submitted after it, first. A listener of everything gets both. Through
    /// the metered store, as the server uses it.
    #[tokio::test]
    async fn a_filtered_listener_gets_only_the_notices_it_wants() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
        let store = MeteredStore::wrap(Arc::new(sqlite), Arc::new(Metrics::new()));
        let mut only = store.subscribe_to(scheduled);
        let mut all = store.subscribe();
        let queued = store
            .submit(Job::new("t.x", "r", now_us()))
            .await
            .expect("submit")
            .job;
        let mut later = Job::new("t.x", "r", now_us());
        later.status = JobStatus::Scheduled;
        later.run_at = Some(now_us() + 3_600_000_000);
        let later = store.submit(later).await.expect("submit").job;
        let first = tokio::time::timeout(Duration::from_secs(30), only.recv())
            .await
            .expect("a notice")
            .expect("not lagged");
        assert!(
            matches!(first, Notice::Changed { job_id, status: JobStatus::Scheduled } if job_id == later.id),
            "the scheduled job's notice first, nothing of the queued one: {first:?}"
        );
        assert!(matches!(only.try_recv(), Err(TryRecvError::Empty)));
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(30), all.recv())
                .await
                .expect("a notice")
                .expect("not lagged");
            if let Notice::Changed { job_id, .. } = n {
                seen.push(job_id);
            }
        }
        assert_eq!(seen, vec![queued.id, later.id]);
    }
}
