//! The claim loop's round ([`Worker::claim_round`]), and its pacing under a steady stream of
//! single jobs (`worker.claim_interval`, [`Pacing`]): after a claim that took one job, or that
//! found none after a new job was announced (another worker took it first), the next claim
//! waits until the interval has passed since it, so that the jobs QUEUED meanwhile are claimed
//! together (one round trip for several: fewer Redis calls and wake-ups per job with one
//! producer, docs/benchmarks.md "Session 33"). A claim that took several is followed at once
//! (under a burst the claims are big already, and waiting only made them bigger), so is one in
//! a round where a slot was or became full (a slot refilled one job at a time is not held
//! back). A claim that found nothing without an announcement (a poll, a job's end) starts no
//! wait, so a job QUEUED after a quiet spell is claimed at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::store::log_quiet::warn_unless_refused;

/// `worker.claim_interval` on a store other than the embedded one, whose submits hand most jobs
/// straight to a waiting worker.
const DEFAULT_CLAIM_INTERVAL: Duration = Duration::from_millis(2);

/// The claim loop's pacing.
pub(super) struct Pacing {
    interval: Duration,
    /// When the claim that started the current wait was made (none: no wait).
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

    /// A claim round ended. After one that took one job, or found none though new work was
    /// announced (another worker took it first), the next waits; after one that took several,
    /// or in which a slot was or became full (it took all it could: waiting would not have made
    /// it bigger, only later), it does not; one that found nothing without an announcement (a
    /// poll, a job's end) changes nothing, so a job after a quiet spell is claimed at once; a
    /// round in which a claim failed ends any wait (the retry comes after the error backoff).
    pub(super) fn claimed(&mut self, round: &Round) {
        if self.interval.is_zero() {
            return;
        }
        match round.claimed {
            // A failed claim is tried again after the claim loop's own backoff, not later.
            _ if round.failed => self.last_single = None,
            Some(n) if n >= 2 || round.full => self.last_single = None,
            Some(1) => self.last_single = Some(Instant::now()),
            Some(_) if round.announced => self.last_single = Some(Instant::now()),
            _ => {}
        }
    }
}

/// What a claim round did.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// A claim failed (tried again after the backoff).
    pub failed: bool,
    /// A slot was or became full (claim again next round).
    pub full: bool,
    /// Jobs claimed in all; `None`: the store was not asked.
    pub claimed: Option<usize>,
    /// New work was announced since the last round (`Notice::Queued`).
    pub announced: bool,
}

impl Worker {
    /// Claims for every slot with room, when `must` or a job was QUEUED since the last round.
    pub(super) async fn claim_round(self: &Arc<Self>, must: bool) -> Round {
        let mut round = Round {
            announced: self.queued.swap(false, Ordering::AcqRel),
            ..Round::default()
        };
        if !(round.announced || must) {
            return round;
        }
        for slot in self.runners.iter() {
            let active = slot.active.load(Ordering::Acquire);
            let free = slot.concurrency.saturating_sub(active);
            if free == 0 {
                round.full = true;
                continue;
            }
            let asked = tokio::time::Instant::now();
            match self
                .store
                .claim(&slot.name, &self.id, free, self.cfg.lease_ttl)
                .await
            {
                Ok(jobs) => {
                    round.full |= jobs.len() >= free;
                    *round.claimed.get_or_insert(0) += jobs.len();
                    for job in jobs {
                        self.spawn_job(job, slot, asked);
                    }
                }
                Err(e) => {
                    round.failed = true;
                    warn_unless_refused!(e, runner = %slot.name, "claim failed");
                }
            }
        }
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(claimed: Option<usize>, full: bool, failed: bool, announced: bool) -> Round {
        Round {
            failed,
            full,
            claimed,
            announced,
        }
    }

    /// Which rounds start a wait before the next claim, and which end one.
    #[test]
    fn pacing_waits_after_single_claims_only() {
        let mut p = Pacing::new(Some(Duration::from_millis(5)), "redis");
        let waits = |p: &mut Pacing, r: Round| {
            p.last_single = None;
            p.claimed(&r);
            p.last_single.is_some()
        };
        assert!(waits(&mut p, round(Some(1), false, false, false)));
        assert!(waits(&mut p, round(Some(0), false, false, true)));
        assert!(!waits(&mut p, round(Some(2), false, false, true)));
        assert!(!waits(&mut p, round(Some(1), true, false, true)));
        assert!(!waits(&mut p, round(Some(0), false, false, false)));
        assert!(!waits(&mut p, round(None, false, false, false)));
        // A failed claim in the round (another slot took one): its retry is not held back.
        assert!(!waits(&mut p, round(Some(1), false, true, true)));
        p.claimed(&round(Some(1), false, false, false));
        p.claimed(&round(Some(0), false, true, true));
        assert!(p.last_single.is_none(), "a failed round ends the wait");
        // The embedded store's default: no pacing at all.
        let mut e = Pacing::new(None, "embedded");
        assert!(!waits(&mut e, round(Some(1), false, false, true)));
    }
}
