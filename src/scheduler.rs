//! Time-driven work that does not belong to one worker: promoting due SCHEDULED jobs (delays and
//! retry backoff) and retention. Cron schedules and readiness signals will live here too.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::files::BlobStore;

/// How often unreferenced file contents are looked for (docs/configuration.md,
/// `retention.finished`, says when a deleted job's file bytes go: keep it true).
const BLOB_GC_EVERY: Duration = Duration::from_secs(600);
/// File contents younger than this are never collected (an upload may be attaching them).
const BLOB_GC_GRACE: Duration = Duration::from_secs(3600);
use crate::job::Micros;
use crate::store::log_quiet::warn_unless_refused;
use crate::store::{Notice, Store};

/// Promotes due jobs; sleeps until the next one is due or something new is scheduled.
pub async fn promote_loop(store: Arc<dyn Store>, stop: CancellationToken) {
    let mut rx = store.subscribe_to(|n| {
        matches!(
            n,
            Notice::Changed {
                status: crate::job::JobStatus::Scheduled,
                ..
            }
        )
    });
    // A due time that a round left due (past by the store's clock after the round): the wait
    // before asking again, doubled while it stays (10 ms up to the usual second).
    let mut stuck: Option<(Micros, Duration)> = None;
    loop {
        let mut wait = Duration::from_secs(1);
        match store.promote_due(1000).await {
            Ok(1000) => continue,
            Ok(_) => {
                if let Ok(Some(due)) = store.next_due().await {
                    // A due time is the store's: waited for by its clock, not this node's.
                    let until = u64::try_from(due.saturating_sub(store.time().await)).unwrap_or(0);
                    wait = wait.min(Duration::from_micros(until));
                    // The first due job still past after the round: one that cannot be
                    // promoted (a record this build cannot read, logged by the store), or one
                    // that fell due as the round ended, whether or not jobs behind it were
                    // promoted. Ask again after a wait that doubles while that stays so,
                    // instead of at once, round after round: the jobs due behind such a one are
                    // promoted at most that wait (a second) late.
                    if until == 0 {
                        let back = match stuck {
                            Some((d, w)) if d == due => (w * 2).min(Duration::from_secs(1)),
                            _ => Duration::from_millis(10),
                        };
                        stuck = Some((due, back));
                        wait = back;
                    } else {
                        stuck = None;
                    }
                }
            }
            Err(e) => warn_unless_refused!(e, "cannot promote scheduled jobs"),
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = stop.cancelled() => return,
                n = rx.recv() => match n {
                    // A job was just scheduled: it may be due before our wake-up.
                    Ok(Notice::Changed { status: crate::job::JobStatus::Scheduled, .. })
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                },
            }
        }
    }
}

/// Deletes finished jobs past retention, trims event streams, and deletes file contents no job
/// references any more (when `blobs` is given: the file contents live with the API), every
/// `interval`.
pub async fn retention_loop(
    store: Arc<dyn Store>,
    blobs: Option<Arc<BlobStore>>,
    cfg: RetentionConfig,
    stop: CancellationToken,
) {
    let mut last_gc = std::time::Instant::now();
    loop {
        if let Some(blobs) = blobs
            .as_ref()
            .filter(|_| last_gc.elapsed() >= BLOB_GC_EVERY)
        {
            last_gc = std::time::Instant::now();
            match store.file_hashes().await {
                Ok(used) => {
                    let b = blobs.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        b.gc(&|h| used.contains(h), BLOB_GC_GRACE)
                    })
                    .await;
                    if let Ok(Ok(n)) = r {
                        if n > 0 {
                            tracing::info!(files = n, "unreferenced file contents deleted");
                        }
                    }
                }
                Err(e) => warn_unless_refused!(e, "cannot list referenced files"),
            }
        }
        // `finished_at` is the store's time: the cut is too, so a node whose wall clock runs
        // ahead does not delete every node's finished jobs (and idempotency keys) early.
        let before = store.time().await - cfg.finished.as_micros() as i64;
        match retention_round(store.as_ref(), before).await {
            Ok(r) if r.jobs > 0 || r.events > 0 => {
                tracing::debug!(jobs = r.jobs, events = r.events, "retention pass")
            }
            Ok(_) => {}
            Err(e) => warn_unless_refused!(e, "retention pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Passes of one retention round at most (a pass deletes a bounded chunk: 5,000 jobs embedded,
/// 20,000 on Redis).
const RETENTION_PASSES: usize = 200;

/// One round of retention: passes with the same cut until one deletes no job. A single pass
/// deletes at most a chunk, so at the default `retention.interval` (10 s) finished jobs piled up
/// without bound once more than 500 a second finished on the embedded store (issue 14).
pub(crate) async fn retention_round(
    store: &dyn Store,
    before: crate::job::Micros,
) -> crate::store::Result<crate::store::RetentionReport> {
    let mut total = crate::store::RetentionReport::default();
    for _ in 0..RETENTION_PASSES {
        let r = store.retention(before).await?;
        total.jobs += r.jobs;
        total.events += r.events;
        if r.jobs == 0 {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{now_us, Command, Job};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{JobStore, ListQuery, StoreSettings};

    /// More finished jobs than one pass deletes (5,000 on the embedded store) go in one round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_deletes_more_finished_jobs_than_one_pass_may() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
        let n = 5_500;
        let jobs = (0..n).map(|_| Job::new("t", "r", now_us())).collect();
        let ids: Vec<_> = store
            .submit_many(jobs)
            .await
            .expect("submit")
            .into_iter()
            .map(|r| r.expect("stored").job.id)
            .collect();
        for chunk in ids.chunks(500) {
            let cancels = chunk.iter().map(|id| store.apply(*id, Command::Cancel));
            for r in futures::future::join_all(cancels).await {
                r.expect("cancel");
            }
        }
        let r = retention_round(&store, now_us() + 1).await.expect("round");
        assert_eq!(r.jobs, n as u64);
        let left = store
            .list(ListQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list");
        assert!(left.jobs.is_empty(), "{} jobs left", left.jobs.len());
    }
}
