//! Time-driven work that does not belong to one worker: promoting due SCHEDULED jobs (delays and
//! retry backoff) and retention. Cron schedules and readiness signals will live here too.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::files::BlobStore;

/// How often unreferenced file contents are looked for.
const BLOB_GC_EVERY: Duration = Duration::from_secs(600);
/// File contents younger than this are never collected (an upload may be attaching them).
const BLOB_GC_GRACE: Duration = Duration::from_secs(3600);
use crate::job::now_us;
use crate::store::{Notice, Store};

/// Promotes due jobs; sleeps until the next one is due or something new is scheduled.
pub async fn promote_loop(store: Arc<dyn Store>, stop: CancellationToken) {
    let mut rx = store.subscribe();
    loop {
        let mut wait = Duration::from_secs(1);
        match store.promote_due(1000).await {
            Ok(1000) => continue,
            Ok(_) => {
                if let Ok(Some(due)) = store.next_due().await {
                    let until = u64::try_from(due.saturating_sub(now_us())).unwrap_or(0);
                    wait = wait.min(Duration::from_micros(until));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot promote scheduled jobs"),
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
                Err(e) => tracing::warn!(error = %e, "cannot list referenced files"),
            }
        }
        let before = now_us() - cfg.finished.as_micros() as i64;
        match store.retention(before).await {
            Ok(r) if r.jobs > 0 || r.events > 0 => {
                tracing::debug!(jobs = r.jobs, events = r.events, "retention pass")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
