//! The claim loop's round ([`Worker::claim_round`]), and its pacing under a steady stream of
//! single jobs (`worker.claim_interval`, [`Pacing`]): after a claim
//! that took at most one job, the next waits until the interval has passed since it, so that
//! the jobs QUEUED meanwhile are claimed together (one round trip for several: fewer Redis
//! calls and wake-ups per job with one producer, docs/benchmarks.md "Session 33"). A claim that
//! took several is followed at once (under a burst the claims are big already, and waiting only
//! made them bigger), so is one that filled its slot (it took all it could: a slot refilled one
//! job at a time is not held back), and a job QUEUED after a quiet spell is claimed at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// `worker.claim_interval` on a store other than the embedded one, whose submits hand most jobs
/// straight to a waiting worker.
const DEFAULT_CLAIM_INTERVAL: Duration = Duration::from_millis(2);

/// The claim loop's pacing.
pub(super) struct Pacing {
    interval: Duration,
    /// When the last claim that took at most one job was made (none since a bigger one).
    last_single: Option<Instant>,
}

impl Pacing {
    /// `configured` (`worker.claim_interval`), or its default for the store `backend`.
    pub(super) fn new(configured: Option<Duration>, backend: &str) -> Self {
        let default = if backend == "embedded" {
            Duration::ZERO
        } else {
            DEFAULT_CLAIM_INTERVAL
        };
        Self {
            interval: configured.unwrap_or(default),
            last_single: None,
        }
    }

    /// Waits until the next claim may be made; false when `shutdown` came first.
    pub(super) async fn wait(&self, shutdown: &CancellationToken) -> bool {
        let Some(next) = self.last_single.map(|t| t + self.interval) else {
            return true;
        };
        if next <= Instant::now() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => true,
            _ = shutdown.cancelled() => false,
        }
    }

    /// A claim round ended having claimed `jobs` in all (`None`: it asked the store nothing);
    /// `full`: a slot was or became full (it took all it could: waiting would not have made it
    /// bigger, only later).
    pub(super) fn claimed(&mut self, jobs: Option<usize>, full: bool) {
        match jobs {
            Some(n) if n <= 1 && !full && !self.interval.is_zero() => {
                self.last_single = Some(Instant::now())
            }
            Some(_) => self.last_single = None,
            None => {}
        }
    }
}

impl Worker {
    /// Claims for every slot with room, when `must` or a job was QUEUED since the last round:
    /// whether a claim failed, whether a slot was or became full (claim again next round), and
    /// how many jobs it claimed (`None`: it asked the store nothing).
    pub(super) async fn claim_round(self: &Arc<Self>, must: bool) -> (bool, bool, Option<usize>) {
        let (mut failed, mut full, mut claimed) = (false, false, None);
        if !(self.queued.swap(false, Ordering::AcqRel) || must) {
            return (failed, full, claimed);
        }
        for slot in self.runners.iter() {
            let active = slot.active.load(Ordering::Acquire);
            let free = slot.concurrency.saturating_sub(active);
            if free == 0 {
                full = true;
                continue;
            }
            let asked = tokio::time::Instant::now();
            match self
                .store
                .claim(&slot.name, &self.id, free, self.cfg.lease_ttl)
                .await
            {
                Ok(jobs) => {
                    full |= jobs.len() >= free;
                    *claimed.get_or_insert(0) += jobs.len();
                    for job in jobs {
                        self.spawn_job(job, slot, asked);
                    }
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(runner = %slot.name, error = %e, "claim failed");
                }
            }
        }
        (failed, full, claimed)
    }
}
