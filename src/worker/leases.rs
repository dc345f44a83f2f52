//! Keeping the leases of the jobs this worker runs: the heartbeat task renews them and stops
//! the jobs the store says this worker no longer holds; the fence task (shared stores) stops the
//! jobs whose lease could not be renewed in time (see the module docs of `worker`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{StopReason, Worker};
use crate::store::log_quiet::warn_unless_refused;

impl Worker {
    pub(super) async fn heartbeats(self: Arc<Self>, stop: CancellationToken) {
        let every = self.cfg.lease_ttl / 3;
        let mut again = false;
        loop {
            let quick = std::mem::take(&mut again);
            if !quick {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = self.beat_now.notified() => {}
                    _ = stop.cancelled() => return,
                }
            }
            let held: Vec<(Uuid, u64)> = self
                .running
                .lock()
                .iter()
                .map(|(id, r)| (*id, r.token))
                .collect();
            if held.is_empty() {
                continue;
            }
            let sent = tokio::time::Instant::now();
            match self
                .store
                .heartbeat(&self.id, &held, self.cfg.lease_ttl)
                .await
            {
                Ok(lost) => {
                    // Slow (retried across an outage): the renewal is dated from `sent`, long
                    // before the store made it; one more at once dates it from now. At most
                    // once in a row: a store that stays slow gets its beats at every tick.
                    again = !quick && sent.elapsed() >= self.cfg.lease_ttl / 10;
                    {
                        let mut running = self.running.lock();
                        for (id, token) in &held {
                            if lost.contains(id) {
                                continue;
                            }
                            if let Some(r) = running.get_mut(id).filter(|r| r.token == *token) {
                                r.renewed = r.renewed.max(sent);
                            }
                        }
                    }
                    for id in lost {
                        // The attempt this heartbeat was for, not a later one claimed since.
                        let Some((_, token)) = held.iter().find(|(h, _)| *h == id) else {
                            continue;
                        };
                        if self.holds(id, *token) {
                            self.span_of(id).in_scope(|| {
                                tracing::info!("job no longer held by this worker: stopping it")
                            });
                            self.stop_job(id, StopReason::Gone);
                        }
                    }
                }
                Err(e) => warn_unless_refused!(e, "heartbeat failed"),
            }
        }
    }

    /// A job tracked with its lease asked for long ago (a finish's claim retried across a store
    /// outage, say): the fence counts from `asked`, so the heartbeat renews at once rather than
    /// at its next tick, which could come after the fence stopped a job whose lease the store
    /// granted only now. The heartbeat also goes again at once after a slow one.
    pub(super) fn renew_soon_if_old(&self, asked: tokio::time::Instant) {
        if asked.elapsed() >= self.cfg.lease_ttl / 10 {
            self.beat_now.notify_one();
        }
    }

    /// How long a job may go without a renewed lease before this worker stops it: the lease
    /// period less the time a stop may take (`kill_grace`) and a tenth of the period for the
    /// check's own delay; never less than half the lease.
    fn fence_after(&self) -> Duration {
        let ttl = self.cfg.lease_ttl;
        ttl.saturating_sub(self.cfg.kill_grace)
            .saturating_sub(ttl / 10)
            .max(ttl / 2)
    }

    /// Stops the jobs whose lease could not be renewed in time (see the module docs). The store
    /// is not told: it may be unreachable, and the lease simply expires; the reaper of whichever
    /// worker sees it first requeues the job.
    pub(super) async fn fence(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.cfg.lease_ttl / 20).max(Duration::from_millis(10));
        let limit = self.fence_after();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let now = tokio::time::Instant::now();
            for r in self.running.lock().values_mut() {
                if !r.fenced && now.saturating_duration_since(r.renewed) >= limit {
                    r.fenced = true;
                    let _in = r.span.enter();
                    tracing::warn!(
                        unrenewed_for = ?now.saturating_duration_since(r.renewed),
                        "lease not renewed in time (store unreachable?): stopping the job before another worker may take it over"
                    );
                    *r.reason.lock() = StopReason::Gone;
                    r.stop.cancel();
                }
            }
        }
    }
}
